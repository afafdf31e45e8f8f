"""The MC-dropout protocols against a hand-rolled reference of the RHN code's ``evaluate_mc``:
one mask set per pass over the whole split, passes above the perplexity bound rejected, the
per-token probabilities averaged over kept passes and clipped to [1e-10, 1 − 1e-10]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rhn.data.tbptt import TBPTTStream
from rhn.models import LanguageModel, LanguageModelConfig
from rhn.tasks.lm_scoring import (
    McNoDropoutError,
    McProtocolError,
    McRejectedError,
    active_dropouts,
    score_deterministic,
    score_mc_passes,
    score_mc_windows,
)

CPU = torch.device("cpu")
VOCAB, COLUMNS = 12, 2


def tiny_lm(**dropout: float) -> LanguageModel:
    torch.manual_seed(3)
    cfg = LanguageModelConfig(embed_size=8, hidden_size=8, depth=2, **dropout)
    lm = LanguageModel(VOCAB, cfg).eval()
    with torch.no_grad():  # sharper predictions than an untrained model's, so masks matter
        lm.decoder.weight.mul_(30.0)
    return lm


def split_ids(n: int = 121) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(5))


def pass_log_probs(lm: LanguageModel, ids: torch.Tensor, seed: int) -> np.ndarray:
    """One pass of evaluate_mc: masks drawn once, the whole split as a single sequence;
    log p(target) per token. Its word dropout (noise_x, shape (batch 1, 1 step, 1)) is one
    number per column for the whole pass, drawn first; here it scales the embedding's output
    while the model's own word dropout is off."""
    whole = TBPTTStream.for_rank(ids, COLUMNS, len(ids), 0, 1)
    (inputs, targets), *rest = list(whole.all_windows())
    assert not rest  # one window: one forward call, so one draw of every mask
    torch.manual_seed(seed)
    p, lm.cfg.embed_dropout = lm.cfg.embed_dropout, 0.0
    noise_x = torch.empty(1, COLUMNS, 1).bernoulli_(1 - p).div_(1 - p) if p else 1.0
    hook = lm.embedding.register_forward_hook(lambda _m, _i, out: out * noise_x)
    lm.train()
    try:
        with torch.no_grad():
            logits, _ = lm(inputs, lm.initial_state(COLUMNS, CPU))
    finally:
        lm.eval()
        hook.remove()
        lm.cfg.embed_dropout = p
    log_p = torch.log_softmax(logits.double(), dim=-1).gather(-1, targets.unsqueeze(-1))
    return log_p.flatten().numpy()


def reference_evaluate_mc(
    lm: LanguageModel, ids: torch.Tensor, samples: int, seed: int, reject_above: float
) -> tuple[float, int]:
    kept, rejected, attempt = [], 0, 0
    while len(kept) < samples:
        log_p = pass_log_probs(lm, ids, seed + attempt)
        attempt += 1
        if np.exp(-log_p.mean()) > reject_above:
            rejected += 1
            continue
        kept.append(np.exp(log_p))
    mean = np.clip(np.mean(kept, axis=0), 1e-10, 1 - 1e-10)
    return float(-np.log(mean).mean()), rejected


def windows_of(ids: torch.Tensor, seq_len: int = 7) -> TBPTTStream:
    return TBPTTStream.for_rank(ids, COLUMNS, seq_len, 0, 1)


DROPOUT = dict(embed_dropout=0.3, input_dropout=0.4, state_dropout=0.4, output_dropout=0.4)


def test_one_mask_set_per_pass_as_evaluate_mc() -> None:
    lm, ids = tiny_lm(**DROPOUT), split_ids()
    stream = windows_of(ids)
    assert len(list(stream.all_windows())) > 5  # the windows must replay the pass's masks
    score = score_mc_passes(lm, stream, CPU, 3, seed=11, reject_above=1e9)
    expected, _ = reference_evaluate_mc(lm, ids, 3, 11, 1e9)
    assert score.loss == pytest.approx(expected, rel=1e-5)
    assert (score.kept, score.rejected) == (3, 0)
    # Fresh masks per window are another estimator, so another number.
    assert score_mc_windows(lm, stream, CPU, 3).loss != pytest.approx(expected, rel=1e-2)


