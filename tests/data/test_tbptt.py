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
