import pytest
import torch
from torch.func import functional_call

import rhn
from tests.nn.rhn_reference import naive_rhn_layer

F64 = torch.float64


def test_hand_computed_depth_two_step() -> None:
    # H = 1, I = 1, L = 2. Micro-layer 0: a = 1·x + 0·s + [0, 0] → h = tanh(x), t = ½.
    # Micro-layer 1: a = [2s, 0] + [0, ln 3] → h = tanh(2s), t = ¾.
    cell = rhn.RHNCell(1, 1, depth=2, dtype=F64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[1.0], [0.0]]))
        cell.weight_hh.copy_(torch.tensor([[[0.0], [0.0]], [[2.0], [0.0]]]))
        cell.bias_hh.copy_(torch.tensor([[0.0, 0.0], [0.0, torch.log(torch.tensor(3.0))]]))
    x, s0 = 0.5, 0.2
    s1 = 0.5 * torch.tanh(torch.tensor(x, dtype=F64)) + 0.5 * s0
    s2 = 0.75 * torch.tanh(2 * s1) + 0.25 * s1
    out = cell(torch.tensor([[x]], dtype=F64), torch.tensor([[s0]], dtype=F64))
    torch.testing.assert_close(out, s2.reshape(1, 1))


@pytest.mark.parametrize("coupled", [True, False])
@pytest.mark.parametrize("depth", [1, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_naive_reference(depth: int, coupled: bool, bias: bool) -> None:
    cell = rhn.RHNCell(5, 7, depth, coupled=coupled, bias=bias, dtype=F64)
    x, s = torch.randn(3, 5, dtype=F64), torch.randn(3, 7, dtype=F64)
    s_next, gates = cell(x, s, return_gates=True)
    _, ref_s, ref_gates = naive_rhn_layer(
        x[None], s, cell.weight_ih, cell.weight_hh, cell.bias_hh, coupled=coupled
    )
    torch.testing.assert_close(s_next, ref_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gates, ref_gates[0], rtol=1e-12, atol=1e-12)


def test_masks_enter_the_matmuls_only() -> None:
    cell = rhn.RHNCell(4, 6, 3, dtype=F64)
    x, s = torch.randn(2, 4, dtype=F64), torch.randn(2, 6, dtype=F64)
    mi = torch.bernoulli(torch.full((2, 4), 0.5, dtype=F64)) * 2
    ms = torch.bernoulli(torch.full((2, 6), 0.5, dtype=F64)) * 2
    out = cell(x, s, input_mask=mi, state_mask=ms)
    _, ref, _ = naive_rhn_layer(
        x[None],
        s,
        cell.weight_ih,
        cell.weight_hh,
        cell.bias_hh,
        coupled=True,
        input_mask=mi,
        state_mask=ms,
    )
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_unbatched_and_default_state() -> None:
    cell = rhn.RHNCell(3, 4, 2)
    x = torch.randn(3)
    out = cell(x)
    assert out.shape == (4,)
    torch.testing.assert_close(out, cell(x[None], torch.zeros(1, 4))[0])
    s, gates = cell(x, torch.zeros(4), return_gates=True)
    assert s.shape == (4,) and gates.shape == (2, 4)


@pytest.mark.parametrize("coupled", [True, False])
def test_gradcheck(coupled: bool) -> None:
    cell = rhn.RHNCell(3, 4, depth=3, coupled=coupled, dtype=F64)
    names = [name for name, _ in cell.named_parameters()]

    def run(x: torch.Tensor, s: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return functional_call(cell, dict(zip(names, params, strict=True)), (x, s))

    inputs = (
        torch.randn(2, 3, dtype=F64, requires_grad=True),
        torch.randn(2, 4, dtype=F64, requires_grad=True),
        *(p.detach().clone().requires_grad_() for p in cell.parameters()),
    )
    assert torch.autograd.gradcheck(run, inputs)


def test_parameter_layout_and_initialisation() -> None:
    cell = rhn.RHNCell(10, 32, depth=5, gate_bias=-4.0)
    assert cell.weight_ih.shape == (64, 10)
    assert cell.weight_hh.shape == (5, 64, 32)
    assert cell.bias_hh.shape == (5, 64)
    assert torch.all(cell.bias_hh[:, 32:] == -4.0)
    # H's bias drawn as the weights, as nn.LSTM draws its biases (it was 0).
    for drawn in (cell.weight_hh, cell.bias_hh[:, :32]):
        assert 0.9 * 32**-0.5 < drawn.abs().max() <= 32**-0.5
    free = rhn.RHNCell(10, 32, depth=2, coupled=False)
    assert free.weight_ih.shape == (96, 10) and free.weight_hh.shape == (2, 96, 32)
    assert torch.all(free.bias_hh[:, 64:] == 2.0)
    assert rhn.RHNCell(3, 4, 1, bias=False).bias_hh is None
    # init_range: the weights in ±init_range (the paper's LMs: 0.04), the biases as before.
    ranged = rhn.RHNCell(10, 32, depth=5, gate_bias=-4.0, init_range=0.04)
    # The RHN code's H bias takes its scope's uniform initialiser too.
    for weight in (ranged.weight_ih, ranged.weight_hh, ranged.bias_hh[:, :32]):
        assert 0.039 < weight.abs().max().item() <= 0.04
    assert torch.all(ranged.bias_hh[:, 32:] == -4.0)
    for bad in (0, -0.1, float("inf")):
        with pytest.raises(ValueError, match="init_range must be"):
            rhn.RHNCell(3, 4, 1, init_range=bad)


def test_torch_compile_of_the_cell_matches_eager() -> None:
    cell = rhn.RHNCell(6, 8, depth=3)
    x, s = torch.randn(4, 6), torch.randn(4, 8)
    compiled = torch.compile(cell)
    torch.testing.assert_close(compiled(x, s), cell(x, s))


def test_bf16_autocast() -> None:
    cell = rhn.RHNCell(6, 8, depth=3)
    x, s = torch.randn(4, 6), torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cell(x, s)
    out.float().sum().backward()
    assert cell.weight_hh.grad is not None
    torch.testing.assert_close(out.float(), cell(x, s), atol=0.03, rtol=0.03)


def test_bad_input_gives_clear_errors() -> None:
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        rhn.RHNCell(3, 4, depth=0)
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1, got 0"):
        rhn.RHNCell(3, 0, depth=1)
    cell = rhn.RHNCell(3, 4, depth=1)
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 3\) or \(3,\), got \(2, 5\)"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"expected state s of shape \(2, 4\) .* got \(2, 3\)"):
        cell(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(TypeError, match=r"x has dtype torch\.float64 but the parameters have"):
        cell(torch.randn(2, 3, dtype=F64))
    with pytest.raises(TypeError, match="must be a floating-point tensor"):
        cell(torch.ones(2, 3, dtype=torch.long))


@pytest.mark.parametrize("flag", ["coupled", "bias"])
def test_a_flag_that_is_not_a_bool_is_refused(flag: str) -> None:
    # bool("False") is True: the string would have built the opposite cell
    with pytest.raises(TypeError, match=rf"^{flag} must be True or False, got 'False'$"):
        rhn.RHNCell(3, 4, 2, **{flag: "False"})


def test_masks_of_the_wrong_shape_are_refused_naming_the_mask() -> None:
    cell = rhn.RHNCell(3, 4, 2)
    x, s = torch.randn(5, 3), torch.zeros(5, 4)
    with pytest.raises(
        ValueError, match=r"state_mask of a shape that broadcasts to \(5, 4\), got \(2, 4\)"
    ):
        cell(x, s, state_mask=torch.ones(2, 4))
    with pytest.raises(
        ValueError, match=r"input_mask of a shape that broadcasts to \(5, 3\), got \(5, 3, 1\)"
    ):
        cell(x, s, input_mask=torch.ones(5, 3, 1))
    # a per-unit mask broadcasts over the batch, as x * mask would
    ones = cell(x, s, state_mask=torch.ones(4), input_mask=torch.ones(1, 3))
    torch.testing.assert_close(ones, cell(x, s))
    # Dtypes and types are named too (the product met the weights inside F.linear).
    for name, shape in (("input_mask", (5, 3)), ("state_mask", (5, 4))):
        # Masks whose product stays float32 work, as they did: bool, float16.
        for dtype in (torch.bool, torch.float16):
            kept = cell(x, s, **{name: torch.ones(shape, dtype=dtype)})
            torch.testing.assert_close(kept, cell(x, s))
        with pytest.raises(ValueError, match=rf"^{name} has dtype torch\.float64 but the param"):
            cell(x, s, **{name: torch.ones(shape, dtype=torch.float64)})
        with pytest.raises(TypeError, match=rf"^{name} must be a torch\.Tensor, got list$"):
            cell(x, s, **{name: [[1.0] * shape[1]] * shape[0]})


@pytest.mark.parametrize("flag", ["no", 1, None])
def test_return_gates_must_be_a_bool(flag: object) -> None:
    # A truthy 'no' added a third return value: unpacking two then failed.
    x = torch.randn(5, 2, 3)
    with pytest.raises(TypeError, match=rf"^return_gates must be True or False, got {flag!r}$"):
        rhn.RHNCell(3, 4, 2)(x[0], return_gates=flag)
    with pytest.raises(TypeError, match=rf"^return_gates must be True or False, got {flag!r}$"):
        rhn.RHN(3, 4, depth=2)(x, return_gates=flag)


@pytest.mark.parametrize("with_g", [False, True])
@pytest.mark.parametrize("coupled", [True, False])
def test_the_pointwise_backward_is_autograd_of_the_micro_step(coupled: bool, with_g: bool) -> None:
    # TORCH_POINTWISE's hand-written derivative (the fused backend's, on every device)
    # against autograd of rhn_micro_step, float64: ∂a and the carried part of ∂s.
    from rhn.nn.rhn_cell import TORCH_POINTWISE, rhn_micro_step

    g = torch.Generator().manual_seed(4)
    n, hidden, gates = 3, 5, 2 if coupled else 3
    a = torch.randn(n, gates * hidden, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.randn(n, hidden, dtype=torch.float64, generator=g, requires_grad=True)
    ds = torch.randn(n, hidden, dtype=torch.float64, generator=g)
    grad_in = torch.randn(n, hidden, dtype=torch.float64, generator=g) if with_g else None
    mask = torch.rand(n, hidden, dtype=torch.float64, generator=g).gt(0.3).double() / 0.7
    incoming = ds if grad_in is None else ds + grad_in * mask  # what reaches s'
    s_next, _ = rhn_micro_step(a, s, coupled)
    da_auto, ds_auto = torch.autograd.grad(s_next, (a, s), incoming)
    h, t, c, out = (torch.empty(n, hidden, dtype=torch.float64) for _ in range(4))
    TORCH_POINTWISE.forward(a.detach(), s.detach(), h, t, None if coupled else c, out)
    da, carry = torch.empty_like(a), torch.empty_like(s)
    TORCH_POINTWISE.backward(ds, s.detach(), h, t, None if coupled else c, da, carry,
                             grad_in, mask if with_g else None)  # fmt: skip
    torch.testing.assert_close(out, s_next.detach(), rtol=0, atol=1e-15)
    torch.testing.assert_close(da, da_auto, rtol=0, atol=1e-12)
    torch.testing.assert_close(carry, ds_auto, rtol=0, atol=1e-12)  # ∂s through the carry
