"""What code written for nn.LSTM touches works on rhn.RHN, and means the same."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence

import rhn


def test_lstm_positional_arguments_mean_the_same() -> None:
    # input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional
    model = rhn.RHN(6, 5, 2, False, True, 0.25, True)
    assert (model.num_layers, model.bias, model.batch_first) == (2, False, True)
    assert (model.dropout, model.bidirectional, model.depth) == (0.25, True, 1)
    assert model.bias_hh_l0 is None and model.bias_hh_l1_reverse is None
    # The PyTorch word-language-model client's call: the 4th positional is bias.
    model = rhn.RHN(200, 200, 2, True)
    assert model.bias and model.depth == 1
    with pytest.raises(TypeError, match=r"bias must be True or False, got 3; set the recurrence"):
        rhn.RHN(4, 5, 2, 3)
    # ... and a ValueError, as every other bad argument is (a ported script catching those)
    with pytest.raises(ValueError, match=r"bias must be True or False, got 3"):
        rhn.RHN(4, 5, 2, 3)
    with pytest.raises(ValueError, match=r"input must be a torch\.Tensor, got list"):
        rhn.RHN(4, 5)([[0.0] * 4])


def test_attributes_lstm_code_reads() -> None:
    model = rhn.RHN(3, 4, 2, bidirectional=True, depth=2)
    lstm = nn.LSTM(3, 4, 2, bidirectional=True)
    for name in ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first",
                 "proj_size", "dropout"):  # fmt: skip
        assert getattr(model, name) == getattr(lstm, name), name
    assert model.proj_size == 0
    x = torch.randn(3, 2, 3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    expected = model(x)[0]
    model.flatten_parameters()  # harmless: the same parameters, the same numbers
    after = dict(model.named_parameters())
    assert list(after) == list(before)
    assert all(torch.equal(after[name], value) for name, value in before.items())
    torch.testing.assert_close(model(x)[0], expected, rtol=0, atol=0)
    assert [len(w) for w in model.all_weights] == [3, 3, 3, 3]
    assert model.all_weights[1][0] is model.weight_ih_l0_reverse


def test_proj_size_is_refused_as_lstm_specific() -> None:
    with pytest.raises(ValueError, match=r"proj_size must be 0, got 3: projections .* nn.LSTM"):
        rhn.RHN(3, 4, proj_size=3)


def test_dropout_with_one_layer_warns_as_lstm_does() -> None:
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        rhn.RHN(3, 4, 1, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rhn.RHN(3, 4, 2, dropout=0.5)


def test_a_packed_bidirectional_encoder_written_for_lstm_runs_unchanged() -> None:
    """The usual nn.LSTM tagger/classifier encoder, with the RHN swapped in."""

    def encode(rnn: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
        padded, _ = pad_packed_sequence(out, batch_first=True)
        # The last layer's two directions, batch in the caller's order.
        return torch.cat([padded.amax(1), h_n[-2], h_n[-1]], dim=-1)

    x, lengths = torch.randn(3, 7, 4), torch.tensor([2, 7, 5])
    lstm = nn.LSTM(4, 6, 2, batch_first=True, bidirectional=True)
    model = rhn.RHN(4, 6, 2, batch_first=True, bidirectional=True, depth=3)
    assert encode(lstm, x, lengths).shape == encode(model, x, lengths).shape == (3, 24)
    # h_n comes back in the caller's batch order: sequence 0 alone gives its own state.
    _, h_alone = model(x[:1, :2])
    _, h_n = model(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    torch.testing.assert_close(h_n[:, 0], h_alone[:, 0], rtol=1e-5, atol=1e-6)


def test_a_bidirectional_packed_tagger_learns_a_task_that_needs_each_sequence_end() -> None:
    """Tag every token with its sequence's *last* token: only a reverse pass that starts at
    each sequence's own end (never at padding) carries it to every position. A forward-only
    RHN of the same size is the control: it cannot see the end from earlier positions."""
    vocab, steps = 4, 200

    def batch(g: torch.Generator, n: int = 32):
        lengths = torch.randint(2, 9, (n,), generator=g)
        tokens = torch.randint(0, vocab, (n, 8), generator=g)
        tokens[torch.arange(8) >= lengths[:, None]] = vocab  # padding id, never a target
        last = tokens[torch.arange(n), lengths - 1]
        return tokens, lengths, last[:, None].expand(n, 8)

    def train(bidirectional: bool) -> float:
        torch.manual_seed(0)
        embed = nn.Embedding(vocab + 1, 16)
        rnn = rhn.RHN(16, 24, 1, batch_first=True, bidirectional=bidirectional, depth=2)
        head = nn.Linear(24 * (2 if bidirectional else 1), vocab)
        params = [*embed.parameters(), *rnn.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=0.02)
        g = torch.Generator().manual_seed(1)

        def logits_of(tokens, lengths):
            packed = pack_padded_sequence(embed(tokens), lengths, True, enforce_sorted=False)
            out, _ = rnn(packed)
            padded, _ = pad_packed_sequence(out, batch_first=True, total_length=8)
            return head(padded)

        for _ in range(steps):
            tokens, lengths, target = batch(g)
            valid = torch.arange(8) < lengths[:, None]
            loss = nn.functional.cross_entropy(logits_of(tokens, lengths)[valid], target[valid])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            tokens, lengths, target = batch(torch.Generator().manual_seed(99), 256)
            valid = torch.arange(8) < lengths[:, None]
            hits = logits_of(tokens, lengths).argmax(-1) == target
            return hits[valid].float().mean().item()

    assert train(bidirectional=True) > 0.95
    assert train(bidirectional=False) < 0.7


def test_torch_func_transforms_run_as_they_do_for_lstm() -> None:
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = rhn.RHN(3, 4, depth=2)  # backend "auto"
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    model.double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    # Per-parameter gradients by torch.func equal those of .backward() (the fused backward's).
    grads = grad(lambda p: functional_call(model, p, (x,))[0].square().sum())(params)
    model(x)[0].square().sum().backward()
    for name, weight in model.named_parameters():
        torch.testing.assert_close(grads[name], weight.grad)
    # vmap over a stack of inputs equals one call per input.
    stack = torch.randn(4, 5, 2, 3, dtype=torch.float64)
    mapped = vmap(lambda one: model(one)[0])(stack)
    torch.testing.assert_close(mapped, torch.stack([model(one)[0] for one in stack]))
    fused = rhn.RHN(3, 4, depth=2, backend="fused").double()
    with pytest.raises(ValueError, match=r"backend='fused' does not run under torch\.func"):
        vmap(lambda one: fused(one)[0])(stack)


def test_the_repr_names_every_setting_that_differs_from_the_default() -> None:
    # two RHNs differing in init_range or backend printed alike
    assert repr(rhn.RHN(4, 8, depth=2)) == "RHN(4, 8, depth=2, gate_bias=-2.0)"
    assert repr(rhn.RHN(4, 8, depth=2, init_range=0.04, backend="reference")) == (
        "RHN(4, 8, depth=2, gate_bias=-2.0, init_range=0.04, backend='reference')"
    )
    assert repr(rhn.RHNCell(4, 8, depth=2, init_range=0.04)) == (
        "RHNCell(4, 8, depth=2, gate_bias=-2.0, coupled=True, bias=True, init_range=0.04)"
    )


def test_reset_parameters_reaches_a_parametrized_weight() -> None:
    # weight_norm computes weight_hh_l0 from g and v: an in-place write into it changed nothing
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    model = weight_norm(rhn.RHN(3, 4, depth=2), "weight_hh_l0")
    with torch.no_grad():
        model.parametrizations.weight_hh_l0.original1.mul_(10.0)  # far outside the init range
    before = model.weight_hh_l0.detach().clone()
    model.reset_parameters()
    after = model.weight_hh_l0.detach()
    assert not torch.allclose(after, before) and after.abs().max() <= 0.5  # ±1/√4
    cell = weight_norm(rhn.RHNCell(3, 4, 2, init_range=0.04), "weight_ih")
    with torch.no_grad():
        cell.parametrizations.weight_ih.original1.fill_(7.0)
    cell.reset_parameters()
    assert cell.weight_ih.abs().max() <= 0.04 + 1e-7


def test_reset_parameters_refuses_a_parametrization_it_cannot_invert_before_writing() -> None:
    from torch.nn.utils import parametrize

    class Scale(nn.Module):  # no right_inverse
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    model = rhn.RHN(3, 4, 2, depth=2)  # the second layer's: the first must stay as it was
    parametrize.register_parametrization(model, "weight_hh_l1", Scale())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"RHN\.weight_hh_l1 is parametrized by Scale, which has no right_inverse"
    ):
        model.reset_parameters()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-initialised


def test_a_wrong_shape_is_caught_as_lstm_codes_catch_it() -> None:
    packed = pack_sequence([torch.randn(4, 7), torch.randn(2, 7)])
    calls = {  # what LSTM code may hand over: each, to nn.LSTM, a RuntimeError
        "input size": (torch.randn(5, 2, 7),),
        "hx shape": (torch.randn(5, 2, 3), torch.randn(1, 2, 4)),
        "no time steps": (torch.randn(0, 2, 3),),
        "packed size": (packed,),
    }
    lstm, model = nn.LSTM(3, 4, num_layers=2), rhn.RHN(3, 4, num_layers=2)
    for name, args in calls.items():
        with pytest.raises(RuntimeError):
            lstm(*args) if name != "hx shape" else lstm(args[0], (args[1], args[1]))
        for error in (RuntimeError, ValueError):  # ours is both: a ValueError as ours are
            with pytest.raises(error, match=r"RHN (expected|got)"):
                model(*args)
