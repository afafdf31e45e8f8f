"""Seeding, deterministic mode, and RNG state capture for exact resume."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

# The seeds a user may give: torch's signed 64-bit range. torch.manual_seed takes
# -2**63 .. 2**64 - 1, but the runs derive more seeds by adding a count (a study's trial
# i: seed + i; an MC evaluation's pass i), which must stay in torch's range too.
MIN_SEED = -(2**63)
MAX_SEED = 2**63 - 1
SEEDS = f"an integer in -2**63 .. 2**63 - 1 ({MIN_SEED} .. {MAX_SEED})"


def is_seed(value: object) -> bool:
    """Whether ``value`` is a seed a run may be given (see :data:`MAX_SEED`)."""
    return isinstance(value, int) and not isinstance(value, bool) and MIN_SEED <= value <= MAX_SEED


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device).

    ``deterministic`` also makes torch refuse nondeterministic kernels, so a run repeats
    bit for bit on the same machine (at some cost in speed on GPU).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and primitives (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
