import math

import pytest
import torch

import rhn


def naive_conv_same(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross-correlation with zero "same" padding, loop by loop, for (C, H, W) input."""
    out_c, in_c, k, _ = w.shape
    lo = (k - 1) // 2
    _, height, width = x.shape
    padded = torch.zeros(in_c, height + k - 1, width + k - 1, dtype=x.dtype)
    padded[:, lo : lo + height, lo : lo + width] = x
    y = torch.empty(out_c, height, width, dtype=x.dtype)
    for o in range(out_c):
        for i in range(height):
            for j in range(width):
                y[o, i, j] = (padded[:, i : i + k, j : j + k] * w[o]).sum() + b[o]
    return y


@pytest.mark.parametrize("coupled", [True, False])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_conv2d_matches_naive_reference(kernel_size: int, coupled: bool) -> None:
    c = 3
    layer = rhn.HighwayConv2d(
        c, kernel_size, activation="tanh", coupled=coupled, dtype=torch.float64
    )
    x = torch.randn(c, 5, 6, dtype=torch.float64)
    pre = naive_conv_same(x, layer.weight, layer.bias)
    h, t = torch.tanh(pre[:c]), torch.sigmoid(pre[c : 2 * c])
    carry = 1 - t if coupled else torch.sigmoid(pre[2 * c :])
    torch.testing.assert_close(layer(x), h * t + x * carry, rtol=1e-12, atol=1e-12)


def test_conv1d_hand_computed_tiny_case() -> None:
    layer = rhn.HighwayConv1d(1, kernel_size=3, activation="identity")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]]]))
        layer.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    # H = x convolved with [1, 1, 1] (zero padded): [1+2, 1+2+3, 2+3] = [3, 6, 5]; T = ¾
    # y = ¾·H + ¼·x = [2.25 + 0.25, 4.5 + 0.5, 3.75 + 0.75]
    y = layer(torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(y, torch.tensor([[2.5, 5.0, 4.5]]))


@pytest.mark.parametrize(
    ("cls", "shape"),
    [
        (rhn.HighwayConv2d, (2, 4, 7, 9)),
        (rhn.HighwayConv2d, (4, 7, 9)),
        (rhn.HighwayConv1d, (2, 4, 11)),
        (rhn.HighwayConv1d, (4, 11)),
    ],
)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_shapes_are_kept_batched_and_unbatched(
    cls: type, shape: tuple[int, ...], kernel_size: int
) -> None:
    layer = cls(4, kernel_size)
    x = torch.randn(shape)
    y, t = layer(x, return_gates=True)
    assert y.shape == x.shape and t.shape == x.shape


def test_parameter_layout_and_initialisation() -> None:
    layer = rhn.HighwayConv2d(8, kernel_size=3, gate_bias=-2.5)
    assert layer.weight.shape == (16, 8, 3, 3)
    assert layer.bias.shape == (16,)
    assert torch.all(layer.bias[8:] == -2.5) and torch.all(layer.bias[:8] == 0)
    fan_in = 8 * 9
    assert layer.weight[:8].std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.15)
    assert rhn.HighwayConv1d(8, 5, coupled=False).weight.shape == (24, 8, 5)


def test_gate_weights_start_he_normal_as_the_authors_caffe_nets() -> None:
    torch.manual_seed(0)
    fan_in = 64 * 9
    default = rhn.HighwayConv2d(64, 3)
    assert default.weight[64:].abs().max() <= 1 / math.sqrt(fan_in)  # torch's uniform range
    caffe = rhn.HighwayConv2d(64, 3, gate_init="he_normal")
    gate_weights = caffe.weight[64:]
    assert gate_weights.mean().item() == pytest.approx(0.0, abs=3e-3)
    assert gate_weights.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    assert torch.all(caffe.bias[64:] == -2.0) and "gate_init='he_normal'" in repr(caffe)
    with pytest.raises(ValueError, match=r"gate_init must be one of \('uniform', 'he_normal'\)"):
        rhn.HighwayConv2d(4, gate_init="xavier")


def test_closed_gates_carry_the_input_exactly() -> None:
    layer = rhn.HighwayConv2d(3, gate_bias=-60.0)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(layer(x), x)


def test_bad_input_names_the_expected_layout() -> None:
    with pytest.raises(ValueError, match=r"expected input with 4 features in dimension -3"):
        rhn.HighwayConv2d(4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"expected a 4-D \(N, C, \.\.\.\) or 3-D unbatched"):
        rhn.HighwayConv2d(4)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="kernel_size must be an integer >= 1, got 0"):
        rhn.HighwayConv1d(4, kernel_size=0)
    with pytest.raises(ValueError, match=r"kernel_size must be odd .* got 4"):
        rhn.HighwayConv2d(4, kernel_size=4)


@pytest.mark.parametrize(
    "cls, shape", [(rhn.HighwayConv1d, (2, 3, 9)), (rhn.HighwayConv2d, (2, 3, 5, 5))]
)
def test_input_of_another_dtype_is_a_clear_error(cls, shape) -> None:
    layer = cls(3)
    with pytest.raises(TypeError, match=r"input has dtype torch\.float64 but the parameters"):
        layer(torch.randn(shape, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor, got tuple"):
        layer(shape)
