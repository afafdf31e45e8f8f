import importlib

import pytest
import torch
from torch.func import functional_call

import rhn
from tests.nn.rhn_reference import MaskRecorder, naive_rhn, naive_rhn_layer

F64 = torch.float64
rhn_module = importlib.import_module("rhn.nn.rhn")


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("coupled", [True, False])
@pytest.mark.parametrize("depth", [1, 3])
def test_matches_naive_reference(num_layers: int, depth: int, coupled: bool) -> None:
    model = rhn.RHN(5, 6, num_layers, depth=depth, coupled=coupled, dtype=F64)
    x = torch.randn(7, 3, 5, dtype=F64)
    hx = torch.randn(num_layers, 3, 6, dtype=F64)
    out, h_n, gates = model(x, hx, return_gates=True)
    ref_out, ref_h, ref_gates = naive_rhn(model, x, hx)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, ref_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gates, ref_gates, rtol=1e-12, atol=1e-12)
    assert gates.shape == (num_layers, 7, 3, depth, 6)


def test_without_bias_matches_naive_reference() -> None:
    model = rhn.RHN(4, 5, num_layers=2, depth=2, bias=False, dtype=F64)
    assert model.bias_hh_l0 is None and model.bias_hh_l1 is None
    x = torch.randn(6, 2, 4, dtype=F64)
    torch.testing.assert_close(model(x)[0], naive_rhn(model, x)[0], rtol=1e-12, atol=1e-12)


def test_gradcheck_over_a_sequence() -> None:
    model = rhn.RHN(3, 4, num_layers=2, depth=2, dtype=F64)
    names = [name for name, _ in model.named_parameters()]

    def run(x: torch.Tensor, hx: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        out, h_n = functional_call(model, dict(zip(names, params, strict=True)), (x, hx))
        return torch.cat([out.flatten(), h_n.flatten()])

    inputs = (
        torch.randn(4, 2, 3, dtype=F64, requires_grad=True),
        torch.randn(2, 2, 4, dtype=F64, requires_grad=True),
        *(p.detach().clone().requires_grad_() for p in model.parameters()),
    )
    assert torch.autograd.gradcheck(run, inputs)


def test_batch_first_and_unbatched_match_the_default_layout() -> None:
    model = rhn.RHN(5, 6, num_layers=2, depth=3)
    x, hx = torch.randn(8, 3, 5), torch.randn(2, 3, 6)
    out, h_n, gates = model(x, hx, return_gates=True)

    model.batch_first = True
    out_bf, h_n_bf, gates_bf = model(x.transpose(0, 1), hx, return_gates=True)
    torch.testing.assert_close(out_bf, out.transpose(0, 1))
    torch.testing.assert_close(h_n_bf, h_n)
    torch.testing.assert_close(gates_bf, gates.transpose(1, 2))
    model.batch_first = False

    out_u, h_n_u, gates_u = model(x[:, 1], hx[:, 1], return_gates=True)
    torch.testing.assert_close(out_u, out[:, 1])
    torch.testing.assert_close(h_n_u, h_n[:, 1])
    torch.testing.assert_close(gates_u, gates[:, :, 1])


def test_two_chunks_with_carried_state_equal_one_run() -> None:
    model = rhn.RHN(4, 8, num_layers=2, depth=4, input_dropout=0.5, state_dropout=0.3).eval()
    x = torch.randn(20, 3, 4)
    out, h_n = model(x)
    out_a, h_a = model(x[:12])
    out_b, h_b = model(x[12:], h_a)
    torch.testing.assert_close(torch.cat([out_a, out_b]), out)
    torch.testing.assert_close(h_b, h_n)


def test_h_n_shapes_and_default_zero_state() -> None:
    model = rhn.RHN(4, 8, num_layers=3, depth=2)
    x = torch.randn(5, 2, 4)
    out, h_n = model(x)
    assert out.shape == (5, 2, 8) and h_n.shape == (3, 2, 8)
    torch.testing.assert_close(model(x, torch.zeros(3, 2, 8))[0], out)
    torch.testing.assert_close(h_n[-1], out[-1])
    model.batch_first = True
    out, h_n = model(x)
    assert out.shape == (5, 2, 8) and h_n.shape == (3, 5, 8)
    out, h_n = model(torch.randn(6, 4))
    assert out.shape == (6, 8) and h_n.shape == (3, 8)


def test_parameters_are_named_and_laid_out_like_the_cell() -> None:
    model = rhn.RHN(10, 16, num_layers=2, depth=3, gate_bias=-4.0)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "weight_ih_l0": (32, 10),
        "weight_hh_l0": (3, 32, 16),
        "bias_hh_l0": (3, 32),
        "weight_ih_l1": (32, 16),
        "weight_hh_l1": (3, 32, 16),
        "bias_hh_l1": (3, 32),
    }
    assert torch.all(model.bias_hh_l1[:, 16:] == -4.0)
    # The cell with the same parameters computes the same step.
    cell = rhn.RHNCell(10, 16, depth=3)
    cell.load_state_dict(
        {
            "weight_ih": model.weight_ih_l0,
            "weight_hh": model.weight_hh_l0,
            "bias_hh": model.bias_hh_l0,
        }
    )
    x = torch.randn(1, 2, 10)
    torch.testing.assert_close(model(x)[1][0], cell(x[0]))


