"""The vision nets: parameter counts against the published sizes, the block equations
against a naive reference, and the analysis trace."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rhn.models.conv_highway_net import ConvHighwayNet
from rhn.models.highway_mlp import HighwayMLP, default_gate_bias
from rhn.models.image_classifier import ImageClassifierConfig, build_image_classifier


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "width", "shape", "classes", "published", "tolerance"),
    [
        ("mnist_conv", 16, (1, 28, 28), 10, 39_000, 0.01),  # Table 1: 39K
        ("mnist_conv", 32, (1, 28, 28), 10, 151_000, 0.01),  # 151K
        ("highway_b", None, (3, 32, 32), 10, 2_300_000, 0.02),  # 2.3M
        # A and C are reconstructions from depth and size (the paper gives no layout).
        ("highway_a", None, (3, 32, 32), 10, 236_000, 0.05),
        ("highway_c", None, (3, 32, 32), 10, 1_250_000, 0.05),
    ],
)
def test_conv_parameter_counts_match_the_paper(
    arch: str, width: int | None, shape: tuple, classes: int, published: int, tolerance: float
) -> None:
    model = ConvHighwayNet(arch, shape, classes, width=width)
    assert abs(count(model) - published) / published < tolerance, count(model)


def test_mnist_conv_count_by_hand() -> None:
    # conv5×5 1→32 (832) + 8 highway 3×3 (2·32·32·9 + 64 each) + linear 3·3·32 → 10 (2,890):
    # the 151,690 the authors' Caffe log reports.
    assert count(ConvHighwayNet("mnist_conv", (1, 28, 28), 10, width=32)) == 832 + 8 * 18496 + 2890
    assert 832 + 8 * 18496 + 2890 == 151_690


@pytest.mark.parametrize("depth", [10, 20, 50, 100])
def test_depth_study_blocks_have_equal_parameters(depth: int) -> None:
    # 71-unit plain and 50-unit highway blocks: 5,112 vs 5,100 parameters each.
    plain = HighwayMLP(784, 10, depth=depth, block="plain")
    highway = HighwayMLP(784, 10, depth=depth, block="highway")
    assert len(plain.blocks) == len(highway.blocks) == depth - 1
    assert count(plain.blocks[0]) == 71 * 71 + 71 and count(highway.blocks[0]) == 2 * 50 * 50 + 100


def test_mlp_matches_a_naive_loop() -> None:
    torch.manual_seed(0)
    model = HighwayMLP(12, 3, depth=4, width=5, activation="tanh", gate_bias=-1.5).double()
    x = torch.randn(7, 12, dtype=torch.float64)
    h = torch.tanh(x @ model.first.weight.T + model.first.bias)
    for layer in model.blocks:
        w, b = layer.weight, layer.bias
        hh = torch.tanh(h @ w[:5].T + b[:5])
        t = torch.sigmoid(h @ w[5:].T + b[5:])
        h = hh * t + h * (1 - t)
    expected = h @ model.classifier.weight.T + model.classifier.bias
    assert torch.allclose(model(x), expected, atol=1e-12)
    assert torch.allclose(model.blocks[2].bias[5:], torch.full((5,), -1.5, dtype=torch.float64))


def test_default_gate_bias_by_hand() -> None:
    # 9 blocks: f = 0.25^(1/9) = 0.85724, T = (1 − √(2f − 1)) / 2 = 0.077358, logit = −2.479
    assert default_gate_bias(9) == pytest.approx(-2.479, abs=1e-3)
    t = 1 / (1 + math.exp(-default_gate_bias(49)))
    assert (t**2 + (1 - t) ** 2) ** 49 == pytest.approx(0.25, rel=1e-9)
    assert default_gate_bias(1) == -1.0 and default_gate_bias(10**6) == -10.0
    model = HighwayMLP(784, 10, depth=50)
    assert model.blocks[0].bias[50:].mean().item() == pytest.approx(default_gate_bias(49))


def test_plain_conv_block_is_relu_conv_same_shape() -> None:
    torch.manual_seed(0)
    model = ConvHighwayNet("highway_a", (3, 32, 32), 10, block="plain", dropout=False).eval()
    x = torch.randn(2, 3, 32, 32)
    _, trace = model(x, trace=True)
    assert trace.gates == [] and len(trace.outputs) == 6
    block = model.layers[2]  # drop, conv 16, first plain block
    inner = torch.relu(model.layers[1](x))
    assert torch.allclose(block(inner), torch.relu(block.conv(inner)))
    assert trace.outputs[0].shape == (2, 16, 32, 32)


def test_a_plain_blocks_nonlinearity_is_the_nets_activation() -> None:
    # the docstring's "H's and the plain layers' nonlinearity": tanh, not ReLU, under tanh
    torch.manual_seed(0)
    net = ConvHighwayNet("highway_a", (3, 32, 32), 10, block="plain", activation="tanh")
    x = torch.randn(2, 16, 32, 32)
    block = net.layers[2]
    out = block(x)
    assert torch.allclose(out, torch.tanh(block.conv(x))) and out.min() < 0


def test_trace_gates_are_the_highway_layers_gates() -> None:
    torch.manual_seed(0)
    model = ConvHighwayNet("mnist_conv", (1, 28, 28), 10, width=4, dropout=False).eval()
    logits, trace = model(torch.randn(3, 1, 28, 28), trace=True)
    assert logits.shape == (3, 10)
    layers = model.highway_layers()
    assert len(layers) == len(trace.gates) == len(trace.outputs) == 8
    # spatial sizes 24, 12, 6 after the 5×5 conv and the ceil-mode pools (Caffe's rounding)
    assert [g.shape[-1] for g in trace.gates] == [24, 24, 12, 12, 12, 6, 6, 6]
    assert all(((g > 0) & (g < 1)).all() for g in trace.gates)
    # Each gate and output recomputed from the layer's input by the highway rule, with T's
    # filters the weight's rows [C:2C] and H = relu (the net's activation).
    inputs: list[torch.Tensor] = []
    for layer in layers:
        layer.register_forward_hook(lambda mod, args, out: inputs.append(args[0]))
    _, trace = model.double()(torch.randn(3, 1, 28, 28, dtype=torch.float64), trace=True)
    for layer, x_in, t, y in zip(layers, inputs, trace.gates, trace.outputs, strict=True):
        c = x_in.shape[1]
        pre = F.conv2d(x_in, layer.weight, layer.bias, padding=layer.kernel_size // 2)
        gate = torch.sigmoid(pre[:, c : 2 * c])
        torch.testing.assert_close(t, gate, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(y, F.relu(pre[:, :c]) * gate + x_in * (1 - gate))


@pytest.mark.parametrize("width", [0, -3, 2.5, True])
def test_a_highway_mlp_width_that_is_no_size_is_refused(width: object) -> None:
    # 0 was read as "unset": a 50-unit net, unasked.
    with pytest.raises(ValueError, match=rf"width must be an integer >= 1, got {width!r}"):
        HighwayMLP(4, 2, width=width)  # type: ignore[arg-type]
    assert HighwayMLP(4, 2, width=None).first.out_features == 50  # None is the default


def test_images_of_another_shape_are_refused_naming_the_expected_one() -> None:
    # They failed inside the classifier's matmul or the first convolution.
    conv = ConvHighwayNet("mnist_conv", (1, 28, 28), 10, width=4)
    for shape in [(2, 1, 20, 20), (2, 3, 28, 28), (1, 28, 28)]:
        with pytest.raises(ValueError) as caught:
            conv(torch.zeros(shape))
        assert str(caught.value) == (
            f"ConvHighwayNet (mnist_conv) expects images (N, C, H, W) with C = 1, H, W = 28, 28; "
            f"got shape {shape}"
        )
    gap = ConvHighwayNet("highway_a", (3, 32, 32), 10)  # global average pooling: any H, W
    assert gap(torch.zeros(2, 3, 24, 24)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"with C = 3, any H, W; got shape \(2, 1, 32, 32\)"):
        gap(torch.zeros(2, 1, 32, 32))
    with pytest.raises(
        ValueError, match=r"image_shape \(1, 4, 4\) is too small for arch 'mnist_conv'"
    ):
        ConvHighwayNet("mnist_conv", (1, 4, 4), 10, width=4)
    mlp = HighwayMLP(784, 10, depth=3)
    assert mlp(torch.zeros(0, 1, 28, 28)).shape == (0, 10)  # an empty batch is fine
    with pytest.raises(ValueError, match=r"784 values each, got shape \(2, 1, 20, 20\)"):
        mlp(torch.zeros(2, 1, 20, 20))


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"model\.depth"):
        ImageClassifierConfig(depth=1)
    with pytest.raises(ValueError, match=r"model\.width applies"):
        ImageClassifierConfig(arch="highway_b", width=8)
    # The conv nets have their published layers: a depth was dropped unseen (the same net).
    for arch in ("mnist_conv", "highway_a"):
        with pytest.raises(ValueError, match=rf"model\.depth applies to arch 'mlp' only; '{arch}'"):
            ImageClassifierConfig(arch=arch, depth=50)
    with pytest.raises(ValueError, match="activation"):
        ImageClassifierConfig(activation="swish")
    net = build_image_classifier(ImageClassifierConfig(depth=3), (1, 28, 28), 10)
    assert isinstance(net, HighwayMLP) and net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_channels_last_is_the_same_net_in_nhwc_memory_order() -> None:
    torch.manual_seed(0)
    nchw = ConvHighwayNet("mnist_conv", (1, 28, 28), 10, width=8, dropout=False)
    nhwc = ConvHighwayNet("mnist_conv", (1, 28, 28), 10, width=8, dropout=False, channels_last=True)
    nhwc.load_state_dict(nchw.state_dict())
    conv = nhwc.layers[2]  # a highway convolution, 8 → 16 channels
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(nhwc(x), nchw(x), rtol=1e-5, atol=1e-5)
    nhwc(x).sum().backward()
    nchw(x).sum().backward()
    torch.testing.assert_close(conv.weight.grad, nchw.layers[2].weight.grad, rtol=1e-4, atol=1e-5)


def test_caffe_fillers_and_decay_multiplier() -> None:
    torch.manual_seed(0)
    net = ConvHighwayNet(
        "highway_b",
        (3, 32, 32),
        100,
        gate_init="he_normal",
        first_conv_init_std=1.0,
        classifier_init_std=0.05,
        classifier_decay_mult=10.0,
    )
    first = net.layers[1]  # after the input dropout
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 3
    assert first.weight.std().item() == pytest.approx(1.0, rel=0.1)  # 864 weights
    assert net.classifier.weight.std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.all(net.classifier.bias == 0)
    assert all(layer.gate_init == "he_normal" for layer in net.highway_layers())
    assert net.decay_multipliers() == {"classifier.weight": 10.0}
    # The library's defaults: He-normal first conv, torch's classifier range, no multipliers.
    plain = ConvHighwayNet("highway_b", (3, 32, 32), 100)
    assert plain.layers[1].weight.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.1)
    assert plain.classifier.weight.abs().max() <= 1 / math.sqrt(100)
    assert plain.decay_multipliers() == {}


def test_caffe_options_are_refused_for_the_mlps() -> None:
    with pytest.raises(ValueError, match=r"model\.classifier_init_std applies to the conv nets"):
        ImageClassifierConfig(arch="mlp", classifier_init_std=0.1)
    with pytest.raises(ValueError, match=r"model\.first_conv_init_std must be null or a number"):
        ImageClassifierConfig(arch="mnist_conv", first_conv_init_std=-1.0)


@pytest.mark.parametrize("key, value", [("gate_bias", -2.0), ("coupled", False)])
def test_a_plain_net_refuses_highway_only_settings(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"model\.{key} applies to block 'highway'"):
        ImageClassifierConfig(block="plain", **{key: value})
    ImageClassifierConfig(block="highway", **{key: value})  # where it means something
