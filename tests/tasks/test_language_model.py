"""Language-modelling tasks end to end on small real or synthetic text."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from rhn.tasks.cli import sample_main
from rhn.tasks.language_model import sample_text

from rhn.train.checkpoint import CheckpointError
from rhn.train.config import build_config
from rhn.train.evaluate import evaluate_checkpoint
from rhn.train.loop import train


def periodic_text(path: Path, period: int = 23, length: int = 6000) -> Path:
    rng = random.Random(0)
    unit = "".join(rng.choice("abcdefgh \n") for _ in range(period))
    path.write_text((unit * (length // period + 1))[:length])
    return path


def char_config(path: Path, *overrides: str):
    return build_config(
        {
            "task": "char_lm",
            "model": {"embed_size": 16, "hidden_size": 32, "depth": 2},
            "data": {"corpus": "file", "path": str(path), "batch_size": 8, "seq_len": 25},
            "optim": {"name": "adam", "lr": 0.01, "clip_norm": 1.0},
            "train": {"max_steps": 300, "max_epochs": None, "eval_every": 300, "progress": False},
        },
        list(overrides),
    )


def test_a_tiny_model_overfits_a_tiny_corpus_to_near_zero_loss(tmp_path: Path) -> None:
    # A period-23 sequence: once memorised, every next character is certain.
    # One evaluation column, so only its first characters lack the context to be certain.
    config = char_config(
        periodic_text(tmp_path / "c.txt"), "data.eval_batch_size=1", "data.valid_fraction=0.2"
    )
    result = train(config, tmp_path / "run")
    assert result.metrics["loss"] < 0.05, result.metrics
    assert result.metrics["bpc"] == pytest.approx(result.metrics["loss"] / math.log(2))


def test_sampling_is_seeded_and_continues_the_prompt(tmp_path: Path, capsys) -> None:
    corpus = periodic_text(tmp_path / "c.txt")
    train(char_config(corpus), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    text = corpus.read_text()
    a = sample_text(ckpt, text[:30], 40, temperature=1.0, seed=1)
    assert a == sample_text(ckpt, text[:30], 40, temperature=1.0, seed=1)
    assert a.startswith(text[:30]) and len(a) == 70
    # The memorised sequence continues: greedy sampling reproduces it.
    assert sample_text(ckpt, text[:30], 40, temperature=0) == text[:70]
    assert sample_main([str(tmp_path / "run"), "--prompt", text[:5], "--length", "10"]) == 0
    assert capsys.readouterr().out.startswith(text[:5])


def test_resuming_with_another_vocabulary_is_refused(tmp_path: Path) -> None:
    corpus = periodic_text(tmp_path / "c.txt")
    train(char_config(corpus, "train.max_steps=5"), tmp_path / "run")
    corpus.write_text(corpus.read_text().replace("a", "z"))
    with pytest.raises(CheckpointError, match="another vocabulary"):
        train(char_config(corpus, "train.max_steps=10"), tmp_path / "run")


def test_full_and_mc_dropout_evaluation(tmp_path: Path) -> None:
    corpus = periodic_text(tmp_path / "c.txt", period=97)
    config = char_config(
        corpus, "train.max_steps=60", "model.state_dropout=0.3", "model.output_dropout=0.3"
    )
    train(config, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    batched = evaluate_checkpoint(ckpt, "valid", "cpu")
    full = evaluate_checkpoint(ckpt, "valid", "cpu", batch_size=1)
    torch.manual_seed(0)
    mc = evaluate_checkpoint(ckpt, "valid", "cpu", mc_samples=4)
    # One column sees every token once with the state never reset: close to batched.
    assert abs(full["bpc"] - batched["bpc"]) < 0.1 * batched["bpc"]
    assert math.isfinite(mc["bpc"]) and mc["bpc"] != batched["bpc"]


def test_word_level_task_reports_perplexity(tmp_path: Path) -> None:
    corpus = tmp_path / "words.txt"
    rng = random.Random(1)
    corpus.write_text(
        "\n".join(" ".join(rng.choice(["a", "b", "c", "d"]) for _ in range(8)) for _ in range(400))
    )
    config = build_config(
        {
            "task": "word_lm",
            "model": {"embed_size": 8, "hidden_size": 8, "depth": 2, "tie_weights": True},
            "data": {"corpus": "file", "path": str(corpus), "batch_size": 4, "seq_len": 10},
            "train": {"max_steps": 20, "max_epochs": None, "eval_every": 20, "progress": False},
        }
    )
    result = train(config, tmp_path / "run")
    assert result.metrics["ppl"] == pytest.approx(math.exp(result.metrics["loss"]))
    assert (tmp_path / "run" / "tokenizer.json").exists()
