"""The next token's distribution when a language model samples: temperature, top-k, nucleus.

    p = softmax(z / τ)                                  z: logits (V,), τ > 0
    top-k:  p_i = 0 where p_i < (the k-th largest p)    ties with the k-th token are kept
            p ← p / Σp
    top-p:  keep the most probable tokens (ties in index order) until their mass reaches top_p
            (a token is kept when the mass of the tokens before it is < top_p)
            p ← p / Σp

τ = 0 is greedy decoding (the most probable token, whatever k and p say). Top-k is Fan et
al. 2018 (arXiv 1805.04833), the nucleus Holtzman et al. 2020 (arXiv 1904.09751); they are
applied in that order after the temperature, the nucleus a share of what top-k kept, as
Hugging Face's ``generate`` does.

Computed on the CPU in float64 whatever the model's device and dtype (MPS has no float64):
the temperature is a Python float, which float32 reads as 0 below 1e-45 (0 / 0 is NaN).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a real number (NumPy's and 0-d tensors included)."""
    if isinstance(value, bool | str | bytes):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # a tensor of several values: RuntimeError
        return None


def check_sampling(
    temperature: Any, top_k: Any = None, top_p: Any = None
) -> tuple[float, int | None, float | None]:
    """The settings as Python numbers, or a ValueError naming the allowed values."""
    tau = _real(temperature)
    if tau is None or not math.isfinite(tau) or tau < 0:
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}"
        )
    k = None
    if top_k is not None:
        try:
            k = None if isinstance(top_k, bool) else operator.index(top_k)
        except TypeError:
            k = None
        if k is None or k < 1:
            raise ValueError(f"top_k must be an integer >= 1 or None (no limit), got {top_k!r}")
    p = None
    if top_p is not None:
        p = _real(top_p)
        if p is None or not 0 < p <= 1:  # NaN fails this too
            raise ValueError(f"top_p must be a number in (0, 1] or None (no limit), got {top_p!r}")
    return tau, k, p


def next_token_distribution(
    logits: torch.Tensor,
    temperature: float = 1.0,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The probabilities ``(V,)`` (float64, CPU) a token is drawn from, given ``logits (V,)``.

    ``temperature == 0``: all mass on the first most probable token (greedy)."""
    tau, top_k, top_p = check_sampling(temperature, top_k, top_p)
    z = logits.detach().to("cpu", torch.float64)
    if tau == 0:
        probs = torch.zeros_like(z)
        probs[z.argmax()] = 1.0
        return probs
    # Shifted by the max first: a tiny temperature would overflow to inf / inf.
    probs = torch.softmax((z - z.max()) / tau, dim=-1)
    if top_k is not None and top_k < probs.numel():
        kth = probs.topk(top_k).values[-1]
        probs = torch.where(probs < kth, 0.0, probs)
        probs = probs / probs.sum()  # the nucleus is a share of what top-k kept
    if top_p is not None and top_p < 1:
        ranked, order = probs.sort(descending=True, stable=True)
        before = ranked.cumsum(0) - ranked  # the mass of the more probable tokens
        probs = probs.clone()
        probs[order[before >= top_p]] = 0.0  # the most probable token has 0 before it: kept
    return probs / probs.sum()


def draw_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id ``(1,)`` drawn from :func:`next_token_distribution`, on ``logits``'
    device (``generator`` is a CPU generator)."""
    tau, top_k, top_p = check_sampling(temperature, top_k, top_p)
    probs = next_token_distribution(logits, tau, top_k=top_k, top_p=top_p)
    # Greedy draws nothing: a generator shared with other draws is left where it was.
    token = probs.argmax().view(1) if tau == 0 else torch.multinomial(probs, 1, generator=generator)
    return token.to(logits.device)
