from pathlib import Path

import pytest
import torch

from rhn.models import CharAwareConfig, CharAwareLM, LanguageModel, LanguageModelConfig
from rhn.models.char_aware import word_char_table
from rhn.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors count once


@pytest.mark.parametrize(
    ("config", "vocab", "published"),
    [
        ("ptb_rhn_d10", 10000, 23.5e6),
        ("ptb_lstm_baseline", 10000, 23.5e6),
        ("enwik8_rhn_d10", 206, 46.0e6),
        ("text8_rhn_d10", 28, 45.2e6),
    ],
)
def test_parameter_counts_match_the_published_models(
    config: str, vocab: int, published: float
) -> None:
    model = LanguageModel(vocab, load_config(CONFIGS / f"{config}.yaml").model)
    assert abs(n_params(model) - published) / published < 0.005, n_params(model)


@pytest.mark.parametrize(("config", "published"), [("kim_small", 5e6), ("kim_large", 19e6)])
def test_char_aware_parameter_counts(config: str, published: float) -> None:
    cfg = load_config(CONFIGS / f"{config}.yaml").model
    words = ["<unk>", "<eos>", *(f"w{i:05d}" for i in range(9998))]
    table, _ = word_char_table(words, cfg.max_word_length)
    assert abs(n_params(CharAwareLM(table, 51, cfg)) - published) / published < 0.07


def test_tied_weights_share_storage_and_shapes() -> None:
    cfg = LanguageModelConfig(embed_size=16, hidden_size=16, depth=2, tie_weights=True)
    model = LanguageModel(30, cfg)
    assert model.decoder.weight is model.embedding.weight
    logits, state, gates = model(torch.randint(0, 30, (7, 3)), return_gates=True)
    assert logits.shape == (7, 3, 30) and state.shape == (1, 3, 16)
    assert gates.shape == (1, 7, 3, 2, 16)


def test_loss_reductions() -> None:
    model = LanguageModel(10, LanguageModelConfig(embed_size=8, hidden_size=8, depth=1))
    logits, targets = torch.randn(5, 4, 10), torch.randint(0, 10, (5, 4))
    mean = model.loss(logits, targets)
    expected = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(mean, expected)
    model.cfg.loss_reduction = "sum_over_time"
    torch.testing.assert_close(model.loss(logits, targets), expected * 5)  # × T


def test_embedding_dropout_drops_whole_token_types_per_column() -> None:
    model = LanguageModel(5, LanguageModelConfig(embed_size=6, hidden_size=6, embed_dropout=0.5))
    model.train()
    tokens = torch.tensor([[0, 1], [2, 1], [0, 1], [2, 3]])
    x = model.encode(tokens)
    emb = model.embedding(tokens)
    scale = (x / emb)[..., 0]  # 0 or 2 per position
    assert set(scale.unique().tolist()) <= {0.0, 2.0}
    assert scale[0, 0] == scale[2, 0] and scale[1, 0] == scale[3, 0]  # same word, same mask
    assert scale[0, 1] == scale[1, 1] == scale[2, 1]


def test_seeded_sampling_is_repeatable() -> None:
    model = LanguageModel(12, LanguageModelConfig(embed_size=8, hidden_size=8)).eval()
    prompt = torch.tensor([1, 2, 3])
    a = model.generate(prompt, 20, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 20, generator=torch.Generator().manual_seed(3))
    c = model.generate(prompt, 20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = model.generate(prompt, 5, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 5, temperature=0))


def test_char_aware_reads_words_through_their_characters() -> None:
    table, chars = word_char_table(["<unk>", "<eos>", "cat", "cats"], 8, replace={"<eos>": "+"})
    assert chars[:3] == ["<pad>", "<w>", "</w>"]
    assert table[1].tolist()[:3] == [1, chars.index("+"), 2]
    cfg = CharAwareConfig(
        hidden_size=16, num_layers=1, widths=[1, 2], filters=[3, 4], max_word_length=8
    )
    model = CharAwareLM(table, len(chars), cfg).eval()
    logits, (h, _) = model(torch.tensor([[2, 3], [3, 2]]))
    assert logits.shape == (2, 2, 4) and h.shape == (1, 2, 16)
    # The word vector depends only on the word's characters.
    x = model.encode(torch.tensor([[2, 3], [3, 2]]))
    torch.testing.assert_close(x[0, 0], x[1, 1])


def test_rnn_backend_reaches_the_rhn_and_backends_agree() -> None:
    tokens, targets = torch.randint(0, 20, (6, 3)), torch.randint(0, 20, (6, 3))
    losses, grads = [], []
    for backend in ("reference", "fused"):
        cfg = LanguageModelConfig(embed_size=8, hidden_size=8, depth=3, rnn_backend=backend)
        torch.manual_seed(0)
        model = LanguageModel(20, cfg).double()
        assert model.rnn.backend == backend
        logits, _ = model(tokens)
        loss = model.loss(logits, targets)
        loss.backward()
        losses.append(loss)
        grads.append(model.rnn.weight_hh_l0.grad)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"model\.rnn_backend='fused' needs rnn: rhn"):
        LanguageModelConfig(rnn="lstm", rnn_backend="fused")
