import itertools

import pytest
import torch

from rhn.data.tbptt import TBPTTStream, batchify


def test_batchify_cuts_the_stream_into_contiguous_columns() -> None:
    columns = batchify(torch.arange(23), 4)  # 3 tokens don't fill a row and are dropped
    assert columns.shape == (5, 4)
    assert columns[:, 1].tolist() == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="too short for 4 columns"):
        batchify(torch.arange(5), 4)


def test_windows_continue_each_column_and_targets_are_shifted() -> None:
    stream = TBPTTStream(batchify(torch.arange(40), 2), seq_len=6)
    assert len(stream) == 3  # 20 rows → 19 targets → 3 full windows of 6
    x0, y0 = stream.window(0)
    x1, _ = stream.window(1)
    assert x0[:, 0].tolist() == [0, 1, 2, 3, 4, 5] and y0[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert x1[0, 1].item() == 26  # column 1 starts at token 20
    targets = torch.cat([y for _, y in stream.all_windows()])
    assert targets[:, 0].tolist() == list(range(1, 20))  # every target exactly once
    with pytest.raises(IndexError):
        stream.window(3)


def test_ranks_own_contiguous_column_blocks() -> None:
    ids = torch.arange(64)
    whole = batchify(ids, 4)
    parts = [TBPTTStream.for_rank(ids, 4, 5, r, 2).columns for r in range(2)]
    assert torch.equal(torch.cat(parts, dim=1), whole)
    with pytest.raises(ValueError, match="must divide among 3 ranks"):
        TBPTTStream.for_rank(ids, 4, 5, 0, 3)


def _tile(stream: TBPTTStream, epoch: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every variable-length window of an epoch, checked to tile the stream: one after
    another they are the first len·T rows of the columns, no gap, no overlap, targets the
    inputs shifted by one token."""
    n, t = len(stream), stream.seq_len
    windows = [stream.variable_window(epoch, i, seed=seed) for i in range(n)]
    for x, y in windows:
        assert x.shape == y.shape and x.shape[0] >= 1 and x.shape[1] == stream.columns.shape[1]
        assert torch.equal(x[1:], y[:-1])  # shifted by one within the window
    for (_, y), (x_next, _) in itertools.pairwise(windows):
        assert torch.equal(y[-1], x_next[0])  # the next window starts where this one ends
    assert torch.equal(torch.cat([x for x, _ in windows]), stream.columns[: n * t])
    assert torch.equal(torch.cat([y for _, y in windows]), stream.columns[1 : n * t + 1])
    for bad in (-1, n):
        with pytest.raises(IndexError, match=f"window {bad} out of range for {n} windows"):
            stream.variable_window(epoch, bad, seed=seed)
    return windows


def test_variable_windows_follow_the_random_length_bptt_rule() -> None:
    # Merity et al.: a base of T (p = 0.95) or T/2, plus N(0, 5²), at least 2; here rescaled
    # so that the epoch's len(stream) windows cover exactly len(stream)·T rows.
    t, n = 35, 2000
    stream = TBPTTStream(batchify(torch.arange(2 * (n * t + 1)), 2), seq_len=t)
    assert len(stream) == n
    lengths = torch.tensor([x.shape[0] for x, _ in _tile(stream, 0, 7)], dtype=torch.float)
    assert lengths.sum() == n * t and lengths.min() >= 1
    # The mixture: σ = √(25 + 0.95·0.05·17.5²) ≈ 6.3; ~4.5% at most T/2 + 5 (mostly the T/2
    # base); ~90% within 2σ = 10 of the mean (the T base). Bands are ≥ 4 standard errors wide.
    assert 5.0 < lengths.std().item() < 8.0
    assert 0.02 < (lengths <= t / 2 + 5).float().mean().item() < 0.08
    assert (abs(lengths - t) <= 11).float().mean().item() > 0.8
    # Cut points move with the epoch and the seed; the same (epoch, seed) gives the same
    # windows, and every rank (its own block of columns) the same lengths.
    again = [x.shape[0] for x, _ in _tile(stream, 0, 7)]
    assert again == lengths.long().tolist()
    other_epoch = [x.shape[0] for x, _ in _tile(stream, 1, 7)]
    other_seed = [x.shape[0] for x, _ in _tile(stream, 0, 8)]
    assert other_epoch != again and other_seed != again
    ids = torch.arange(4 * (200 * t + 1))
    ranks = [TBPTTStream.for_rank(ids, 4, t, r, 2) for r in range(2)]
    per_rank = [[x.shape[0] for x, _ in _tile(s, 3, 0)] for s in ranks]
    assert per_rank[0] == per_rank[1]


@pytest.mark.parametrize("seq_len", [1, 2, 3])
def test_variable_windows_of_a_short_seq_len_stay_inside_the_stream(seq_len: int) -> None:
    # Rounding and the one-token minimum once pushed the last cuts past the stream's end
    # for seq_len 1 and 2: empty windows (inputs of shape (0, N)) at the end of an epoch.
    for tokens in (23, 50, 101):
        stream = TBPTTStream(batchify(torch.arange(2 * tokens), 2), seq_len=seq_len)
        for epoch in range(30):
            _tile(stream, epoch, 0)
