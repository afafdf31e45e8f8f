"""How a language model is scored on a token split: one deterministic pass, or MC dropout.

Every protocol runs the split as ``N`` columns cut into windows of ``seq_len`` steps, with the
state carried from window to window (``batch_size = 1`` is the papers' full evaluation), and
gives the mean negative log-likelihood per token (nats).

MC dropout (Gal & Ghahramani 2016; RHN §5, "64.4 with MC dropout") has two protocols:

``pass`` — the RHN code's ``evaluate_mc``, the one its published numbers used:
    one set of dropout masks for a whole pass over the split. Embedding dropout is drawn
    once per pass for a column's whole input, as ``evaluate_mc`` does (at batch 1 and one
    step per call its ``noise_x`` is a single number): a pass either scales every embedding
    by 1 / (1 − p) or zeroes them all, and the bound below rejects the latter. A pass
    whose perplexity exceeds ``reject_above`` (500) is discarded and another drawn, until
    ``samples`` passes are kept; each token's target probability is averaged over the kept
    passes and clipped to [1e-10, 1 − 1e-10] before the log:

        loss = mean_t −log clip( (1/K) Σ_k p_k(y_t) )

    Pass ``i`` (0, 1, … counting rejected ones) draws its masks from ``torch.manual_seed(
    seed + i)``; the same draws are replayed at every window, so every window of the pass
    sees the same masks, as if the split were one sequence. Every mask must therefore be one
    per sequence (the RHN's variational dropouts, the embedding's word dropout); a model with
    per-step dropout (ordinary output dropout, ``layer_dropout``) is refused.
``window`` — fresh masks for every window, the K predictive distributions averaged per
    window with the states of the K samples carried separately. Cheaper to stream, no
    rejection or clipping; *not* the paper's protocol.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rhn.data.tbptt import TBPTTStream
from rhn.models.recurrent_lm import RecurrentLM

McProtocol = Literal["pass", "window"]
MC_PROTOCOLS: tuple[str, ...] = ("pass", "window")
CLIP = 1e-10  # evaluate_mc clips the averaged probabilities to [CLIP, 1 − CLIP]


class McRejectedError(RuntimeError):
    """MC dropout could not keep enough passes under the perplexity bound."""


class McProtocolError(ValueError):
    """The model's dropout cannot be scored by the MC protocol asked for."""

    reason = "per-step dropout"  # in a report's words


class McNoDropoutError(McProtocolError):
    """The model has no dropout to sample: every MC pass would be the deterministic one."""

    reason = "no dropout"


@dataclass
class StreamScore:
    """Mean NLL per token, the mean transform-gate value per micro-layer (RHN, deterministic
    pass only) and, for MC ``pass``, how many passes were kept and rejected."""

    loss: float
    gate_means: list[float] = field(default_factory=list)
    kept: int = 0
    rejected: int = 0


def _windows(stream: TBPTTStream, label: str, progress: bool) -> Iterator:
    windows = stream.all_windows()
    if not progress:
        return windows
    n = math.ceil((stream.columns.shape[0] - 1) / stream.seq_len)
    return tqdm(windows, total=n, desc=label, disable=not sys.stderr.isatty())


