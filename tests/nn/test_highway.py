import math

import pytest
import torch
from torch import nn

import rhn
from rhn.nn.activation import get_activation
from rhn.nn.highway import GatedHighwayBase


def naive_highway_layer(layer: rhn.HighwayLayer, x: torch.Tensor) -> torch.Tensor:
    """y = H·T + x·C written out row block by row block, one example at a time."""
    f = layer.features
    w, b = layer.weight, layer.bias
    act = get_activation(layer.activation)
    rows = []
    for xi in x.reshape(-1, f):
        h = act(w[:f] @ xi + b[:f])
        t = torch.sigmoid(w[f : 2 * f] @ xi + b[f : 2 * f])
        c = 1 - t if layer.coupled else torch.sigmoid(w[2 * f :] @ xi + b[2 * f :])
        rows.append(h * t + xi * c)
    return torch.stack(rows).reshape(x.shape)


def test_hand_computed_tiny_case_coupled() -> None:
    layer = rhn.HighwayLayer(2, activation="relu")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
        layer.bias.copy_(torch.tensor([0.0, 0.0, 0.0, math.log(3.0)]))
    # H = relu([1, −2]) = [1, 0];  T = σ([0, ln 3]) = [1/2, 3/4]
    # y = H·T + x·(1 − T) = [1·½ + 1·½, 0·¾ − 2·¼] = [1, −0.5]
    y = layer(torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(y, torch.tensor([1.0, -0.5]))


def test_hand_computed_tiny_case_free_carry() -> None:
    layer = rhn.HighwayLayer(2, activation="identity", coupled=False)
    assert layer.weight.shape == (6, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:2] = torch.eye(2) * 2.0
        layer.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, math.log(3.0), 0.0]))
    # H = 2x = [2, −4];  T = [½, ½];  C = σ([ln 3, 0]) = [¾, ½]
    # y = H·T + x·C = [1 + ¾, −2 − 1] = [1.75, −3]
    y = layer(torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(y, torch.tensor([1.75, -3.0]))


@pytest.mark.parametrize("coupled", [True, False])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "identity"])
def test_matches_naive_reference(activation: str, coupled: bool) -> None:
    net = rhn.Highway(6, num_layers=3, activation=activation, coupled=coupled, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64)
    expected = x
    for layer in net.layers:
        expected = naive_highway_layer(layer, expected)
    torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)


def test_parameter_layout_and_initialisation() -> None:
    f = 64
    net = rhn.Highway(f, num_layers=2, activation="relu", gate_bias=-3.0)
    assert len(net) == 2
    for layer in net.layers:
        assert layer.weight.shape == (2 * f, f)
        assert layer.bias.shape == (2 * f,)
        assert torch.all(layer.bias[:f] == 0)
        assert torch.all(layer.bias[f:] == -3.0)
        # He normal for H: std √2/√F for relu (within sampling error of 4096 draws).
        assert layer.weight[:f].std().item() == pytest.approx(math.sqrt(2 / f), rel=0.05)
        assert layer.weight[f:].abs().max().item() <= 1 / math.sqrt(f)
    free = rhn.HighwayLayer(f, gate_bias=-2.0, coupled=False)
    assert free.weight.shape == (3 * f, f)
    assert torch.all(free.bias[2 * f :] == 2.0)


def test_init_range_starts_every_parameter_uniform_and_offsets_the_gate_biases() -> None:
    """Kim et al.'s code: params:uniform(−0.05, 0.05) over everything, the gate's −2 a
    constant added to a learned bias that itself starts in U(−0.05, 0.05)."""
    f, r = 64, 0.05
    layer = rhn.HighwayLayer(f, gate_bias=-2.0, init_range=r)
    rows = {"weight": layer.weight, "H bias": layer.bias[:f], "T bias": layer.bias[f:] + 2.0}
    for name, values in rows.items():
        assert values.abs().max().item() <= r, name
        assert values.abs().max().item() > 0.8 * r, name  # drawn over the whole range
    assert layer.weight.mean().abs().item() < 0.002 and layer.weight.std().item() == (
        pytest.approx(r / math.sqrt(3), rel=0.05)  # U(−r, r) has std r/√3
    )
    free = rhn.HighwayLayer(f, gate_bias=-2.0, coupled=False, init_range=r)
    assert (free.bias[2 * f :] - 2.0).abs().max().item() <= r
    layer.reset_parameters()  # the same rule again, not the default one
    assert layer.weight.abs().max().item() <= r
    with pytest.raises(ValueError, match="can't be combined with gate_init"):
        GatedHighwayBase(
            4, (), activation="relu", gate_bias=-2.0, coupled=True, gate_init="he_normal",
            init_range=r, device=None, dtype=None,
        )  # fmt: skip


def test_reset_parameters_restores_the_initial_state() -> None:
    layer = rhn.HighwayLayer(5, gate_bias=-1.5)
    with torch.no_grad():
        layer.bias.fill_(7.0)
    layer.reset_parameters()
    assert torch.all(layer.bias[5:] == -1.5)
    assert torch.all(layer.bias[:5] == 0)


