"""The next token's distribution when a language model samples: temperature, top-k, nucleus.

    p = softmax(z / τ)                                  z: logits (V,), τ > 0
    top-k:  p_i = 0 where p_i < (the k-th largest p)    ties with the k-th token are kept
    top-p:  keep the most probable tokens (ties in index order) until their mass reaches top_p
            (a token is kept when the mass of the tokens before it is < top_p)
    p ← p / Σp

τ = 0 is greedy decoding (the most probable token, whatever k and p say). Top-k is Fan et
al. 2018 (arXiv 1805.04833), the nucleus Holtzman et al. 2020 (arXiv 1904.09751); they are
applied in that order after the temperature, as Hugging Face's ``generate`` does.

Computed on the CPU in float64 whatever the model's device and dtype (MPS has no float64):
the temperature is a Python float, which float32 reads as 0 below 1e-45 (0 / 0 is NaN).
"""

from __future__ import annotations

import math

import torch


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse settings no distribution comes from, naming the allowed values."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None (no limit), got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool)
        or not isinstance(top_p, (int, float))
        or not 0 < top_p <= 1  # NaN fails this too
    ):
        raise ValueError(f"top_p must be a number in (0, 1] or None (no limit), got {top_p!r}")


def next_token_distribution(
    logits: torch.Tensor,
    temperature: float = 1.0,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The probabilities ``(V,)`` (float64, CPU) a token is drawn from, given ``logits (V,)``.

    ``temperature == 0``: all mass on the first most probable token (greedy)."""
    check_sampling(temperature, top_k, top_p)
    z = logits.detach().to("cpu", torch.float64)
    if temperature == 0:
        probs = torch.zeros_like(z)
        probs[z.argmax()] = 1.0
        return probs
    # Shifted by the max first: a tiny temperature would overflow to inf / inf.
    probs = torch.softmax((z - z.max()) / temperature, dim=-1)
    if top_k is not None and top_k < probs.numel():
        kth = probs.topk(top_k).values[-1]
        probs = torch.where(probs < kth, 0.0, probs)
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
    probs = next_token_distribution(logits, temperature, top_k=top_k, top_p=top_p)
    # Greedy draws nothing: a generator shared with other draws is left where it was.
    token = (
        probs.argmax().view(1)
        if temperature == 0
        else torch.multinomial(probs, 1, generator=generator)
    )
    return token.to(logits.device)