@contextlib.contextmanager
def _replayed_masks(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block on a generator seeded with ``seed``, leaving the global RNG untouched:
    entered before every window, it hands every window the same dropout masks."""
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    else:
        devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _column_word_dropout(lm: RecurrentLM) -> Iterator[None]:
    """Embedding dropout drops a column's whole input in the block (``evaluate_mc``)."""
    before = getattr(lm, "embed_dropout_unit", None)
    if before is None:  # a model without word dropout (the char-aware LM)
        yield
        return
    lm.embed_dropout_unit = "column"
    try:
        yield
    finally:
        lm.embed_dropout_unit = before


def _target_log_probs(
    lm: RecurrentLM,
    stream: TBPTTStream,
    device: torch.device,
    *,
    mask_seed: int | None,
    gates: bool = False,
    label: str = "eval",
    progress: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """One pass: log p(target) of every token (float64, window order) and the gate means.
    ``mask_seed`` None is the deterministic pass (dropout off); else the pass's masks."""
    lm.train(mask_seed is not None)
    state = lm.initial_state(stream.columns.shape[1], device)
    pieces, gate_sum, gate_steps = [], None, 0
    # Gate activity comes from the reference recurrence; a model that asked for a fast
    # backend by name (fused, cuda-graph) keeps it for evaluation and logs no gate means.
    want_gates = gates and lm.cfg.rnn == "rhn" and lm.cfg.rnn_backend in ("auto", "reference")
    for inputs, targets in _windows(stream, label, progress):
        inputs, targets = inputs.to(device), targets.to(device)
        masks = _replayed_masks(mask_seed, device) if mask_seed is not None else None
        with masks or contextlib.nullcontext():
            out = lm(inputs, state, return_gates=want_gates)
        state = out[1]
        log_p = torch.log_softmax(out[0].float(), dim=-1)
        pieces.append(log_p.gather(-1, targets.unsqueeze(-1)).flatten().double().cpu())
        if want_gates:  # summed over steps, so a short last window counts for its steps
            per_depth = out[2].float().sum(dim=1).mean(dim=(0, 1, 3))  # (K·D, T, N, L, H)
            gate_sum = per_depth if gate_sum is None else gate_sum + per_depth
            gate_steps += targets.shape[0]
    lm.eval()
    means = (gate_sum / gate_steps).tolist() if gate_sum is not None else []
    return torch.cat(pieces), means


def per_step_dropout(lm: RecurrentLM) -> list[str]:
    """The model's dropouts that draw a fresh mask at every step (not one per sequence)."""
    cfg = lm.cfg
    found = []
    if cfg.output_dropout > 0 and cfg.output_dropout_kind == "ordinary":
        found.append("ordinary output dropout")
    if cfg.layer_dropout > 0 and cfg.num_layers > 1:
        found.append("layer_dropout")
    return found


def active_dropouts(lm: RecurrentLM) -> list[str]:
    """The model's dropouts whose rate is above 0: what MC dropout samples."""
    cfg = lm.cfg
    rates = ("embed_dropout", "input_dropout", "state_dropout", "output_dropout")
    found = [name for name in rates if getattr(cfg, name, 0.0) > 0]
    if cfg.layer_dropout > 0 and cfg.num_layers > 1:
        found.append("layer_dropout")
    return found


def _require_dropout(lm: RecurrentLM, samples: int) -> None:
    if not active_dropouts(lm):
        raise McNoDropoutError(
            f"MC dropout averages passes with dropout on, and this model has none (every "
            f"dropout rate is 0): its {samples} passes would each give the deterministic "
            f"score; evaluate without MC dropout (no --mc)"
        )


@torch.no_grad()
def score_deterministic(
    lm: RecurrentLM, stream: TBPTTStream, device: torch.device, *, progress: bool = False
) -> StreamScore:
    log_p, gates = _target_log_probs(
        lm, stream, device, mask_seed=None, gates=True, progress=progress
    )
    return StreamScore(loss=-log_p.mean().item(), gate_means=gates)


@torch.no_grad()
def score_mc_passes(
    lm: RecurrentLM,
    stream: TBPTTStream,
    device: torch.device,
    samples: int,
    *,
    seed: int = 0,
    reject_above: float = 500.0,
    max_attempts: int | None = None,
    progress: bool = False,
) -> StreamScore:
    """``evaluate_mc``: ``samples`` kept passes, one mask set each (see the module doc).

    Raises McRejectedError when ``max_attempts`` (default 10 × samples) passes did not keep
    ``samples`` of them, saying how many were asked, drawn and kept, and the best perplexity
    seen (how far the model is from the bound).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    _require_dropout(lm, samples)
    per_step = per_step_dropout(lm)
    if per_step:
        raise McProtocolError(
            f"MC protocol 'pass' keeps one set of per-sequence masks for a whole pass; this "
            f"model's {' and '.join(per_step)} draw a fresh mask every step, which a pass "
            f"cannot hold fixed; use mc_protocol 'window' (rhn-eval --mc-protocol window)"
        )
    limit = f"max_attempts = {max_attempts}" if max_attempts else "10 × K"
    max_attempts = max_attempts or 10 * samples
    prob_sum: torch.Tensor | None = None
    kept = attempt = 0
    best = math.inf  # the lowest perplexity of any pass, kept or not
    while kept < samples:
        if attempt == max_attempts:
            raise McRejectedError(
                f"MC dropout asked for K={samples} passes of perplexity <= {reject_above:g}; "
                f"only {kept} of the {attempt} drawn (the most it draws: {limit}) were, the "
                f"best at {best:.4g}; with dropout on, this model is too poor to average "
                f"(undertrained?): train it longer, evaluate without MC dropout, or use "
                f"mc_protocol 'window', which rejects no pass (rhn-eval --mc-protocol window)"
            )
        label = f"mc pass {attempt + 1} ({kept}/{samples} kept)"
        with _column_word_dropout(lm):
            log_p, _ = _target_log_probs(
                lm, stream, device, mask_seed=seed + attempt, label=label, progress=progress
            )
        attempt += 1
        ppl = math.exp(min(-log_p.mean().item(), 700.0))
        best = min(best, ppl)
        if ppl > reject_above:
            continue
        prob_sum = log_p.exp() if prob_sum is None else prob_sum + log_p.exp()
        kept += 1
    mean_prob = (prob_sum / samples).clamp(CLIP, 1 - CLIP)
    return StreamScore(loss=-mean_prob.log().mean().item(), kept=kept, rejected=attempt - kept)


@torch.no_grad()
def score_mc_windows(
    lm: RecurrentLM,
    stream: TBPTTStream,
    device: torch.device,
    samples: int,
    *,
    seed: int = 0,
    progress: bool = False,
) -> StreamScore:
    """Fresh masks per window, the ``samples`` predictive distributions averaged per window;
    the masks are drawn from ``seed`` (the caller's random state is left as it was)."""
    _require_dropout(lm, samples)
    with _replayed_masks(seed, device):
        return _score_mc_windows(lm, stream, device, samples, progress)


def _score_mc_windows(
    lm: RecurrentLM, stream: TBPTTStream, device: torch.device, samples: int, progress: bool
) -> StreamScore:
    lm.train()
    states = [lm.initial_state(stream.columns.shape[1], device) for _ in range(samples)]
    total, count = 0.0, 0
    for inputs, targets in _windows(stream, "mc windows", progress):
        inputs, targets = inputs.to(device), targets.to(device)
        summed = None  # log Σ_k p_k, accumulated so memory doesn't grow with k
        for k in range(samples):
            logits, states[k] = lm(inputs, states[k])
            log_p = torch.log_softmax(logits.float(), dim=-1)
            summed = log_p if summed is None else torch.logaddexp(summed, log_p)
        mean_log_prob = summed - math.log(samples)
        total += F.nll_loss(mean_log_prob.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    lm.eval()
    return StreamScore(loss=total / count)
