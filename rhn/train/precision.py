"""A run's arithmetic: ``train.precision`` as torch's autocast and TF32 flags.

fp32   float32 throughout, IEEE: cuBLAS matmuls and cuDNN convolutions and recurrences
       alike (torch's defaults differ: cuDNN's TF32 on, cuBLAS's off, so an ``nn.LSTM``
       baseline would run on TF32 tensor cores beside an RHN's float32 matmuls)
tf32   float32 tensors, TensorFloat-32 tensor cores (a 10-bit mantissa) for all three
       (Ampere and later GPUs; no effect on a CPU)
bf16   autocast to bfloat16 where torch casts; what stays float32 is IEEE, as in fp32
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def float32_arithmetic(precision: str) -> Iterator[None]:
    """While the block runs, float32 matmuls, convolutions and cuDNN recurrences use TF32
    where ``precision`` is ``tf32`` and IEEE float32 otherwise. The flags are the process's;
    they are put back as they were when the block ends."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    # Each through the one API that reads it back as it was set: a caller's "medium" matmul
    # precision survives the block (its allow_tf32 flag could not say it).
    cudnn = torch.backends.cudnn
    saved = (torch.get_float32_matmul_precision(), cudnn.allow_tf32)
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        cudnn.allow_tf32 = saved[1]


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """Autocast to bfloat16 for ``bf16``; nothing for the float32 precisions."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
