"""Truncated back-propagation through time: a token stream cut into columns and windows.

    stream (L,) → columns (L // N, N): column j is the j-th contiguous slice of the stream
    window i: inputs = columns[i·T : i·T + T], targets = the same shifted by one token

The state carried from window i to window i + 1 continues each column's text. Under data
parallelism each rank owns a contiguous block of columns (and the state of those columns).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from einops import rearrange


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(L,)`` → ``(L // N, N)``, dropping the ``L mod N`` tokens that don't fill a row."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    length = ids.numel() // batch_size
    if length < 2:
        raise ValueError(f"a stream of {ids.numel()} tokens is too short for {batch_size} columns")
    return rearrange(ids[: length * batch_size], "(n t) -> t n", n=batch_size)


class TBPTTStream:
    """Windows of ``seq_len`` steps over the columns of a batchified stream."""

    def __init__(self, columns: torch.Tensor, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.columns = columns
        self.seq_len = seq_len
        self._bounds_key: tuple[int, int] | None = None
        self._bounds: list[int] = []

    @classmethod
    def for_rank(
        cls, ids: torch.Tensor, batch_size: int, seq_len: int, rank: int, world_size: int
    ) -> TBPTTStream:
        """This rank's contiguous share of ``batch_size`` (global) columns."""
        if batch_size % world_size:
            raise ValueError(
                f"the global batch size {batch_size} must divide among {world_size} ranks"
            )
        columns = batchify(ids, batch_size).chunk(world_size, dim=1)[rank]
        return cls(columns, seq_len)

    @property
    def num_targets(self) -> int:
        """Every token a pass over the columns predicts (each column's first is context)."""
        return (self.columns.shape[0] - 1) * self.columns.shape[1]

    def __len__(self) -> int:
        """Full windows (the last partial window is dropped so every step has T steps)."""
        return (self.columns.shape[0] - 1) // self.seq_len

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)``, each ``(T, N)``."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = index * self.seq_len
        chunk = self.columns[start : start + self.seq_len + 1]
        return chunk[:-1], chunk[1:]

    def variable_window(
        self, epoch: int, index: int, *, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Window ``index`` of ``epoch`` with a random length (random-length BPTT).

        As Merity et al. (AWD-LSTM): a base length of T (probability 0.95) or T/2, then a
        length drawn around it (σ = 5, at least 2). The epoch's lengths are rescaled to
        cover the stream in exactly ``len(self)`` windows, so epochs keep their size while
        the cut points move from epoch to epoch. Every rank draws the same lengths.
        """
        bounds = self._variable_bounds(epoch, seed)
        if not 0 <= index < len(bounds) - 1:
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        chunk = self.columns[bounds[index] : bounds[index + 1] + 1]
        return chunk[:-1], chunk[1:]

    def _variable_bounds(self, epoch: int, seed: int) -> list[int]:
        if self._bounds_key != (epoch, seed):
            # Reduced to torch's seed range (a large run seed overflowed it); the same
            # generator seed as before for every seed that was in range.
            g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)
            n, t = len(self), self.seq_len
            base = torch.where(torch.rand(n, generator=g) < 0.95, float(t), t / 2)
            lengths = (base + 5.0 * torch.randn(n, generator=g)).clamp(min=2.0)
            ends = torch.cumsum(lengths, 0) * (n * t) / lengths.sum()
            bounds = [0, *ends.round().long().tolist()]
            bounds[-1] = n * t  # the stream's end exactly, whatever the float sum rounds to
            # Keep every window non-empty after rounding, and inside the stream: cut i lies
            # in [i, n·t − (n − i)], room for a token in each window before and after it.
            # (A short seq_len, 1 or 2, pushed later cuts past the end: empty windows.)
            for i in range(1, len(bounds)):
                bounds[i] = max(min(bounds[i], n * t - (n - i)), bounds[i - 1] + 1)
            self._bounds_key, self._bounds = (epoch, seed), bounds
        return self._bounds

    def all_windows(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every window, the last one shorter if needed: each target token exactly once."""
        for start in range(0, self.columns.shape[0] - 1, self.seq_len):
            chunk = self.columns[start : start + self.seq_len + 1]
            yield chunk[:-1], chunk[1:]
