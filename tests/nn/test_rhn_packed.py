"""PackedSequence input: every sequence gets exactly what running it alone, unpadded, gives."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rhn
from tests.nn.rhn_reference import MaskRecorder, naive_rhn

F64 = torch.float64
rhn_module = importlib.import_module("rhn.nn.rhn")
LENGTHS = [5, 2, 7, 1]  # unsorted, with a length-1 sequence


def _packed_case(model: rhn.RHN, lengths: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    steps, batch = max(lengths), len(lengths)
    padded = torch.randn(steps, batch, model.input_size, dtype=F64, generator=g)
    states = model.num_layers * model.num_directions
    hx = torch.randn(states, batch, model.hidden_size, dtype=F64, generator=g)
    # Random projections of every output and final state make a loss whose gradient reaches
    # every parameter, every input row and hx.
    out_weight = torch.randn(steps, batch, model.num_directions * model.hidden_size, dtype=F64)
    h_weight = torch.randn(states, batch, model.hidden_size, dtype=F64, generator=g)
    return padded, hx, out_weight, h_weight


def _packed_run(model, padded, hx, lengths, out_weight, h_weight, enforce_sorted=False):
    """The module on the packed batch: outputs (padded back), h_n, and the gradients of
    the projected loss w.r.t. the parameters, the padded input and hx."""
    x = padded.clone().requires_grad_()
    h0 = hx.clone().requires_grad_()
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    out, h_n = model(packed, h0)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    out_padded, out_lengths = pad_packed_sequence(out)
    assert out_lengths.tolist() == lengths
    loss = (out_padded * out_weight[: out_padded.shape[0]]).sum() + (h_n * h_weight).sum()
    grads = torch.autograd.grad(loss, (*model.parameters(), x, h0))
    return out_padded, h_n, grads


def _alone_run(model, padded, hx, lengths, out_weight, h_weight):
    """The naive reference on each sequence alone, unpadded; the same loss, summed."""
    x = padded.clone().requires_grad_()
    h0 = hx.clone().requires_grad_()
    params = dict(model.named_parameters())
    outs, finals, loss = [], [], 0.0
    for i, n in enumerate(lengths):
        out, h_n, _ = naive_rhn(model, x[:n, i : i + 1], h0[:, i : i + 1])
        outs.append(out[:, 0])
        finals.append(h_n[:, 0])
        loss = loss + (out[:, 0] * out_weight[:n, i]).sum() + (h_n[:, 0] * h_weight[:, i]).sum()
    grads = torch.autograd.grad(loss, (*params.values(), x, h0))
    return outs, torch.stack(finals, 1), grads


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("coupled", [True, False])
def test_each_sequence_gets_what_running_it_alone_gives(
    backend: str, bidirectional: bool, coupled: bool
) -> None:
    torch.manual_seed(0)
    model = rhn.RHN(
        3, 4, 2, bidirectional=bidirectional, depth=2, coupled=coupled, backend=backend, dtype=F64
    )
    case = _packed_case(model, LENGTHS)
    out, h_n, grads = _packed_run(model, *case[:2], LENGTHS, *case[2:])
    alone_out, alone_h, alone_grads = _alone_run(model, *case[:2], LENGTHS, *case[2:])
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(out[:n, i], alone_out[i], rtol=1e-12, atol=1e-12)
        assert torch.all(out[n:, i] == 0)  # pad_packed_sequence's padding: nothing leaked
    torch.testing.assert_close(h_n, alone_h, rtol=1e-12, atol=1e-12)
    names = [name for name, _ in model.named_parameters()] + ["input", "hx"]
    for name, got, expected in zip(names, grads, alone_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-12, msg=name)
    # The padding of the input gets no gradient: it is never read.
    input_grad = grads[-2]
    for i, n in enumerate(LENGTHS):
        assert torch.all(input_grad[n:, i] == 0)


def test_sorted_input_and_enforce_sorted_agree_with_unsorted() -> None:
    model = rhn.RHN(3, 4, 2, bidirectional=True, depth=2, dtype=F64)
    lengths = sorted(LENGTHS, reverse=True)
    padded, hx, out_weight, h_weight = _packed_case(model, lengths, seed=3)
    out_sorted, h_sorted, grads_sorted = _packed_run(
        model, padded, hx, lengths, out_weight, h_weight, enforce_sorted=True
    )
    # The same sequences in another column order: the module sorts them (hx with them), runs
    # the sorted batch and puts outputs, h_n and the gradients back in the caller's order.
    perm = torch.tensor([2, 0, 3, 1])
    out, h_n, grads = _packed_run(
        model, padded[:, perm], hx[:, perm], [lengths[i] for i in perm], out_weight[:, perm],
        h_weight[:, perm], enforce_sorted=False,
    )  # fmt: skip
    back = perm.argsort()
    torch.testing.assert_close(out[:, back], out_sorted, rtol=0, atol=0)
    torch.testing.assert_close(h_n[:, back], h_sorted, rtol=0, atol=0)
    *param_grads, x_grad, h0_grad = grads
    *param_grads_sorted, x_grad_sorted, h0_grad_sorted = grads_sorted
    for a, b in zip(param_grads, param_grads_sorted, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(x_grad[:, back], x_grad_sorted, rtol=0, atol=0)
    torch.testing.assert_close(h0_grad[:, back], h0_grad_sorted, rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_backend_matches_the_reference_with_dropout(bidirectional: bool) -> None:
    """Training mode: the masks (drawn in the same order from the same seed) agree, so the
    backends must too, including the GEMM-gradient bookkeeping of rows joining and leaving."""
    results = []
    for backend in ("reference", "fused"):
        torch.manual_seed(1)
        model = rhn.RHN(
            3, 5, 2, dropout=0.3, bidirectional=bidirectional, depth=3, backend=backend,
            input_dropout=0.4, state_dropout=0.5, dtype=F64,
        ).train()  # fmt: skip
        case = _packed_case(model, LENGTHS, seed=2)
        torch.manual_seed(7)
        results.append(_packed_run(model, *case[:2], LENGTHS, *case[2:]))
    (ref_out, ref_h, ref_grads), (out, h_n, grads) = results
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, ref_h, rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-12)


def test_variational_masks_stay_one_per_sequence_per_call(monkeypatch) -> None:
    recorder = MaskRecorder(rhn_module)
    monkeypatch.setattr(rhn_module, "variational_mask", recorder)
    model = rhn.RHN(
        3, 6, 1, bidirectional=True, depth=2, input_dropout=0.5, state_dropout=0.5, dtype=F64
    ).train()
    lengths = [4, 6, 2]
    padded = torch.randn(6, 3, 3, dtype=F64)
    packed = pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=False)
    out, h_n = model(packed)
    # (input, state) masks per direction, one row per sequence, in the packed (sorted) order.
    assert [tuple(m.shape) for m in recorder.masks] == [(3, 3), (3, 6)] * 2
    out_padded, _ = pad_packed_sequence(out)
    for row, i in enumerate(packed.sorted_indices.tolist()):
        masks = [m[row : row + 1] for m in recorder.masks]
        n = lengths[i]
        ref_out, ref_h, _ = naive_rhn(model, padded[:n, i : i + 1], masks=masks)
        torch.testing.assert_close(out_padded[:n, i], ref_out[:, 0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_n[:, i], ref_h[:, 0], rtol=1e-12, atol=1e-12)


def test_gates_come_back_packed_like_the_output() -> None:
    model = rhn.RHN(3, 4, 2, bidirectional=True, depth=3, dtype=F64)
    lengths = [3, 5]
    padded = torch.randn(5, 2, 3, dtype=F64)
    packed = pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=False)
    out, _, gates = model(packed, return_gates=True)
    assert gates.data.shape == (sum(lengths), 4, 3, 4)  # (P, K·D, L, H)
    assert torch.equal(gates.batch_sizes, out.batch_sizes)
    gates_padded, _ = pad_packed_sequence(gates)  # (T, N, K·D, L, H)
    for i, n in enumerate(lengths):
        _, _, ref_gates = naive_rhn(model, padded[:n, i : i + 1])  # (K·D, T, 1, L, H)
        torch.testing.assert_close(
            gates_padded[:n, i], ref_gates[:, :, 0].transpose(0, 1), rtol=1e-12, atol=1e-12
        )


def test_packed_input_errors_name_the_problem() -> None:
    model = rhn.RHN(3, 4, 2)
    packed = pack_padded_sequence(torch.randn(4, 2, 5), torch.tensor([4, 2]))
    with pytest.raises(ValueError, match=r"PackedSequence data of shape \(P, I\) with I = "):
        model(packed)
    packed = pack_padded_sequence(torch.randn(4, 2, 3), torch.tensor([4, 2]))
    with pytest.raises(ValueError, match=r"expected hx of shape \(2, 2, 4\)"):
        model(packed, torch.zeros(2, 3, 4))
