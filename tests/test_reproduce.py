"""scripts/reproduce.py turns finished runs into the published-vs-ours table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _train_tiny(run: Path, *overrides: str) -> None:
    """char_lm_tiny trained into ``run`` with ``--set`` of each override."""
    config = str(ROOT / "configs" / "char_lm_tiny.yaml")
    sets = [arg for o in overrides for arg in ("--set", o)]
    train = subprocess.run(
        [sys.executable, "-m", "tasks", config, "--run-dir", str(run), *sets],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert train.returncode == 0, train.stderr


def _reproduce_module():
    """scripts/reproduce.py imported, for its rows' exact values."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproduce_table_from_a_finished_run(tmp_path: Path) -> None:
    from rhn.train.evaluate import evaluate_checkpoint, load_model

    runs = tmp_path / "runs"
    _train_tiny(
        runs / "tiny", "train.max_steps=10", "train.eval_every=5", "model.output_dropout=0.2"
    )
    # char_lm_tiny has no dropout: MC dropout would be K copies of the deterministic score
    _train_tiny(tmp_path / "plain" / "tiny", "train.max_steps=5", "train.eval_every=5")
    for where, extra, protocol in (
        (runs, [], "batch 1"),
        (runs, ["--batched"], "batched"),
        (runs, ["--mc", "2"], "batch 1, MC dropout 2 passes (evaluate_mc)"),
        (tmp_path / "plain", ["--mc", "2"], "batch 1 (no MC: no dropout)"),
        (runs, ["--no-eval"], "training log"),
    ):
        table = subprocess.run(
            [sys.executable, "scripts/reproduce.py", str(where), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert table.returncode == 0, table.stderr
        lines = table.stdout.strip().splitlines()
        assert lines[0].startswith("| run | recipe | metric | published | ours |")
        row = lines[2].split(" | ")
        assert row[0] == "| tiny" and row[1] == "char_lm_tiny" and row[2] == "bpc"
        assert float(row[4]) > 0 and row[6] == protocol and row[7].endswith("M")
    # Each protocol's number is that evaluation of the best checkpoint, scored here apart.
    reproduce, run = _reproduce_module(), runs / "tiny"
    best = run / "checkpoints" / "best.pt"

    def scored(split: str, **options: object) -> float:
        return evaluate_checkpoint(best, split, "cpu", **options)["bpc"]

    one = reproduce.run_row(run, "test")
    assert one["ours"] == scored("test", batch_size=1) != scored("valid", batch_size=1)
    assert reproduce.run_row(run, "valid")["ours"] == scored("valid", batch_size=1)
    batched = reproduce.run_row(run, "test", batched=True)["ours"]
    assert batched == scored("test") != one["ours"]
    mc = reproduce.run_row(run, "test", mc=2)["ours"]
    mc_options = {"batch_size": 1, "mc_protocol": "pass"}
    assert (
        mc
        == scored("test", mc_samples=2, **mc_options)
        != scored("test", mc_samples=1, **mc_options)
    )
    # Parameters as the model counts them (a tied tensor once), not the state dict's sum.
    model = load_model(best).model
    assert one["params"] == sum(p.numel() for p in model.parameters())


def _reproduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/reproduce.py", *args], cwd=ROOT, capture_output=True, text=True
    )


def _rows(stdout: str) -> dict[str, dict[str, str]]:
    lines = stdout.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]
    return {row["run"]: row for row in rows}


