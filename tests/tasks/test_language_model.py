"""Language-modelling tasks end to end on small real or synthetic text."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from rhn.data.synthetic import ptb_char_text
from rhn.data.text_file import DataFileError
from rhn.data.vocab import vocab_from_json
from rhn.tasks.cli import export_main, sample_main
from rhn.tasks.language_model import sample_text
from rhn.train.checkpoint import CheckpointError
from rhn.train.config import build_config
from rhn.train.evaluate import evaluate_checkpoint, load_model
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
    # Any seed torch takes in its signed range, written as Python reads an integer.
    for seed in ("-1", "+5"):
        assert sample_main([str(tmp_path / "run"), "--length", "20", "--seed", seed]) == 0
        assert capsys.readouterr().out == sample_text(ckpt, None, 20, seed=int(seed)) + "\n"


def test_a_data_path_given_as_a_path_is_kept_as_its_string(tmp_path: Path) -> None:
    from rhn.tasks.language_model import LMDataConfig

    corpus = periodic_text(tmp_path / "c.txt")
    data = LMDataConfig(corpus="file", path=corpus)  # a Path, as Python callers have one
    assert data.path == str(corpus) and type(data.path) is str  # YAML writes a str


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63)])
def test_a_run_trains_at_either_end_of_the_seed_range(tmp_path: Path, seed: int) -> None:
    # Random-length BPTT derives its generator's seed from the run's, once beyond torch's
    # range for any seed over ~1.8e13 (a traceback at the first step).
    corpus = periodic_text(tmp_path / "c.txt")
    overrides = ("train.max_steps=3", "data.variable_length=true", f"train.seed={seed}")
    train(char_config(corpus, *overrides), tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


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
    mc = evaluate_checkpoint(ckpt, "valid", "cpu", mc_samples=4)
    per_window = evaluate_checkpoint(ckpt, "valid", "cpu", mc_samples=4, mc_protocol="window")
    # One column sees every token once with the state never reset: close to batched.
    assert abs(full["bpc"] - batched["bpc"]) < 0.1 * batched["bpc"]
    assert math.isfinite(mc["bpc"]) and mc["bpc"] != batched["bpc"]
    assert (mc["mc_kept"], mc["mc_rejected"]) == (4, 0)  # evaluate_mc's protocol by default
    assert mc == evaluate_checkpoint(ckpt, "valid", "cpu", mc_samples=4)  # seeded passes
    assert math.isfinite(per_window["bpc"]) and "mc_kept" not in per_window
    with pytest.raises(ValueError, match="mc_protocol must be one of"):
        evaluate_checkpoint(ckpt, "valid", "cpu", mc_samples=4, mc_protocol="masks")


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_a_backend_named_in_the_config_trains_and_evaluates(tmp_path: Path, backend: str) -> None:
    # Gate activity needs the reference recurrence: a run that named the fused backend keeps
    # it for evaluation (no gate means), with the same loss as the default run.
    corpus = periodic_text(tmp_path / "c.txt")
    overrides = ["train.max_steps=20", "train.eval_every=20", "model.state_dropout=0.2"]
    named = train(char_config(corpus, *overrides, f"model.rnn_backend={backend}"), tmp_path / "a")
    default = train(char_config(corpus, *overrides), tmp_path / "b").metrics
    assert named.metrics["loss"] == pytest.approx(default["loss"], rel=1e-5)
    gate_keys = {"gate_mean/depth0", "gate_mean/depth1"}
    assert gate_keys <= set(default)
    assert (gate_keys <= set(named.metrics)) == (backend == "reference")


def test_bits_per_character_are_of_characters(tmp_path: Path) -> None:
    # char_lm on word or subword tokens would report bits per token as "bpc": refused
    from rhn.train.schema import ConfigError

    corpus = tmp_path / "words.txt"
    corpus.write_text("a b c d\n" * 50)
    config = build_config(
        {
            "task": "char_lm",
            "data": {"corpus": "file", "path": str(corpus), "level": "word"},
            "train": {"max_steps": 2, "max_epochs": None, "progress": False},
        }
    )
    with pytest.raises(ConfigError, match=r"data.level: 'word' with task char_lm .* bpc\) is not"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()


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


def corpus_folder(root: Path, *, unseen: str = "") -> Path:
    """A word corpus kept one file per split, as PTB is; ``unseen`` ends the test split."""
    rng = random.Random(3)
    words = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "log", "red", "big"]
    root.mkdir()
    for split, lines in (("train", 400), ("valid", 60), ("test", 60)):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(lines))
        (root / f"{split}.txt").write_text(text + "\n" + (unseen if split == "test" else ""))
    return root


def word_run(tmp_path: Path, task: str, model: dict) -> tuple[Path, Path]:
    corpus = corpus_folder(tmp_path / "corpus")
    config = build_config(
        {
            "task": task,
            "model": model,
            "data": {"corpus": "file", "path": str(corpus), "batch_size": 4, "seq_len": 10},
            "optim": {"name": "adam", "lr": 0.01},
            "train": {"max_steps": 8, "max_epochs": None, "eval_every": 8, "progress": False},
        }
    )
    run = tmp_path / "run"
    train(config, run)
    return corpus, run


@pytest.mark.parametrize(
    ("task", "model"),
    [
        ("word_lm", {"embed_size": 12, "hidden_size": 12, "depth": 2}),
        (
            "char_aware_lm",
            {"hidden_size": 12, "num_layers": 1, "widths": [1, 2], "filters": [5, 6],
             "char_embed_size": 4, "max_word_length": 8},
        ),
    ],
)  # fmt: skip
def test_a_trained_model_needs_no_corpus_and_eval_reads_only_its_split(
    tmp_path: Path, task: str, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, run = word_run(tmp_path, task, model)
    checkpoint = run / "checkpoints" / "best.pt"
    before = evaluate_checkpoint(checkpoint, "valid", "cpu")
    loaded = load_model(checkpoint)
    prompt = torch.tensor([[1], [2], [3]])
    expected = loaded.model(prompt)[0]

    # Evaluating the valid split reads valid.txt alone, and in the saved vocabulary.
    (corpus / "train.txt").unlink()
    (corpus / "test.txt").unlink()
    assert evaluate_checkpoint(checkpoint, "valid", "cpu") == before
    with pytest.raises(DataFileError, match=r"has no test\.txt"):
        evaluate_checkpoint(checkpoint, "test", "cpu")

    # With no corpus at all: loading, sampling and export work from the checkpoint alone.
    shutil.rmtree(corpus)
    again = load_model(checkpoint)
    assert type(again.model) is type(loaded.model)
    torch.testing.assert_close(again.model(prompt)[0], expected, rtol=0, atol=0)
    assert sample_main([str(run), "--prompt", "the cat", "--length", "5"]) == 0
    assert capsys.readouterr().out.startswith("the cat ")
    exported = tmp_path / "w.safetensors"
    assert export_main([str(run), str(exported)]) == 0
    # The export alone rebuilds the model, with its vocabulary: it held the weights only.
    from_file = load_model(exported)
    assert (from_file.step, from_file.task_state) == (again.step, again.task_state)
    torch.testing.assert_close(from_file.model(prompt)[0], expected, rtol=0, atol=0)
    samples = []
    for path in (exported, run):
        assert sample_main([str(path), "--prompt", "the", "--length", "5", "--seed", "3"]) == 0
        samples.append(capsys.readouterr().out)
    assert samples[0] == samples[1] and samples[0].startswith("the ")
    if task == "char_aware_lm":
        # The character table is rebuilt from the saved words, equal to the trained one.
        saved = torch.load(checkpoint, weights_only=True)
        assert torch.equal(again.model.word_chars, saved["model"]["word_chars"])
        vocab = vocab_from_json(saved["task_state"]["vocab"])
        assert saved["model_meta"] == {"words": vocab.tokens}


def test_a_format_1_checkpoint_still_loads(tmp_path: Path) -> None:
    # Format 1 saved no model_meta: the task recovers it from the saved vocabulary.
    _, run = word_run(tmp_path, "word_lm", {"embed_size": 8, "hidden_size": 8, "depth": 1})
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    vocab_size = ckpt["model_meta"]["vocab_size"]
    del ckpt["model_meta"]
    ckpt["format_version"] = 1
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    loaded = load_model(old)
    assert loaded.model.decoder.out_features == vocab_size
    assert sample_text(old, "the", 3).startswith("the ")


def tiny_run(tmp_path: Path, corpus: Path, task: str) -> Path:
    """Two steps of a tiny model on ``corpus``: enough for a checkpoint with a vocabulary."""
    config = build_config(
        {
            "task": task,
            "model": {"embed_size": 8, "hidden_size": 8, "depth": 1},
            "data": {"corpus": "file", "path": str(corpus), "batch_size": 4, "seq_len": 10},
            "train": {"max_steps": 2, "max_epochs": None, "eval_every": 2, "progress": False},
        }
    )
    train(config, tmp_path / "run")
    return tmp_path / "run"


def sample_warnings(run: Path, prompt: str) -> list[str]:
    """The warnings rhn-sample gives for ``prompt`` (it still samples)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sample_main([str(run), "--prompt", prompt, "--length", "3"]) == 0
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def sample_refusal(run: Path, prompt: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The one line rhn-sample exits 2 with for ``prompt``."""
    capsys.readouterr()
    assert sample_main([str(run), "--prompt", prompt, "--length", "3"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    return line


def test_the_command_prints_a_warning_as_one_line(tmp_path: Path) -> None:
    # a test word training lacks: the vocabulary has <unk>
    run = tiny_run(tmp_path, corpus_folder(tmp_path / "corpus", unseen="zebra\n"), "word_lm")
    code = "import sys; from rhn.tasks.cli import sample_main; sys.exit(sample_main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(run), "--prompt", "xyzzy cat", "--length", "3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: the prompt has 1 token(s) the model's vocabulary doesn't hold, each read as "
        "the unknown token: 'xyzzy'"
    ]


def test_sampling_warns_once_naming_the_prompt_words_the_vocabulary_lacks(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, corpus_folder(tmp_path / "corpus", unseen="zebra\n"), "word_lm")
    assert sample_warnings(run, "The xyzzy cat Xyzzy") == [
        "the prompt has 3 token(s) the model's vocabulary doesn't hold, each read as the "
        "unknown token: 'The', 'xyzzy', 'Xyzzy'; the vocabulary holds 'the'"
    ]
    assert sample_warnings(run, "the cat") == []
    many = " ".join(f"w{i}" for i in range(8))
    assert sample_warnings(run, many) == [
        "the prompt has 8 token(s) the model's vocabulary doesn't hold, each read as the "
        "unknown token: 'w0', 'w1', 'w2', 'w3', 'w4' and 3 more"
    ]


def test_a_vocabulary_without_unknown_refuses_a_prompt_word_it_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every held-out word is a training word: no <unk> to read 'xyzzy' as
    run = tiny_run(tmp_path, corpus_folder(tmp_path / "corpus"), "word_lm")
    assert sample_refusal(run, "The xyzzy cat", capsys) == (
        "error: the prompt has 2 token(s) the model's vocabulary doesn't hold, and it has no "
        "unknown token to read them as: 'The', 'xyzzy'; the vocabulary holds 'the'"
    )
    assert sample_warnings(run, "the cat") == []


def test_sampling_a_ptb_char_model_says_how_to_write_the_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # PTB's character files: characters separated by spaces, _ between words (ptb_char).
    corpus = corpus_folder(tmp_path / "words")
    spaced = tmp_path / "chars"
    spaced.mkdir()
    for split in ("train", "valid", "test"):
        (spaced / f"{split}.txt").write_text(ptb_char_text((corpus / f"{split}.txt").read_text()))
    run = tiny_run(tmp_path, spaced, "word_lm")
    assert sample_refusal(run, "the cat", capsys) == (
        "error: the prompt has 2 token(s) the model's vocabulary doesn't hold, and it has no "
        "unknown token to read them as: 'the', 'cat'; this model reads PTB's character format "
        "(characters separated by spaces, '_' between words): write the prompt as "
        "'t h e _ c a t'"
    )
    assert sample_warnings(run, "t h e _ c a t") == []
    # Already in that format: not re-spaced into another prompt; the symbol it lacks named.
    assert sample_refusal(run, "t h e _ C a t", capsys) == (
        "error: the prompt has 1 token(s) the model's vocabulary doesn't hold, and it has no "
        "unknown token to read them as: 'C'; the vocabulary holds 'c'"
    )


def test_sampling_a_char_model_names_the_characters_it_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tiny_run(tmp_path, corpus_folder(tmp_path / "corpus"), "char_lm")
    assert sample_refusal(run, "the CAT!", capsys) == (
        "error: the prompt has 4 token(s) the model's vocabulary doesn't hold, and it has no "
        "unknown token to read them as: 'C', 'A', 'T', '!'; the vocabulary holds 'c', 'a', 't'"
    )
    assert sample_warnings(run, "the cat") == []


def test_a_global_batch_that_does_not_divide_among_the_processes_is_refused(
    tmp_path: Path,
) -> None:
    from rhn.tasks.language_model import CharLMTask
    from rhn.train.schema import ConfigError

    config = char_config(periodic_text(tmp_path / "c.txt"), "data.batch_size=9")
    with pytest.raises(ConfigError, match=r"data\.batch_size \(9\) is the global batch: .* 2 "):
        CharLMTask(config, rank=0, world_size=2)
    # 8 columns make 4 per process; each rank's stream holds its own share.
    task = CharLMTask(char_config(tmp_path / "c.txt"), rank=1, world_size=2)
    assert task.train_stream.columns.shape[1] == 4


def test_train_loss_is_logged_per_token_whatever_the_loss_reduction(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def curve(run: Path) -> list[tuple[int, float]]:
        acc = EventAccumulator(str(run))
        acc.Reload()
        return [(e.step, e.value) for e in acc.Scalars("train/loss")]

    # Summed over the 25 steps of a window at lr / 25 is the same SGD as the mean at lr, so
    # the two runs take the same steps and must log the same (per-token) training loss.
    corpus = periodic_text(tmp_path / "c.txt")
    common = ["optim.name=sgd", "optim.clip_norm=null", "train.max_steps=20", "train.log_every=5"]
    train(char_config(corpus, *common, "optim.lr=0.5"), tmp_path / "mean")
    summed = ["model.loss_reduction=sum_over_time", "optim.lr=0.02"]
    train(char_config(corpus, *common, *summed), tmp_path / "summed")
    mean, summed_curve = curve(tmp_path / "mean"), curve(tmp_path / "summed")
    assert [s for s, _ in mean] == [s for s, _ in summed_curve] == [5, 10, 15, 20]
    for (_, a), (_, b) in zip(mean, summed_curve, strict=True):
        assert b == pytest.approx(a, rel=1e-4)


def test_a_subword_model_continues_an_open_line(tmp_path: Path) -> None:
    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat\n" * 400)
    config = build_config(
        {
            "task": "word_lm",
            "model": {"embed_size": 16, "hidden_size": 32, "depth": 2},
            "data": {
                "corpus": "file",
                "path": str(corpus),
                "level": "bpe",
                "vocab_size": 24,
                "batch_size": 8,
                "seq_len": 20,
            },
            "optim": {"name": "adam", "lr": 0.01, "clip_norm": 1.0},
            "train": {"max_steps": 150, "max_epochs": None, "eval_every": 150, "progress": False},
        }
    )
    train(config, tmp_path / "run")
    # Mid-line, the prompt's line stays open (no <eos> closes it) and the pieces join the
    # prompt's words: greedy sampling continues the memorised sentence.
    sample = sample_text(tmp_path / "run" / "checkpoints" / "last.pt", "the cat sat", 12, 0.0)
    assert sample.startswith("the cat sat on the mat\nthe cat"), repr(sample)


@pytest.mark.parametrize(
    ("task", "unseen"),
    [
        ("char_lm", ""),  # every held-out symbol is a training one
        ("char_lm", "é!\n"),  # two the test split alone has: the earlier unknown symbol
        ("word_lm", ""),
        ("word_lm", "zebra\n"),  # needs <unk> now too: the vocabulary is the earlier one
    ],
)
def test_a_run_begun_with_an_unknown_symbol_in_every_vocabulary_resumes_in_that_vocabulary(
    task: str, unseen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhn.data import lm_corpus
    from rhn.data.vocab import CharVocab, WordVocab

    corpus = corpus_folder(tmp_path / "corpus", unseen=unseen)

    def earlier_vocab(source, texts):  # as every vocabulary was built before: an unknown first
        kind = CharVocab if task == "char_lm" else WordVocab
        return kind.from_text(texts["train"], unknown=True)

    def config(steps: int):
        return build_config(
            {
                "task": task,
                "model": {"embed_size": 8, "hidden_size": 8, "depth": 1},
                "data": {"corpus": "file", "path": str(corpus), "batch_size": 4, "seq_len": 10},
                "train": {"max_steps": steps, "max_epochs": None, "eval_every": 2},
                "optim": {"name": "adam", "lr": 0.01},
            }
        )

    with monkeypatch.context() as before:
        before.setattr(lm_corpus, "build_vocab", earlier_vocab)
        before.setenv("RHN_CACHE_DIR", str(tmp_path / "cache-before"))
        whole = train(config(4), tmp_path / "whole")
        train(config(2), tmp_path / "resumed")
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path / "cache-now"))
    level = "char" if task == "char_lm" else "word"
    vocab_now = lm_corpus.load_tokenized(config(4).data.source(level))[0]
    splits = lm_corpus.read_splits(config(4).data.source(level))
    resumed = train(config(4), tmp_path / "resumed")
    # the same ids and model as an uninterrupted run in the earlier vocabulary
    assert resumed.position.step == 4 and resumed.metrics == whole.metrics
    saved = load_model(tmp_path / "resumed" / "checkpoints" / "last.pt").task_state["vocab"]
    saved = vocab_from_json(saved)
    assert saved.has_unknown and saved.to_json() == earlier_vocab(None, splits).to_json()
    assert vocab_now.has_unknown is (task == "word_lm" and bool(unseen))
    if task == "char_lm":  # the test split is read in the earlier vocabulary: é and ! unknown
        assert (saved.encode(splits["test"]) == saved.unk).sum() == (2 if unseen else 0)
    metrics = evaluate_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt", "test", "cpu")
    assert math.isfinite(metrics["loss"])


def test_the_default_prompt_starts_a_line_or_for_characters_without_one_a_space(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # text8's alphabet: letters and spaces, no line break (nor an unknown symbol)
    text8 = tmp_path / "text8"
    text8.mkdir()
    for split in ("train", "valid", "test"):
        (text8 / f"{split}.txt").write_text(" the cat sat on the mat" * 40)
    run = tiny_run(tmp_path / "chars", text8, "char_lm")
    capsys.readouterr()
    assert sample_main([str(run), "--length", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(" ") and len(out) == 1 + 5 + 1  # the prompt, 5 characters, print's \n


def test_a_subword_model_samples_from_the_default_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat\n" * 200)
    config = build_config(
        {
            "task": "word_lm",
            "model": {"embed_size": 8, "hidden_size": 8, "depth": 1},
            "data": {"corpus": "file", "path": str(corpus), "level": "bpe", "vocab_size": 24},
            "train": {"max_steps": 2, "max_epochs": None, "eval_every": 2, "progress": False},
        }
    )
    train(config, tmp_path / "run")
    capsys.readouterr()
    # sentencepiece skips a blank line: the line break starts as <eos> (was "encodes to no
    # tokens")
    assert sample_main([str(tmp_path / "run"), "--length", "4"]) == 0
    assert capsys.readouterr().out.startswith("\n")


def test_scoring_a_split_with_symbols_the_saved_vocabulary_lacks_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rhn.tasks.cli import eval_main

    corpus = corpus_folder(tmp_path / "corpus")
    run = tiny_run(tmp_path, corpus, "char_lm")
    with (corpus / "test.txt").open("a") as f:
        f.write("the café\n")
    capsys.readouterr()
    assert eval_main([str(run), "--split", "test"]) == 2
    (err,) = capsys.readouterr().err.splitlines()
    assert err == (
        f"error: the test split of file {corpus}: the text has 2 symbol(s) this vocabulary "
        f"doesn't hold: 'f', 'é' (it has no unknown symbol: its training data had no use for "
        f"one); the vocabulary saved with the model was built from other data"
    )


def test_a_text_file_is_scored_as_the_split_it_holds_and_as_one_pass_of_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rhn.data.lm_corpus import read_splits
    from rhn.tasks.cli import eval_main
    from rhn.tasks.language_model import evaluate_text

    corpus = periodic_text(tmp_path / "c.txt", period=31)
    train(char_config(corpus, "train.max_steps=40"), tmp_path / "run")
    run = tmp_path / "run"
    loaded = load_model(run)
    valid = read_splits(loaded.config.data.source("char"), splits=("valid",))["valid"]
    (tmp_path / "valid.txt").write_text(valid)
    scored = evaluate_text(run, tmp_path / "valid.txt", "cpu")
    split = evaluate_checkpoint(run, "valid", "cpu", batch_size=1)
    assert scored["loss"] == pytest.approx(split["loss"], rel=1e-6)
    assert scored["tokens"] == len(valid) and scored["text"] == str(tmp_path / "valid.txt")
    # Any text: the mean NLL of each character after all before it, from one pass.
    text = "a bad egg\nhe fed a cage\n"
    (tmp_path / "mine.txt").write_text(text)
    symbols = vocab_from_json(loaded.task_state["vocab"]).symbols
    ids = torch.tensor([symbols.index(c) for c in text])  # a character's id is its place
    with torch.no_grad():
        logits, _ = loaded.model.eval()(
            ids.view(-1, 1), loaded.model.initial_state(1, torch.device("cpu"))
        )
    expected = torch.nn.functional.cross_entropy(logits[:-1, 0].double(), ids[1:]).item()
    mine = evaluate_text(run, tmp_path / "mine.txt", "cpu")
    assert mine["loss"] == pytest.approx(expected, rel=1e-5) and mine["tokens"] == len(text)
    assert mine["scored_tokens"] == len(text) - 1  # the first character is context only
    # At batch 4: 24 characters in 4 columns of 6, each column's first unscored.
    assert evaluate_text(run, tmp_path / "mine.txt", "cpu", batch_size=4)["scored_tokens"] == 20
    assert mine["bpc"] == pytest.approx(expected / math.log(2), rel=1e-5)
    # The same through rhn-eval --text: one JSON line.
    assert eval_main([str(run), "--text", str(tmp_path / "mine.txt"), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (
        printed["loss"] == pytest.approx(mine["loss"], rel=1e-9) and printed["text"] == mine["text"]
    )


def test_a_text_file_the_model_cannot_read_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rhn.tasks.cli import eval_main
    from rhn.tasks.language_model import evaluate_text

    corpus = periodic_text(tmp_path / "c.txt")
    train(char_config(corpus, "train.max_steps=2"), tmp_path / "run")
    capsys.readouterr()
    run = tmp_path / "run"
    (tmp_path / "odd.txt").write_text("a bad\N{SNOWMAN}egg\n")  # the vocabulary has no unknown
    with pytest.raises(
        DataFileError,
        match=r"text file .*odd.txt has 1 token\(s\) the model's vocabulary doesn't hold, "
        r"and it has no unknown token to read them as: '☃'$",
    ):
        evaluate_text(run, tmp_path / "odd.txt", "cpu")
    with pytest.raises(DataFileError, match="does not exist"):
        evaluate_text(run, tmp_path / "missing.txt", "cpu")
    (tmp_path / "one.txt").write_text("a")
    with pytest.raises(
        DataFileError, match=r"text file .*one.txt has 1 tokens, too few .* use a longer text or"
    ):
        evaluate_text(run, tmp_path / "one.txt", "cpu")
    with pytest.raises(DataFileError, match=r"data file .* is a directory, not a file"):
        evaluate_text(run, tmp_path, "cpu")
    # A char model trained on '\n' line breaks, given Windows's: the hint says so.
    (tmp_path / "crlf.txt").write_bytes(b"a bad egg\r\nhe fed\r\n")
    with pytest.raises(DataFileError, match=r"'\\r'; the text has Windows line breaks"):
        evaluate_text(run, tmp_path / "crlf.txt", "cpu")
    for argv, message in [
        (["--text", str(tmp_path / "odd.txt")], "has no unknown token to read them as"),
        (["--text", str(tmp_path / "missing.txt")], "missing.txt does not exist"),
    ]:
        assert eval_main([str(run), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as exit_info:  # a split or a file, not both
        eval_main([str(run), "--text", str(tmp_path / "odd.txt"), "--split", "test"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_word_models_text_file_reads_unknown_words_as_unk_with_a_warning(tmp_path: Path) -> None:
    from rhn.tasks.language_model import evaluate_text

    words = "the cat sat on the mat\na dog ate the cat\n"
    (tmp_path / "w.txt").write_text(words * 300 + "the <unk> sat\n" * 20)
    config = build_config(
        {
            "task": "word_lm",
            "model": {"embed_size": 8, "hidden_size": 8},
            "data": {"corpus": "file", "path": str(tmp_path / "w.txt"), "batch_size": 4},
            "train": {"max_steps": 2, "progress": False},
        }
    )
    train(config, tmp_path / "run")
    (tmp_path / "mine.txt").write_text("the cow sat on the mat\n")
    with pytest.warns(
        UserWarning,
        match=r"text file .*mine.txt has 1 token\(s\).*read as the unknown token: 'cow'",
    ):
        scored = evaluate_text(tmp_path / "run", tmp_path / "mine.txt", "cpu")
    assert scored["tokens"] == 7 and math.isfinite(scored["ppl"])  # six words and <eos>
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate_text(tmp_path / "run", tmp_path / "mine.txt", "cpu")
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]  # the caller's line