@pytest.mark.parametrize("num_layers", [1, 2])
def test_dropout_masks_are_drawn_once_per_call_and_shared_across_time_and_depth(
    monkeypatch: pytest.MonkeyPatch, num_layers: int
) -> None:
    recorder = MaskRecorder(rhn_module)
    monkeypatch.setattr(rhn_module, "variational_mask", recorder)
    model = rhn.RHN(
        6, 10, num_layers, depth=4, input_dropout=0.5, state_dropout=0.5, dtype=F64
    ).train()
    x = torch.randn(9, 3, 6, dtype=F64)
    out, h_n = model(x)

    # One input mask (N, I_k) and one state mask (N, H) per layer, nothing per step.
    assert [tuple(m.shape) for m in recorder.masks] == [(3, 6), (3, 10), (3, 10), (3, 10)][
        : 2 * num_layers
    ]
    for mask in recorder.masks:
        assert set(mask.unique().tolist()) <= {0.0, 2.0}
        assert (mask == 0).any() and (mask == 2).any()
    # The reference applies those same masks at every step and every micro-layer.
    ref_out, ref_h, _ = naive_rhn(model, x, masks=recorder.masks)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, ref_h, rtol=1e-12, atol=1e-12)

    # A new call draws new masks; eval mode draws none and drops nothing.
    model(x)
    assert len(recorder.masks) == 4 * num_layers
    assert not torch.equal(recorder.masks[0], recorder.masks[2 * num_layers])
    model.eval()
    torch.testing.assert_close(model(x)[0], naive_rhn(model, x)[0], rtol=1e-12, atol=1e-12)
    assert len(recorder.masks) == 4 * num_layers


