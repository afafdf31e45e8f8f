"""A CIFAR binary file read by hand with numpy, as an independent expectation for the
loaders: each record is the label byte(s), then 3 × 32 × 32 pixels channel-first."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def cifar_records(path: Path, label_bytes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The label bytes ``(N, label_bytes)`` and the pixels ``(N, 3, 32, 32)``, uint8."""
    records = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, label_bytes + 3072)
    return records[:, :label_bytes], records[:, label_bytes:].reshape(-1, 3, 32, 32)