def test_gate_bias_to_minus_infinity_carries_x_and_to_plus_infinity_gives_h() -> None:
    x = torch.randn(3, 5, 8)
    carry = rhn.Highway(8, num_layers=4, gate_bias=-60.0)
    torch.testing.assert_close(carry(x), x)
    transform = rhn.HighwayLayer(8, activation="tanh", gate_bias=60.0)
    h = torch.tanh(x @ transform.weight[:8].T + transform.bias[:8])
    torch.testing.assert_close(transform(x), h)


@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 3, 7), (2, 1, 3, 7)])
def test_any_leading_dims(shape: tuple[int, ...]) -> None:
    net = rhn.Highway(7, num_layers=2)
    x = torch.randn(shape)
    y, gates = net(x, return_gates=True)
    assert y.shape == x.shape
    assert [g.shape for g in gates] == [x.shape, x.shape]
    assert all(((g > 0) & (g < 1)).all() for g in gates)
    # The leading dims are independent examples.
    torch.testing.assert_close(net(x.reshape(-1, 7)).reshape(shape), y)


def test_gradient_reaches_layer_one_of_a_100_layer_highway_but_not_a_plain_tanh_stack() -> None:
    # The papers' invariant: at initialisation the weight gradient of the first layer of a
    # 100-layer highway net is of the same order as the last layer's, while a plain tanh
    # net (torch's default init) loses it by many orders of magnitude.
    width, depth = 50, 100
    x = torch.randn(64, width)

    highway = rhn.Highway(width, num_layers=depth, activation="tanh")
    highway(x).pow(2).sum().backward()
    highway_ratio = highway[0].weight.grad.norm() / highway[depth - 1].weight.grad.norm()

    plain = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.Tanh())])
    plain(x).pow(2).sum().backward()
    plain_ratio = plain[0].weight.grad.norm() / plain[2 * (depth - 1)].weight.grad.norm()

    assert highway_ratio > 0.1, highway_ratio
    assert plain_ratio < 1e-10, plain_ratio


def test_bad_arguments_are_refused_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="activation must be one of"):
        rhn.Highway(4, activation="softplus")
    with pytest.raises(ValueError, match=r"activation must be one of .*, got \['relu'\]"):
        rhn.Highway(4, activation=["relu"])  # was "unhashable type: 'list'"
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1, got 0"):
        rhn.Highway(4, num_layers=0)
    with pytest.raises(ValueError, match="features must be an integer >= 1, got -3"):
        rhn.Highway(-3)
    with pytest.raises(ValueError, match="gate_bias must be a finite number"):
        rhn.Highway(4, gate_bias=float("nan"))
    with pytest.raises(ValueError, match=r"expected input with 4 features .* got shape \(2, 5\)"):
        rhn.Highway(4)(torch.randn(2, 5))


def test_bf16_autocast_runs_and_stays_close_to_float32() -> None:
    net = rhn.Highway(16, num_layers=3)
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    y.float().sum().backward()
    torch.testing.assert_close(y.float(), net(x), atol=0.05, rtol=0.05)


def test_input_of_another_dtype_or_kind_is_a_clear_error() -> None:
    layer = rhn.Highway(4, num_layers=2)
    with pytest.raises(TypeError, match=r"input has dtype torch\.float64 but the parameters"):
        layer(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"input must be a floating-point tensor, got dtype"):
        layer(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor, got list"):
        layer([[1.0, 2.0, 3.0, 4.0]])


def test_coupled_that_is_not_a_bool_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^coupled must be True or False, got 'False'$"):
        rhn.Highway(4, 2, coupled="False")


def test_reset_parameters_reaches_a_parametrized_weight() -> None:
    from torch.nn.utils.parametrizations import weight_norm

    layer = weight_norm(rhn.HighwayLayer(4, "relu", -3.0), "bias", dim=None)
    with torch.no_grad():
        layer.parametrizations.bias.original1.fill_(5.0)
    layer.reset_parameters()
    assert torch.allclose(layer.bias[4:8], torch.full((4,), -3.0))  # the gate's bias again


def test_every_gated_module_takes_return_gates() -> None:
    """HighwayLayer and the conv layers took `return_gate`, the stack and the RHN
    `return_gates`: one keyword of the public API was spelled two ways."""
    torch.manual_seed(0)
    layers = [
        (rhn.HighwayLayer(4), torch.randn(3, 4)),
        (rhn.HighwayConv1d(4), torch.randn(3, 4, 9)),
        (rhn.HighwayConv2d(4), torch.randn(3, 4, 5, 5)),
    ]
    for layer, x in layers:
        y, t = layer(x, return_gates=True)
        torch.testing.assert_close(y, layer(x))
        assert t.shape == x.shape and bool(((t > 0) & (t < 1)).all())
    stack, x = rhn.Highway(4, 2), torch.randn(3, 4)
    y, gates = stack(x, return_gates=True)
    torch.testing.assert_close(y, stack(x))
    assert [g.shape for g in gates] == [x.shape, x.shape]
    recurrent, seq = rhn.RHN(4, 4, depth=2), torch.randn(5, 3, 4)
    output, h, gates = recurrent(seq, return_gates=True)
    torch.testing.assert_close((output, h), recurrent(seq))
    assert gates.shape == (1, 5, 3, 2, 4)  # (layers, T, N, depth, H): the output's layout
