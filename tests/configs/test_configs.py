"""Every config under configs/ validates and smoke-runs a few steps on CPU, shrunk to toy
size (the recipe's structure — task, depth, dropout kinds, loss, schedule — is kept)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rhn.data import corpora
from rhn.data.synthetic import write_cifar, write_mnist, write_ptb
from rhn.train.config import load_config, read_config_file
from rhn.train.loop import train

# The smoke runs' CIFAR files are a few images: partial copies, as the loader warns.
pytestmark = pytest.mark.filterwarnings("ignore:cifar.* is a partial copy:UserWarning")

SPLIT_NAMES = ("train", "validation", "test")
CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
SMOKE = ["train.max_steps=3", "train.eval_every=3", "train.progress=false", "train.device=cpu"]
SMALL_DATA = [
    "data.batch_size=4",
    "data.seq_len=8",
    "data.eval_batch_size=2",
    "data.max_chars=20000",
]


def shrink(path: Path) -> list[str]:
    raw = read_config_file(path)
    model = raw.get("model") or {}
    if raw["task"] == "image_classification":
        return ["data.batch_size=10", "data.eval_batch_size=10"]
    if raw["task"] == "char_aware_lm":
        widths = model.get("widths", [1, 2, 3, 4, 5, 6])
        return [
            "model.hidden_size=16",
            f"model.filters={[3] * len(widths)}",
            *SMALL_DATA,
        ]
    out = ["model.hidden_size=16", *SMALL_DATA]
    if model.get("tie_weights") or "embed_size" in model:
        out.append("model.embed_size=16")
    return out


def corpus_of(path: Path) -> str:
    return (read_config_file(path).get("data") or {}).get("corpus", "builtin")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_smoke_runs_on_cpu(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = corpus_of(path)
    extra = []
    dataset = (read_config_file(path).get("data") or {}).get("dataset")
    if dataset:
        # Synthetic files in the official formats: the loaders run, real data isn't needed.
        if dataset == "mnist":
            write_mnist(tmp_path / "data")
        else:
            write_cifar(tmp_path / "data", dataset)
        extra.append(f"data.data_dir={tmp_path / 'data'}")
    elif corpus.startswith("ptb"):
        data_dir = os.environ.get("RHN_DATA_DIR")
        if not data_dir or not (Path(data_dir) / "ptb").is_dir():
            # Without the real files (they run in CI): a synthetic PTB in their formats.
            write_ptb(tmp_path / "data" / "ptb", chars=True)
            monkeypatch.setenv("RHN_DATA_DIR", str(tmp_path / "data"))
            monkeypatch.setenv("RHN_OFFLINE", "1")
    elif corpus == "hf":
        # A local dataset of WikiText's shape (rows are lines, blank rows between) in place
        # of the hub, which no machine here reaches.
        import datasets

        rows = ["", " = A heading = \n", "", " the cat sat on the <unk> . \n"] * 300
        splits = {name: datasets.Dataset.from_dict({"text": rows}) for name in SPLIT_NAMES}
        datasets.DatasetDict(splits).save_to_disk(tmp_path / "hf")
        extra += [f"data.path={tmp_path / 'hf'}", "data.hf_config=null"]
    elif corpus in ("enwik8", "text8"):
        # A synthetic file in the corpus's own format; the 90M/5M/5M split scaled down.
        monkeypatch.setattr(corpora, "HUTTER_SPLIT", (18000, 3000, 3000))
        (tmp_path / corpus).write_bytes(bytes(range(32, 127)) * 260)
        extra.append(f"data.path={tmp_path}")
    config = load_config(path, [*shrink(path), *extra, *SMOKE])
    result = train(config, tmp_path / "run")
    assert result.status == "finished" and result.position.step == 3
    assert result.position.skipped_steps == 0


@pytest.mark.parametrize("precision", ["bf16"])
def test_tiny_config_in_bf16_on_cpu(precision: str, tmp_path: Path) -> None:
    path = next(p for p in CONFIGS if p.stem == "char_lm_tiny")
    result = train(load_config(path, [*SMOKE, f"train.precision={precision}"]), tmp_path)
    assert result.status == "finished" and result.position.skipped_steps == 0
    # The same run in float32: close (3 steps from the same start), but not the same
    # numbers, so the low precision did take effect.
    exact = train(load_config(path, SMOKE), tmp_path / "fp32")
    loss, exact_loss = result.metrics["loss"], exact.metrics["loss"]
    assert loss != exact_loss and loss == pytest.approx(exact_loss, rel=0.05)


@pytest.mark.slow
def test_tiny_config_with_torch_compile(tmp_path: Path) -> None:
    path = next(p for p in CONFIGS if p.stem == "char_lm_tiny")
    result = train(load_config(path, [*SMOKE, "train.compile=true"]), tmp_path)
    assert result.status == "finished"


# The official README's PTB depth sweep: recurrence depth → units per layer (tied weights).
OFFICIAL_SWEEP_WIDTHS = {
    1: 1275, 2: 1180, 3: 1110, 4: 1050, 5: 1000, 6: 960, 7: 920, 8: 890, 9: 860, 10: 830
}  # fmt: skip


@pytest.mark.parametrize(("depth", "width"), sorted(OFFICIAL_SWEEP_WIDTHS.items()))
def test_the_ptb_depth_sweep_uses_the_official_widths(depth: int, width: int) -> None:
    sweep = load_config(CONFIGS[0].parent / f"ptb_rhn_depth{depth:02d}.yaml")
    sota = load_config(CONFIGS[0].parent / "ptb_rhn_d10.yaml")
    model = sweep.model
    assert (model.depth, model.hidden_size, model.embed_size) == (depth, width, width)
    assert model.tie_weights and model.loss_reduction == "sum_over_time"
    # Everything but depth and width is ptb_sota's recipe.
    assert (sweep.data, sweep.optim, sweep.train) == (sota.data, sota.optim, sota.train)
    assert (model.input_dropout, model.state_dropout, model.output_dropout) == (0.75, 0.25, 0.75)
    assert model.output_dropout_kind == "variational" and model.gate_bias == -2.0


# The Highway Networks authors' Caffe definitions: (recipe, solver lr, classifier std, first
# conv std). The CIFAR nets' Caffe first conv was N(0, 1), which diverges on our GCN'd images
# (see cifar10_highway_b.yaml), so those keep He normal.
CAFFE_NETS = [
    ("mnist_conv_highway_w16", 0.01, 0.1, None),
    ("mnist_conv_highway_w32", 0.01, 0.1, None),
    ("mnist_conv_plain_w16", 0.01, 0.1, None),
    ("cifar10_highway_a", 0.025, 0.05, None),
    ("cifar10_highway_b", 0.025, 0.05, None),
    ("cifar10_highway_c", 0.025, 0.05, None),
    ("cifar10_plain_b", 0.025, 0.05, None),
    ("cifar100_highway_b", 0.025, 0.05, None),
]


@pytest.mark.parametrize(("name", "lr", "classifier_std", "first_std"), CAFFE_NETS)
def test_the_highway_nets_use_the_authors_caffe_fillers_and_multipliers(
    name: str, lr: float, classifier_std: float, first_std: float | None
) -> None:
    config = load_config(CONFIGS[0].parent / f"{name}.yaml")
    model, optim = config.model, config.optim
    assert model.gate_init == "he_normal"  # "xavier" = He normal, for T as for H
    assert (model.classifier_init_std, model.classifier_decay_mult) == (classifier_std, 10.0)
    assert model.first_conv_init_std == first_std
    assert (optim.bias_lr_mult, optim.decay_biases) == (2.0, False)  # lr_mult 2, no decay
    assert (optim.name, optim.lr, optim.momentum, optim.nesterov) == ("sgd", lr, 0.9, True)
    assert optim.weight_decay == 1e-3 and config.data.batch_size == 100


def test_the_wikitext_recipes_read_the_hub_versions_the_peers_used() -> None:
    from rhn.models import LanguageModel

    counts = {}
    for name, subset in (
        ("wikitext2_rhn", "wikitext-2-v1"),
        ("wikitext2_lstm", "wikitext-2-v1"),
        ("wikitext103_rhn", "wikitext-103-v1"),
    ):
        config = load_config(CONFIGS[0].parent / f"{name}.yaml")
        assert config.task == "word_lm" and config.data.corpus == "hf"
        assert (config.data.path, config.data.hf_config) == ("Salesforce/wikitext", subset)
        if subset == "wikitext-2-v1":  # WikiText-2's 33,278 words
            model = LanguageModel(33278, config.model)
            counts[name] = sum(p.numel() for p in model.parameters())
    assert abs(counts["wikitext2_lstm"] / counts["wikitext2_rhn"] - 1) < 0.002