def test_the_window_protocol_is_seeded_and_leaves_the_random_state_alone() -> None:
    lm, stream = tiny_lm(**DROPOUT), windows_of(split_ids())
    before = torch.random.get_rng_state()
    a = score_mc_windows(lm, stream, CPU, 2, seed=3).loss
    assert torch.equal(torch.random.get_rng_state(), before)
    assert score_mc_windows(lm, stream, CPU, 2, seed=3).loss == a
    assert score_mc_windows(lm, stream, CPU, 2, seed=4).loss != a


def reference_mc_windows(lm: LanguageModel, stream: TBPTTStream, samples: int, seed: int) -> float:
    """The window protocol by hand: fresh masks in every window (the model's forward calls
    in train mode, window by window and sample by sample, on a generator seeded with
    ``seed``), a state per sample carried across windows, each token's probability the mean
    of the samples' (float64), and the loss the mean −log of it over every target."""
    torch.manual_seed(seed)
    lm.train()
    states = [lm.initial_state(COLUMNS, CPU) for _ in range(samples)]
    nll = []
    with torch.no_grad():
        for inputs, targets in stream.all_windows():
            probs = []
            for k in range(samples):
                logits, states[k] = lm(inputs, states[k])
                probs.append(torch.softmax(logits.double(), dim=-1))
            mean = torch.stack(probs).mean(0).gather(-1, targets.unsqueeze(-1))
            nll += (-mean.log()).flatten().tolist()
    lm.eval()
    return float(np.mean(nll))


@pytest.mark.parametrize("samples", [1, 3])
def test_the_window_protocol_averages_each_windows_predictive_distributions(samples: int) -> None:
    lm, ids = tiny_lm(**DROPOUT), split_ids()
    stream = windows_of(ids)
    expected = reference_mc_windows(lm, stream, samples, seed=7)
    got = score_mc_windows(lm, stream, CPU, samples, seed=7).loss
    assert got == pytest.approx(expected, rel=1e-5)


def test_word_dropout_in_a_pass_drops_a_columns_whole_input() -> None:
    """evaluate_mc's noise_x is drawn once per pass at batch 1: each pass sees every
    embedding scaled by 1 / (1 − p), or none of them, never single words dropped."""
    lm, ids = tiny_lm(embed_dropout=0.5), split_ids()
    one_column = TBPTTStream.for_rank(ids, 1, 7, 0, 1)
    outcomes = {}
    for scale in (2.0, 0.0):
        scaled = tiny_lm(embed_dropout=0.5)
        with torch.no_grad():
            scaled.embedding.weight.mul_(scale)
        outcomes[scale] = score_deterministic(scaled, one_column, CPU).loss
    seen = set()
    for seed in range(8):
        loss = score_mc_passes(lm, one_column, CPU, 1, seed=seed, reject_above=1e9).loss
        match = [k for k, v in outcomes.items() if loss == pytest.approx(v, rel=1e-6)]
        assert len(match) == 1, (seed, loss, outcomes)
        seen.add(match[0])
    assert seen == {2.0, 0.0}
    assert lm.embed_dropout_unit == "word_type"  # training's word dropout is back


def test_passes_above_the_perplexity_bound_are_rejected() -> None:
    lm, ids = tiny_lm(**DROPOUT), split_ids()
    ppl = [np.exp(-pass_log_probs(lm, ids, s).mean()) for s in range(8)]
    bound = float(np.median(ppl))  # about half the passes fail it
    expected, rejected = reference_evaluate_mc(lm, ids, 3, 0, bound)
    assert rejected >= 1
    score = score_mc_passes(lm, windows_of(ids), CPU, 3, seed=0, reject_above=bound)
    assert score.loss == pytest.approx(expected, rel=1e-5)
    assert (score.kept, score.rejected) == (3, rejected)


def test_averaged_probabilities_are_clipped() -> None:
    lm, ids = tiny_lm(output_dropout=0.5), split_ids()
    with torch.no_grad():
        lm.decoder.weight.mul_(400.0)  # near-certain predictions: many targets get p < 1e-10
    mean = (np.exp(pass_log_probs(lm, ids, 0)) + np.exp(pass_log_probs(lm, ids, 1))) / 2
    assert (mean < 1e-10).any()  # the clip decides the number
    expected, _ = reference_evaluate_mc(lm, ids, 2, 0, float("inf"))
    score = score_mc_passes(lm, windows_of(ids), CPU, 2, seed=0, reject_above=float("inf"))
    assert score.loss == pytest.approx(expected, rel=1e-5)
    assert score.loss <= -np.log(1e-10)


