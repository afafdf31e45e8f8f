"""Whether this process can run Triton kernels: on a GPU, or on the CPU in the interpreter
that ``tests/conftest.py`` turns on. Triton's interpreter writes a kernel's results back to
CPU tensors from Triton 3.2 on; the 3.0 and 3.1 that torch 2.4 and 2.5 install leave them
as they were, so the kernels' own tests cannot run there (the library's first-use check
against the torch ops catches the same and uses the torch ops)."""

from __future__ import annotations

import pytest
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the dev extra installs it on Linux x86_64 only
    triton = None


def _kernels_run() -> bool:
    if triton is None:
        return False

    @triton.jit
    def write_one(x_ptr):
        tl.store(x_ptr, 1.0)

    x = torch.zeros(1, device="cuda" if torch.cuda.is_available() else "cpu")
    write_one[(1,)](x)
    return x.item() == 1.0


requires_triton_kernels = pytest.mark.skipif(
    not _kernels_run(),
    reason="Triton kernels don't run here (not installed, or an interpreter older than "
    "Triton 3.2, which leaves CPU tensors unwritten)",
)
