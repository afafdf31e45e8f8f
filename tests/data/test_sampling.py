import torch

from rhn.data.sampling import epoch_batch_indices


def test_ranks_share_one_permutation_disjointly_and_epochs_differ() -> None:
    shards = [epoch_batch_indices(100, 8, 3, seed=5, rank=r, world_size=2) for r in range(2)]
    assert all(s.shape == (6, 8) for s in shards)  # 50 per rank → 6 full batches
    flat = torch.cat([s.flatten() for s in shards])
    assert len(set(flat.tolist())) == flat.numel()  # disjoint
    assert torch.equal(shards[0], epoch_batch_indices(100, 8, 3, seed=5, rank=0, world_size=2))
    assert not torch.equal(shards[0], epoch_batch_indices(100, 8, 4, seed=5, rank=0, world_size=2))
    whole = epoch_batch_indices(64, 8, 0, shuffle=False)
    assert torch.equal(whole.flatten(), torch.arange(64))
