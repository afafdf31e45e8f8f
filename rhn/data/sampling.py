"""Shuffled epochs over an in-memory data set, sharded across data-parallel ranks."""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler


def epoch_batch_indices(
    num_samples: int,
    batch_size: int,
    epoch: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
) -> torch.Tensor:
    """This rank's sample indices for ``epoch``, shaped ``(batches, batch_size)``.

    torch's ``DistributedSampler`` gives every rank a disjoint share of one seeded
    permutation per epoch; a pure function of its arguments, so any batch of any epoch can
    be fetched again after a resume. The last incomplete batch is dropped.
    """
    sampler = DistributedSampler(
        range(num_samples),
        num_replicas=world_size,
        rank=rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    indices = torch.tensor(list(sampler))
    batches = len(indices) // batch_size
    return indices[: batches * batch_size].view(batches, batch_size)