def test_dropout_between_layers_acts_only_in_training(monkeypatch: pytest.MonkeyPatch) -> None:
    model = rhn.RHN(4, 6, num_layers=3, depth=2, dropout=0.5, dtype=F64)
    x = torch.randn(5, 3, 4, dtype=F64)
    torch.testing.assert_close(model.eval()(x)[0], naive_rhn(model, x)[0])
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    dropout = torch.nn.functional.dropout

    def recorded(inp: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append((inp, dropout(inp, *args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(torch.nn.functional, "dropout", recorded)
    out, h_n = model.train()(x)
    # As nn.LSTM: on the outputs of layers 0 and 1, each element on its own (p = 0.5, ×2),
    # never on the last layer's output.
    assert len(calls) == 2
    calls = [(inp.reshape(5, 3, 6), dropped.reshape(5, 3, 6)) for inp, dropped in calls]
    for inp, dropped in calls:
        assert set((dropped / inp).unique().tolist()) == {0.0, 2.0}
    assert (out != 0).all()
    # Layer by layer from the reference, each next layer reading the dropped output.
    layer_in, finals = x, []
    for k in range(3):
        layer_out, s, _ = naive_rhn_layer(
            layer_in, x.new_zeros(3, 6), getattr(model, f"weight_ih_l{k}"),
            getattr(model, f"weight_hh_l{k}"), getattr(model, f"bias_hh_l{k}"), coupled=True,
        )  # fmt: skip
        finals.append(s)
        if k < 2:
            torch.testing.assert_close(calls[k][0], layer_out, rtol=1e-12, atol=1e-12)
            layer_in = calls[k][1]
    torch.testing.assert_close(out, layer_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, torch.stack(finals), rtol=1e-12, atol=1e-12)


def test_bf16_autocast_runs_forward_and_backward() -> None:
    model = rhn.RHN(8, 16, num_layers=2, depth=3)
    x = torch.randn(10, 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = model(x)
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    torch.testing.assert_close(out.float(), model(x)[0], atol=0.05, rtol=0.05)


def test_float64_module_via_dtype_argument() -> None:
    model = rhn.RHN(3, 4, depth=2, dtype=F64)
    assert all(p.dtype == F64 for p in model.parameters())
    assert model(torch.randn(2, 1, 3, dtype=F64))[0].dtype == F64


def test_bad_arguments_and_inputs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        rhn.RHN(3, 4, depth=0)
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1, got 0"):
        rhn.RHN(3, 0)
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1, got 0"):
        rhn.RHN(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"state_dropout must be a number in \[0, 1\), got 1.0"):
        rhn.RHN(3, 4, state_dropout=1.0)
    with pytest.raises(ValueError, match="init_range must be None or a number > 0, got 0"):
        rhn.RHN(3, 4, init_range=0)
    model = rhn.RHN(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"I = input_size = 3, got \(5, 2, 7\)"):
        model(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match=r"expected hx of shape \(2, 2, 4\) .* got \(1, 2, 4\)"):
        model(torch.randn(5, 2, 3), torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match=r"expected hx of shape \(2, 4\) .* got \(2, 1, 4\)"):
        model(torch.randn(5, 3), torch.randn(2, 1, 4))
    # A dtype mismatch is a TypeError and, as nn.LSTM raises, a ValueError.
    for error in (TypeError, ValueError):
        with pytest.raises(error, match=r"input has dtype torch\.float64 but the parameters"):
            model(torch.randn(5, 2, 3, dtype=F64))
        with pytest.raises(error, match=r"hx has dtype torch\.float16 but the parameters"):
            model(torch.randn(5, 2, 3), torch.randn(2, 2, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"no cell state: hx is h_0 alone.*\(h_0, c_0\) tuple"):
        model(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)))
    # Under autocast the GEMMs cast any input but float64; the state is carried in the
    # parameters' or the autocast dtype (torch's errors named neither tensor nor dtypes).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(ValueError, match=r"input has dtype torch\.float64; under torch\."
                           r"autocast\(torch\.bfloat16\) the parameters \(torch\.float32\) "
                           r"take any floating dtype but torch\.float64"):  # fmt: skip
            model(torch.randn(5, 2, 3, dtype=F64))
        with pytest.raises(ValueError, match=r"hx has dtype torch\.float16; under torch\.autocast"
                           r"\(torch\.bfloat16\) the parameters \(torch\.float32\) take "
                           r"torch\.bfloat16 or torch\.float32"):  # fmt: skip
            model(torch.randn(5, 2, 3), torch.randn(2, 2, 4, dtype=torch.float16))
        with pytest.raises(ValueError, match=r"hx has dtype torch\.float64; under"):
            model(torch.randn(5, 2, 3), torch.randn(2, 2, 4, dtype=F64))
        for dtype in (torch.bfloat16, torch.float16):  # an embedding's .half() output too
            out, h_n = model(torch.randn(5, 2, 3, dtype=dtype), torch.zeros(2, 2, 4))
            assert out.shape == (5, 2, 4) and h_n.dtype == torch.float32
    with (
        torch.autocast("cpu", dtype=torch.bfloat16),
        pytest.raises(
            ValueError,
            match=r"input has dtype torch\.float32; float64 parameters take float64 only",
        ),
    ):
        rhn.RHN(3, 4, dtype=F64)(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="0 time steps"):
        model(torch.randn(0, 2, 3))
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor, got list"):
        model([[1.0, 2.0, 3.0]])


def test_sizes_of_any_integer_type_are_taken_and_no_numbers_are_type_errors() -> None:
    import numpy as np

    # A sweep's grid hands out NumPy numbers: they are sizes and biases like any other.
    model = rhn.RHN(np.int64(3), np.int64(4), depth=np.int32(2), gate_bias=np.float32(-1.0))
    assert (model.hidden_size, model.depth) == (4, 2) and type(model.hidden_size) is int
    assert model.gate_bias == -1.0 and type(model.gate_bias) is float
    # nn.LSTM raises a TypeError for a size that is no integer; these are both kinds.
    for bad in ("4", 2.5, None):
        with pytest.raises(TypeError, match=rf"hidden_size must be an integer >= 1, got {bad!r}"):
            rhn.RHN(3, bad)
        with pytest.raises(ValueError, match="hidden_size must be an integer >= 1"):
            rhn.RHN(3, bad)
    with pytest.raises(TypeError, match=r"gate_bias must be a finite number, got '-1'"):
        rhn.RHN(3, 4, gate_bias="-1")


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_an_empty_batch_gives_empty_outputs_as_lstm_does(
    backend: str, batch_first: bool, bidirectional: bool
) -> None:
    kwargs = {"batch_first": batch_first, "bidirectional": bidirectional}
    model = rhn.RHN(4, 6, 2, depth=2, backend=backend, **kwargs)
    lstm = torch.nn.LSTM(4, 6, 2, **kwargs)
    x = torch.randn((0, 5, 4) if batch_first else (5, 0, 4), requires_grad=True)
    out, h_n = model(x)
    expected_out, (expected_h, _) = lstm(x)
    assert out.shape == expected_out.shape and h_n.shape == expected_h.shape
    (out.sum() + h_n.sum()).backward()
    assert x.grad.shape == x.shape
