"""The LSTM baseline: nn.LSTM, started uniform in ±init_range."""

import pytest
import torch
from torch import nn

from rhn.nn.lstm import UniformInitLSTM


def test_every_parameter_starts_in_the_range_and_the_lstm_is_unchanged() -> None:
    torch.manual_seed(0)
    lstm = UniformInitLSTM(6, 32, num_layers=2, dropout=0.1, init_range=0.05)
    for name, p in lstm.named_parameters():
        assert 0.049 < p.abs().max().item() <= 0.05, name
    # Apart from the start it is nn.LSTM: same parameters, same outputs for the same weights.
    plain = nn.LSTM(6, 32, num_layers=2, dropout=0.1)
    plain.load_state_dict(lstm.state_dict())
    x = torch.randn(5, 3, 6)
    torch.testing.assert_close(lstm.eval()(x)[0], plain.eval()(x)[0], rtol=0, atol=0)


def test_no_range_keeps_torchs_default_and_a_bad_range_is_refused() -> None:
    torch.manual_seed(0)
    default = UniformInitLSTM(4, 16)
    torch.manual_seed(0)
    plain = nn.LSTM(4, 16)
    assert all(
        torch.equal(a, b) for a, b in zip(default.parameters(), plain.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="init_range must be None or a number > 0, got -1"):
        UniformInitLSTM(4, 16, init_range=-1)
