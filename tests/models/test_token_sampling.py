"""The next token's distribution: temperature, top-k and the nucleus, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rhn.models import LanguageModel, LanguageModelConfig
from rhn.models.token_sampling import check_sampling, draw_token, next_token_distribution

# Probabilities 0.5, 0.2, 0.2, 0.1: a tie at the second place.
LOGITS = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64).log()


def dist(**kwargs: object) -> list[float]:
    return next_token_distribution(LOGITS, **kwargs).tolist()  # type: ignore[arg-type]


def test_the_plain_softmax_and_a_temperature() -> None:
    assert dist() == pytest.approx([0.5, 0.2, 0.2, 0.1], abs=1e-12)
    # τ = 2: p ∝ p^(1/2).
    roots = [math.sqrt(p) for p in (0.5, 0.2, 0.2, 0.1)]
    assert dist(temperature=2.0) == pytest.approx([r / sum(roots) for r in roots], abs=1e-12)
    assert dist(temperature=0) == [1.0, 0.0, 0.0, 0.0]  # greedy
    assert next_token_distribution(torch.tensor([1.0, 3.0, 3.0]), 0).tolist() == [0, 1, 0]


def test_top_k_keeps_the_k_most_probable_and_ties_with_the_kth() -> None:
    assert dist(top_k=1) == [1.0, 0.0, 0.0, 0.0]
    # The second place is a tie: both 0.2 tokens stay, at k = 2 as at k = 3.
    kept = pytest.approx([0.5 / 0.9, 0.2 / 0.9, 0.2 / 0.9, 0.0], abs=1e-12)
    assert dist(top_k=2) == kept and dist(top_k=3) == kept
    assert dist(top_k=4) == dist() == dist(top_k=100)


def test_top_p_keeps_the_most_probable_tokens_until_their_mass_reaches_p() -> None:
    # Mass before each token, most probable first: 0, 0.5, 0.7, 0.9.
    assert dist(top_p=0.3) == [1.0, 0.0, 0.0, 0.0]
    # 0.5 < 0.6: the first 0.2 (the lower index of the tie) makes it; 0.7 ≥ 0.6 stops.
    assert dist(top_p=0.6) == pytest.approx([5 / 7, 2 / 7, 0.0, 0.0], abs=1e-12)
    assert dist(top_p=0.8) == pytest.approx([0.5 / 0.9, 0.2 / 0.9, 0.2 / 0.9, 0.0], abs=1e-12)
    assert dist(top_p=1.0) == dist()
    # After top-k (0.556, 0.222, 0.222): the mass before the second is 0.556, of the mass
    # top-k kept (0.5 of the whole): below 0.6, above 0.55.
    assert dist(top_k=2, top_p=0.6) == pytest.approx([5 / 7, 2 / 7, 0.0, 0.0], abs=1e-12)
    assert dist(top_k=2, top_p=0.55) == [1.0, 0.0, 0.0, 0.0]
    # The temperature comes first: at τ = 4 the top token holds 0.34, so p = 0.4 takes two.
    flat = next_token_distribution(LOGITS, 4.0).tolist()
    assert flat[0] < 0.4 < flat[0] + flat[1]
    two = [flat[0] / (flat[0] + flat[1]), flat[1] / (flat[0] + flat[1]), 0.0, 0.0]
    assert dist(temperature=4.0, top_p=0.4) == pytest.approx(two, abs=1e-12)


def test_draws_come_from_the_kept_tokens_in_their_proportions() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = [int(draw_token(LOGITS, top_p=0.6, generator=generator)) for _ in range(20_000)]
    counts = torch.bincount(torch.tensor(draws), minlength=4) / len(draws)
    assert counts[2:].tolist() == [0.0, 0.0]
    assert counts[0].item() == pytest.approx(5 / 7, abs=0.01)  # 4 standard errors
    # Greedy draws nothing from the generator.
    state = generator.get_state()
    assert int(draw_token(LOGITS, 0, generator=generator)) == 0
    assert torch.equal(generator.get_state(), state)


def test_numpy_and_tensor_numbers_are_taken_as_python_numbers() -> None:
    import numpy as np

    settings = check_sampling(np.float32(0.5), np.int64(2), torch.tensor(0.75))
    assert settings == (0.5, 2, 0.75) and type(settings[1]) is int
    assert dist(temperature=np.float64(2.0), top_k=np.int32(2)) == dist(temperature=2.0, top_k=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, r"temperature must be a finite number >= 0 \(0 = greedy\)"),
        ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
        ({"top_k": 0}, r"top_k must be an integer >= 1 or None \(no limit\), got 0"),
        ({"top_k": 2.0}, "top_k must be an integer >= 1 or None"),
        ({"top_k": True}, "top_k must be an integer >= 1 or None"),
        ({"top_k": "3"}, "top_k must be an integer >= 1 or None"),
        ({"temperature": "1"}, "temperature must be a finite number >= 0"),
        ({"top_p": torch.tensor([0.5, 0.6])}, r"top_p must be a number in \(0, 1\]"),
        ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\] or None \(no limit\), got 0.0"),
        ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
        ({"top_p": float("nan")}, r"top_p must be a number in \(0, 1\]"),
    ],
)
def test_settings_without_a_distribution_are_refused(kwargs: dict, message: str) -> None:
    settings = {"temperature": 1.0, "top_k": None, "top_p": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        check_sampling(**settings)
    model = LanguageModel(12, LanguageModelConfig(embed_size=8, hidden_size=8))
    with pytest.raises(ValueError, match=message):
        model.generate_stream(torch.tensor([1, 2]), 3, **kwargs)  # at once, not at a token


def test_generation_with_top_1_is_greedy_and_with_a_nucleus_stays_inside_it() -> None:
    torch.manual_seed(0)
    model = LanguageModel(12, LanguageModelConfig(embed_size=8, hidden_size=8)).eval()
    prompt = torch.tensor([1, 2, 3])
    greedy = model.generate(prompt, 12, temperature=0)
    top1 = model.generate(prompt, 12, temperature=5.0, top_k=1, generator=torch.Generator())
    assert torch.equal(top1, greedy)
    # Every token drawn with top_k = 2 is one of the two most probable after its prefix.
    tokens = model.generate(prompt, 20, top_k=2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(torch.cat([prompt, tokens]).view(-1, 1))
    for step, token in enumerate(tokens.tolist()):
        best_two = logits[len(prompt) - 1 + step, 0].topk(2).indices.tolist()
        assert token in best_two, (step, token, best_two)
