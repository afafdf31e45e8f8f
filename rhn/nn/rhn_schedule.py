"""Which rows of the batch an RHN recurrence updates at each time step, and in which order.

Every backend runs a layer over *flat* step-major data ``(P, ·)``: the rows of time step 0,
then those of step 1, and so on — the layout of ``PackedSequence.data``. A padded batch
``(T, N, ·)`` is the special case of ``T`` steps of ``N`` rows each (a free reshape).

Packed sequences are sorted longest first, so at step t the sequences still running are the
first ``batch_sizes[t]`` rows of the batch (cuDNN's convention). A recurrence therefore updates
the row prefix ``[:batch_sizes[t]]`` of its ``(N, H)`` state and carries the other rows
unchanged:

    forward  (t = 0 … T−1): a row stops being updated after its own last step, so the state
             left in it is that sequence's final state;
    reverse  (t = T−1 … 0): a row starts being updated at its own last step, from the initial
             state it kept until then — each sequence's reverse pass starts at its own end,
             never at padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepSchedule:
    """The time steps of one recurrence call.

    Args:
        batch_sizes: rows active at each time step, non-increasing, all ≥ 1 (the
            ``batch_sizes`` of a ``PackedSequence``; ``(N,) * T`` for a padded batch).
        reverse: run the steps from last to first (the reverse direction of a
            bidirectional layer).
    """

    batch_sizes: tuple[int, ...]
    reverse: bool = False

    @classmethod
    def dense(cls, steps: int, batch: int, *, reverse: bool = False) -> StepSchedule:
        """``steps`` time steps of the whole batch of ``batch`` rows."""
        return cls((batch,) * steps, reverse)

    @classmethod
    def of_padded(cls, padded: torch.Tensor) -> tuple[StepSchedule, torch.Tensor]:
        """A padded ``(T, N, F)`` batch run forward → its schedule and flat ``(T·N, F)``
        view."""
        steps, batch = padded.shape[:2]
        return cls.dense(steps, batch), padded.reshape(steps * batch, -1)

    @property
    def steps(self) -> int:
        return len(self.batch_sizes)

    @property
    def batch(self) -> int:
        return self.batch_sizes[0]

    @property
    def rows(self) -> int:
        """P, the number of rows of flat step-major data."""
        return sum(self.batch_sizes)

    @property
    def is_dense(self) -> bool:
        """Every step updates the whole batch (no row is ever carried)."""
        return self.batch_sizes[-1] == self.batch_sizes[0]

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Flat ``(P, ·)`` data → one ``(batch_sizes[t], ·)`` view per step, in run order."""
        steps = list(flat.split(self.batch_sizes))
        return steps[::-1] if self.reverse else steps

    def join(self, per_step: list[torch.Tensor]) -> torch.Tensor:
        """The inverse of :meth:`split`: per-step tensors in run order → flat ``(P, ·)``
        data in time order (a new tensor)."""
        return torch.cat(per_step[::-1] if self.reverse else per_step)

    def join_active(self, per_step: list[torch.Tensor]) -> torch.Tensor:
        """Whole-batch ``(N, ·)`` tensors, one per step in run order → flat ``(P, ·)`` data of
        each step's active rows, in time order (a new tensor)."""
        sizes = self.batch_sizes[::-1] if self.reverse else self.batch_sizes
        return self.join([x[:n] for x, n in zip(per_step, sizes, strict=True)])

    def per_row(self, per_sequence: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` values of each sequence → ``(P, F)``, one row per row of flat data."""
        if self.is_dense:
            return per_sequence.repeat(self.steps, 1)
        sequence = torch.cat([torch.arange(n) for n in self.batch_sizes])
        return per_sequence.index_select(0, sequence.to(per_sequence.device))