def test_published_numbers_stand_only_beside_the_recipe_as_published(tmp_path: Path) -> None:
    """A run's overrides that change it blank the published number and are listed; the
    step columns are the scored checkpoint's; a run without a checkpoint is skipped in one
    line; a path that is not there is refused with exit 2."""
    runs = tmp_path / "runs"
    # Diverging on purpose (Adam at lr 2, bpc rising from step 5): best.pt stays early.
    _train_tiny(runs / "tiny", "train.max_steps=20", "train.eval_every=5", "optim.lr=2.0")
    best_step = torch.load(runs / "tiny" / "checkpoints" / "best.pt", weights_only=True)["step"]
    # The same run filed as the RHN paper's enwik8 recipe (bpc too), as it is and changed,
    # against a folder of recipes where that recipe is the config the run was trained with;
    # and as text8's, whose recipe there differs from it in the learning rate.
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    shutil.copy(runs / "tiny" / "config.yaml", recipes / "enwik8_rhn_d10.yaml")
    edited = (runs / "tiny" / "config.yaml").read_text().replace("lr: 2.0", "lr: 0.002")
    (recipes / "text8_rhn_d10.yaml").write_text(edited)
    for name, recipe, overrides in (
        ("as_is", "enwik8_rhn_d10", ["train.progress=false", "data.data_dir=/moved"]),
        ("changed", "enwik8_rhn_d10", ["model.depth=2"]),
        ("edited", "text8_rhn_d10", []),
        ("edited_and_set", "text8_rhn_d10", ["optim.lr=2.0"]),  # the lr listed once
    ):
        shutil.copytree(runs / "tiny", runs / name)
        origin = {"config_file": f"configs/{recipe}.yaml", "overrides": overrides}
        (runs / name / "origin.json").write_text(json.dumps(origin))
    # Started with an override, resumed without it: the run is still a changed recipe.
    shutil.copytree(runs / "tiny", runs / "resumed")
    started = {"config_file": "configs/enwik8_rhn_d10.yaml", "overrides": ["optim.lr=0.5"]}
    resumed = {"config_file": "configs/enwik8_rhn_d10.yaml", "overrides": []}
    origin = {**resumed, "invocations": [started | {"step": 0}, resumed | {"step": 10}]}
    (runs / "resumed" / "origin.json").write_text(json.dumps(origin))
    # Started from the recipe's file, resumed by its name (rhn-train enwik8_rhn_d10): one
    # recipe, unchanged.
    shutil.copytree(runs / "tiny", runs / "by_name")
    by_path = {"config_file": "configs/enwik8_rhn_d10.yaml", "overrides": []}
    by_name = {"config_file": "enwik8_rhn_d10", "overrides": []}
    origin = {**by_name, "invocations": [by_path | {"step": 0}, by_name | {"step": 10}]}
    (runs / "by_name" / "origin.json").write_text(json.dumps(origin))
    # Resumed under an edited copy of the same name elsewhere: another file.
    shutil.copytree(runs / "tiny", runs / "elsewhere")
    mine = {"config_file": "my_edits/enwik8_rhn_d10.yaml", "overrides": []}
    origin = {**mine, "invocations": [by_path | {"step": 0}, mine | {"step": 10}]}
    (runs / "elsewhere" / "origin.json").write_text(json.dumps(origin))
    (runs / "live").mkdir()
    shutil.copy(runs / "tiny" / "config.yaml", runs / "live" / "config.yaml")  # no checkpoint

    table = _reproduce(str(runs), "--recipes", str(recipes))
    assert table.returncode == 0, table.stderr
    rows = _rows(table.stdout)
    assert set(rows) == {
        "tiny", "as_is", "changed", "edited", "edited_and_set", "resumed", "by_name", "elsewhere"
    }  # fmt: skip
    assert rows["edited_and_set"]["changes"] == "optim.lr=2.0"
    assert rows["elsewhere"]["published"] == "-"
    assert rows["elsewhere"]["changes"] == "config my_edits/enwik8_rhn_d10.yaml from step 10"
    assert rows["by_name"]["published"] == "1.270" and rows["by_name"]["changes"] == "—"
    assert rows["resumed"]["published"] == "-" and rows["resumed"]["changes"] == "optim.lr=0.5"
    assert rows["as_is"]["published"] == "1.270" and rows["as_is"]["changes"] == "—"
    assert rows["changed"]["published"] == "-" and rows["changed"]["changes"] == "model.depth=2"
    assert rows["edited"]["published"] == "-"
    assert rows["edited"]["changes"] == "optim.lr: 0.002 → 2.0 (config)"
    # The published number is a test number: the same run scored on valid stands alone.
    valid = _rows(_reproduce(str(runs), "--split", "valid", "--recipes", str(recipes)).stdout)
    assert valid["as_is"]["published"] == "-" and valid["as_is"]["changes"] == "—"
    # Against this checkout's recipes: a tiny char model is not the enwik8 recipe.
    real = _rows(_reproduce(str(runs / "as_is")).stdout)["as_is"]
    assert real["published"] == "-" and "model.hidden_size: 1500 → " in real["changes"]
    # A recipe that can't be read: the run is scored, its number not shown, and said why.
    (recipes / "enwik8_rhn_d10.yaml").write_text("base: gone.yaml\n")
    unread = _rows(_reproduce(str(runs / "as_is"), "--recipes", str(recipes)).stdout)["as_is"]
    assert unread["published"] == "-" and "not compared (ConfigError: " in unread["changes"]
    typo = _reproduce(str(runs), "--recipes", str(tmp_path / "recipse"))
    assert typo.returncode == 2 and "--recipes" in typo.stderr and "is not a folder" in typo.stderr
    assert rows["tiny"]["changes"] == "train.max_steps=20, train.eval_every=5, optim.lr=2.0"
    assert rows["tiny"]["steps"] == str(best_step) != "20"
    logged = [json.loads(line) for line in (runs / "tiny" / "metrics.jsonl").open()]
    # --no-eval: the lowest logged validation bpc and its step, not the last evaluation's
    best = min((r for r in logged if "bpc" in r), key=lambda r: r["bpc"])
    assert best["step"] == best_step != logged[-1]["step"]
    from_log = _rows(_reproduce(str(runs / "tiny"), "--no-eval").stdout)["tiny"]
    assert float(from_log["ours"]) == pytest.approx(best["bpc"], abs=5e-4)
    assert from_log["steps"] == str(best_step) and from_log["measured on"] == "best valid"
    assert table.stderr.strip().startswith(f"skipped {runs / 'live'}: CheckpointError: ")
    assert len(table.stderr.strip().splitlines()) == 1

    missing = _reproduce(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a run directory" in missing.stderr


def test_a_run_with_no_evaluation_yet_is_skipped_not_fatal(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _train_tiny(runs / "scored", "train.max_steps=6", "train.eval_every=3")
    _train_tiny(runs / "early", "train.max_steps=6", "train.eval_every=3")
    (runs / "early" / "metrics.jsonl").write_text("")  # as a run stopped before its first
    table = _reproduce(str(runs), "--no-eval")
    assert table.returncode == 0, table.stderr
    assert set(_rows(table.stdout)) == {"scored"}
    assert "skipped" in table.stderr and "no evaluation logged yet" in table.stderr


def test_a_rows_epoch_and_wall_time_are_its_scored_steps(tmp_path: Path) -> None:
    from rhn.train.evaluate import resolve_checkpoint

    reproduce, run = _reproduce_module(), tmp_path / "tiny"
    _train_tiny(run, "train.max_steps=4", "train.eval_every=2")
    step = torch.load(resolve_checkpoint(run), weights_only=True)["step"]
    # A log whose every evaluation has its own epoch and time (a tiny run's are all 0.0 min),
    # and an image run's accuracy, whose best is the highest.
    accuracies = {step - 2: 0.5, step: 0.7, step + 2: 0.6}
    records = [
        {"step": s, "epoch": s, "acc": a, "elapsed_s": 60.0 * s} for s, a in accuracies.items()
    ]
    torn = '{"step": 99, "epoch": 99, "acc": 0.9'  # a run killed mid-append: passed over
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + torn)
    row = reproduce.run_row(run, "test")
    assert (row["steps"], row["epochs"], row["wall time"]) == (step, step, f"{step:.1f} min")
    logged = reproduce.run_row(run, "test", evaluate=False)
    assert (logged["metric"], logged["ours"], logged["steps"]) == ("acc", 0.7, step)
