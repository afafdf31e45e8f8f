"""Graph replay of the fused step loops: the static-buffer bookkeeping on CPU (through
EagerRunner, which keeps graph semantics), and real CUDA graphs where a GPU is present."""

from __future__ import annotations

import pytest
import torch

import rhn
from rhn.nn import rhn_graph
from rhn.nn.rhn_fused import rhn_recurrence_fused
from rhn.nn.rhn_graph import EagerRunner, clear_graphs
from rhn.nn.rhn_schedule import StepSchedule

F64 = torch.float64


class CountingRunner(EagerRunner):
    captures = 0

    def capture(self, fn):
        CountingRunner.captures += 1
        return super().capture(fn)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_graphs()
    CountingRunner.captures = 0
    yield
    clear_graphs()


def _leaves(seed: int, steps: int = 5, coupled: bool = True, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    rows = (2 if coupled else 3) * 4
    return [
        torch.randn(steps, batch, rows, dtype=F64, generator=g).requires_grad_(),
        torch.randn(batch, 4, dtype=F64, generator=g).requires_grad_(),
        (0.5 * torch.randn(3, rows, 4, dtype=F64, generator=g)).requires_grad_(),
        torch.randn(3, rows, dtype=F64, generator=g).requires_grad_(),
    ]


def _mask(batch: int = 3) -> torch.Tensor:
    return torch.tensor([[2.0, 0.0, 2.0, 2.0]] * batch, dtype=F64)


def _outputs_and_grads(leaves, mask, coupled, runner):
    out, last = rhn_recurrence_fused(*leaves, coupled=coupled, state_mask=mask, graph_runner=runner)
    grads = torch.autograd.grad(out.pow(2).sum() + last.sum(), leaves)
    return [out, last, *grads]


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("coupled", [True, False])
def test_replays_match_eager_runs_for_new_inputs(coupled: bool, mask: bool) -> None:
    m = _mask() if mask else None
    for seed in range(3):  # one capture, then two replays on different values
        leaves = _leaves(seed, coupled=coupled)
        expected = _outputs_and_grads(leaves, m, coupled, None)
        got = _outputs_and_grads(leaves, m, coupled, CountingRunner)
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert CountingRunner.captures == 2  # forward and backward, captured once each


def test_calls_of_one_shape_keep_their_own_saved_buffers() -> None:
    # Two layers of one shape: both forwards replay the same graph before either backward
    # runs; each backward must still see its own forward's buffers.
    first, second = _leaves(0), _leaves(1)

    def both(runner):
        out1, last1 = rhn_recurrence_fused(*first, coupled=True, graph_runner=runner)
        out2, last2 = rhn_recurrence_fused(*second, coupled=True, graph_runner=runner)
        loss = (out1 * out2).sum() + last1.sum() - 2 * last2.sum()
        return [out1, out2, *torch.autograd.grad(loss, first + second)]

    for e, g in zip(both(None), both(CountingRunner), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert CountingRunner.captures == 2


def test_a_new_shape_captures_anew_and_old_graphs_are_evicted(monkeypatch) -> None:
    monkeypatch.setattr(rhn_graph, "MAX_GRAPHS", 2)
    for steps in (5, 6, 5):
        _outputs_and_grads(_leaves(0, steps=steps), None, True, CountingRunner)
    # 5: fwd + bwd; 6: fwd + bwd (evicting 5's); 5 again: captured again.
    assert CountingRunner.captures == 6
    assert len(rhn_graph._GRAPHS) == 2


def test_a_graph_first_used_in_inference_mode_does_not_serve_training() -> None:
    leaves = _leaves(0)
    with torch.inference_mode():
        rhn_recurrence_fused(*leaves, coupled=True, graph_runner=CountingRunner)
    expected = _outputs_and_grads(leaves, None, True, None)
    got = _outputs_and_grads(leaves, None, True, CountingRunner)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert CountingRunner.captures == 3  # inference forward; training forward + backward


def test_static_bytes_budget_evicts(monkeypatch) -> None:
    leaves = _leaves(0)
    _outputs_and_grads(leaves, None, True, CountingRunner)
    sizes = [call.nbytes for call in rhn_graph._GRAPHS.values()]
    assert len(sizes) == 2 and all(n > 0 for n in sizes)
    # Static inputs of the forward: x_proj, s0, W, b in float64; outputs: states, h, t.
    x, s0, w, b = leaves
    steps_depth = x.shape[0] * w.shape[0]
    outputs = (steps_depth + 1) * 3 * 4 + 2 * steps_depth * 3 * 4
    assert sizes[0] == 8 * (x.numel() + s0.numel() + w.numel() + b.numel() + outputs)
    monkeypatch.setattr(rhn_graph, "MAX_STATIC_BYTES", max(sizes))
    _outputs_and_grads(_leaves(0, steps=6), None, True, CountingRunner)
    assert len(rhn_graph._GRAPHS) == 1  # only the newest fits the budget


def test_module_backend_needs_cuda() -> None:
    model = rhn.RHN(3, 4, depth=2, backend="cuda-graph")
    with pytest.raises(ValueError, match="backend='cuda-graph' needs CUDA tensors, got cpu"):
        model(torch.randn(5, 2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_module_with_cuda_graphs_matches_the_fused_backend(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = rhn.RHN(16, 32, num_layers=2, depth=4, state_dropout=0.2, device="cuda", dtype=dtype)
    x = torch.randn(7, 5, 16, device="cuda", dtype=dtype)
    results = []
    for backend in ("fused", "cuda-graph", "cuda-graph"):  # capture, then replay
        model.backend = backend
        model.zero_grad()
        torch.manual_seed(1)
        out, h_n = model(x)
        (out.float().pow(2).sum() + h_n.float().sum()).backward()
        results.append([out, h_n, *(p.grad.clone() for p in model.parameters())])
    # The same kernels on the same inputs; only cuBLAS's algorithm choice may differ.
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for fused, *graphed in zip(*results, strict=True):
        for g in graphed:
            torch.testing.assert_close(g.float(), fused.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("reverse", [False, True])
def test_packed_schedules_replay_like_eager_and_capture_per_length_profile(reverse) -> None:
    def run(leaves, sizes, runner):
        schedule = StepSchedule(sizes, reverse=reverse)
        x = leaves[0][: schedule.rows]  # flat step-major rows
        out, last = rhn_recurrence_fused(
            x, *leaves[1:], coupled=True, state_mask=_mask(), graph_runner=runner,
            schedule=schedule,
        )  # fmt: skip
        return [out, last, *torch.autograd.grad(out.pow(2).sum() + last.sum(), leaves)]

    profiles = [(3, 3, 2, 1), (3, 2, 2, 2), (3, 3, 2, 1)]
    for seed, sizes in enumerate(profiles):
        leaves = _leaves(seed, steps=12, batch=1)
        leaves[0] = leaves[0].detach().reshape(12, -1).requires_grad_()
        leaves[1] = torch.randn(3, 4, dtype=F64).requires_grad_()
        expected = run(leaves, sizes, None)
        for got, want in zip(run(leaves, sizes, CountingRunner), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # Forward and backward captured once per distinct length profile; the repeat replays.
    assert CountingRunner.captures == 4