def test_a_model_that_fails_every_pass_is_reported() -> None:
    lm, ids = tiny_lm(**DROPOUT), split_ids()
    best = min(np.exp(-pass_log_probs(lm, ids, s).mean()) for s in range(4))
    with pytest.raises(McRejectedError) as err:
        score_mc_passes(lm, windows_of(ids), CPU, 2, reject_above=1.0, max_attempts=4)
    assert str(err.value) == (
        f"MC dropout asked for K=2 passes of perplexity <= 1; only 0 of the 4 drawn (the most "
        f"it draws: max_attempts = 4) were, the best at {best:.4g}; with dropout on, this model "
        f"is too poor to average (undertrained?): train it longer, evaluate without MC dropout, "
        f"or use mc_protocol 'window', which rejects no pass (rhn-eval --mc-protocol window)"
    )


def test_by_default_mc_draws_up_to_ten_passes_per_sample_and_says_so() -> None:
    lm, ids = tiny_lm(**DROPOUT), split_ids()
    message = r"only 0 of the 20 drawn \(the most it draws: 10 × K\) were, the best at \d"
    with pytest.raises(McRejectedError, match=message):
        score_mc_passes(lm, windows_of(ids), CPU, 2, reject_above=1.0)


def test_the_deterministic_pass_is_the_mean_nll_of_one_long_sequence() -> None:
    lm, ids = tiny_lm(**DROPOUT), split_ids()
    whole = TBPTTStream.for_rank(ids, COLUMNS, len(ids), 0, 1)
    inputs, targets = next(whole.all_windows())
    with torch.no_grad():
        logits, _ = lm(inputs, lm.initial_state(COLUMNS, CPU))
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    score = score_deterministic(lm, windows_of(ids), CPU)
    assert score.loss == pytest.approx(expected.item(), rel=1e-5)
    assert len(score.gate_means) == 2 and all(0 < g < 1 for g in score.gate_means)
    assert not lm.training
    # The gate means are those of the one long sequence too, also when the last window
    # is short (59 steps as windows of 50 and 9): each step counts once.
    with torch.no_grad():
        gates = lm(inputs, lm.initial_state(COLUMNS, CPU), return_gates=True)[2]
    expected_gates = gates.mean(dim=(0, 1, 2, 4)).tolist()
    uneven = score_deterministic(lm, windows_of(ids, 50), CPU).gate_means
    assert uneven == pytest.approx(expected_gates, rel=1e-5)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (dict(output_dropout=0.3, output_dropout_kind="ordinary"), "ordinary output dropout"),
        (dict(num_layers=2, layer_dropout=0.3), "layer_dropout"),
    ],
)
def test_per_step_dropout_cannot_be_held_for_a_pass(settings: dict, named: str) -> None:
    lm, ids = tiny_lm(**settings), split_ids()
    with pytest.raises(McProtocolError, match=f"this model's {named} draw a fresh mask every step"):
        score_mc_passes(lm, windows_of(ids), CPU, 2)
    assert score_mc_windows(lm, windows_of(ids), CPU, 2).loss > 0  # the per-window variant


@pytest.mark.parametrize("score", [score_mc_passes, score_mc_windows], ids=["pass", "window"])
def test_mc_dropout_of_a_model_without_dropout_is_refused(score) -> None:
    # K passes of a model without dropout are K copies of the deterministic score
    lm, ids = tiny_lm(), split_ids()
    with pytest.raises(McNoDropoutError, match=r"this model has none \(every dropout rate is 0\)"):
        score(lm, windows_of(ids), CPU, 3)
    # one dropout on is enough; layer_dropout with a single layer is none
    assert active_dropouts(tiny_lm(embed_dropout=0.2)) == ["embed_dropout"]
    assert active_dropouts(tiny_lm(num_layers=2, layer_dropout=0.3)) == ["layer_dropout"]
    assert score_mc_windows(tiny_lm(state_dropout=0.3), windows_of(ids), CPU, 2).loss > 0
