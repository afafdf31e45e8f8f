"""Shared fixtures: every test starts from a fixed seed."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Tokenised-corpus and download caches of the test session stay out of the user's home;
# subprocesses started by tests inherit this.
if "RHN_CACHE_DIR" not in os.environ:
    os.environ["RHN_CACHE_DIR"] = tempfile.mkdtemp(prefix="rhn-test-cache-")
    atexit.register(shutil.rmtree, os.environ["RHN_CACHE_DIR"], ignore_errors=True)
# Hugging Face datasets: its cache in the session's temp folder too, and no network (no
# machine here reaches the hub; read when datasets is first imported).
os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(os.environ["RHN_CACHE_DIR"], "hf"))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Without a GPU, Triton kernels run in its interpreter (read when kernels are defined).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
