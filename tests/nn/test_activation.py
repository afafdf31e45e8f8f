import pytest
import torch

from rhn.nn.activation import ACTIVATIONS, get_activation


def test_every_named_activation_computes_its_function() -> None:
    x = torch.tensor([-2.0, 0.0, 3.0])
    expected = {
        "relu": [0.0, 0.0, 3.0],
        "tanh": [torch.tanh(torch.tensor(-2.0)).item(), 0.0, torch.tanh(torch.tensor(3.0)).item()],
        "sigmoid": [1 / (1 + torch.e**2), 0.5, 1 / (1 + torch.e**-3)],
        "identity": [-2.0, 0.0, 3.0],
        # gelu(x) = x·Φ(x): Φ(−2) = 0.02275, Φ(3) = 0.99865.
        "gelu": [-2.0 * 0.0227501, 0.0, 3.0 * 0.9986501],
    }
    assert set(expected) == set(ACTIVATIONS)
    for name, values in expected.items():
        torch.testing.assert_close(get_activation(name)(x), torch.tensor(values), atol=1e-5, rtol=0)


def test_unknown_activation_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"activation must be one of .*'relu'.*got 'swish'"):
        get_activation("swish")
