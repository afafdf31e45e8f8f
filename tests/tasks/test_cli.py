"""rhn-train / rhn-eval / rhn-export as a user calls them, errors included."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rhn.tasks.cli import eval_main, export_main, train_main
from rhn.train.evaluate import resolve_checkpoint
from rhn.train.seeding import SEEDS

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "char_lm_tiny.yaml")
SHORT = [
    "--set",
    "train.max_steps=12",
    "--set",
    "train.eval_every=6",
    "--set",
    "train.progress=false",
]


def test_train_eval_export_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["status"] == "finished" and trained["step"] == 12

    assert eval_main([str(run), "--split", "valid"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["split"] == "valid" and evaluated["checkpoint"].endswith("best.pt")
    assert evaluated["bpc"] == pytest.approx(min(trained["bpc"], evaluated["bpc"]))
    assert eval_main([str(run / "checkpoints" / "last.pt"), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 12
    assert eval_main([str(run), "--split", "test", "--batch-size", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"error: the test split has \d+ tokens, too few for batch_size = 100000 columns of at "
        r"least 2 tokens; use a larger corpus or a smaller batch_size",
        err,
    ), err

    out = tmp_path / "weights.safetensors"
    assert export_main([str(run), str(out)]) == 0
    from safetensors.torch import load_file

    exported = load_file(str(out))
    saved = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    # char_lm_tiny ties no weights (embed_size != hidden_size): every tensor, once, by name.
    assert saved and set(exported) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(exported[name], tensor), name


def test_mc_passes_on_per_step_dropout_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    ordinary = ["--set", "model.output_dropout=0.3", "--set", "model.output_dropout_kind=ordinary"]
    assert train_main([TINY, "--run-dir", str(run), *SHORT, *ordinary]) == 0
    capsys.readouterr()
    assert eval_main([str(run), "--split", "test", "--mc", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MC protocol 'pass' keeps one set of per-sequence masks")
    assert "use mc_protocol 'window'" in err and len(err.splitlines()) == 1
    assert eval_main([str(run), "--split", "test", "--mc", "2", "--mc-protocol", "window"]) == 0


def test_mc_dropout_of_a_model_without_dropout_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0  # char_lm_tiny: no dropout
    capsys.readouterr()
    for protocol in ("pass", "window"):
        assert eval_main([str(run), "--split", "test", "--mc", "2", "--mc-protocol", protocol]) == 2
        (err,) = capsys.readouterr().err.splitlines()
        assert err == (
            "error: MC dropout averages passes with dropout on, and this model has none (every "
            "dropout rate is 0): its 2 passes would each give the deterministic score; "
            "evaluate without MC dropout (no --mc)"
        )


def test_a_run_whose_data_moved_is_evaluated_from_rhn_data_dir_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhn.data.synthetic import write_ptb

    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.setenv("RHN_OFFLINE", "1")
    write_ptb(tmp_path / "mine", chars=True)
    run = tmp_path / "run"
    data = ["--set", "data.corpus=ptb_char", "--set", f"data.path={tmp_path / 'mine'}"]
    assert train_main([TINY, "--run-dir", str(run), *SHORT, *data]) == 0
    capsys.readouterr()
    # rhn-eval reads the saved data.path, which it cannot override: the folder is gone, so
    # RHN_DATA_DIR's copy is read — and said, once, as a typo in data.path would be.
    (tmp_path / "shared").mkdir()
    (tmp_path / "mine").rename(tmp_path / "shared" / "ptb")
    env = {**os.environ, "RHN_DATA_DIR": str(tmp_path / "shared")}
    code = "import sys; from rhn.tasks.cli import eval_main; sys.exit(eval_main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(run), "--split", "test"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shared, cache = tmp_path / "shared", Path(env["RHN_CACHE_DIR"]) / "downloads" / "ptb_char"
    assert done.stderr.splitlines() == [
        f"warning: ptb_char: data.path {tmp_path / 'mine'} is not a folder; ptb_char is looked "
        f"for in {shared}, {shared / 'ptb'}, {cache} instead"
    ]
    assert json.loads(done.stdout)["split"] == "test"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optim.lrr=1"], "did you mean 'lr'"),
        (
            ["--set", "data.corpus=file", "--set", "data.path=/nonexistent/corpus.txt"],
            "/nonexistent/corpus.txt does not exist",
        ),
        (["--set", "data.path=x.txt"], "has no use with data.corpus 'builtin'"),
        (
            ["--set", "data.corpus=ptb_word", "--set", "data.path=/"],  # a folder without it
            "could not find ptb.train.txt",
        ),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.setenv("RHN_OFFLINE", "1")
    assert train_main([TINY, "--run-dir", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_a_damaged_best_pt_is_passed_over_for_last_pt_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    best, last = run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt"
    best.write_bytes(best.read_bytes()[:1000])  # a copy cut short
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"best\.pt is not a whole checkpoint .* using .*last\.pt"):
        assert eval_main([str(run), "--split", "valid"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == str(last)
    # torch's legacy (non-zip) format is a whole checkpoint too: scored, no warning.
    legacy = tmp_path / "legacy"
    shutil.copytree(run, legacy)
    kept = torch.load(last, weights_only=True)
    torch.save(kept, legacy / "checkpoints" / "best.pt", _use_new_zipfile_serialization=False)
    assert resolve_checkpoint(legacy) == legacy / "checkpoints" / "best.pt"
    last.write_bytes(last.read_bytes()[:1000])  # both damaged: best.pt's error, as before
    assert eval_main([str(run), "--split", "valid"]) == 2
    assert "best.pt is corrupt or truncated" in capsys.readouterr().err


def test_resume_with_another_model_config_or_a_corrupt_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    capsys.readouterr()
    assert train_main([TINY, "--run-dir", str(run), *SHORT, "--set", "model.depth=3"]) == 2
    assert "another model config (model.depth: 2 → 3)" in capsys.readouterr().err
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 2
    err = capsys.readouterr().err
    assert "last.pt is corrupt or truncated" in err and "copy best.pt over it" in err
    assert eval_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # A file that is no checkpoint: said so, with no advice to delete it (it is the user's).
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert eval_main([str(notes)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt is corrupt or truncated, or not a checkpoint" in err and "delete" not in err


def test_mc_dropout_on_an_image_classifier_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhn.data.synthetic import write_mnist

    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    write_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    config = tmp_path / "mlp.yaml"
    config.write_text(
        "task: image_classification\nmodel: {arch: mlp, depth: 2, width: 8}\n"
        f"data: {{data_dir: {tmp_path / 'mnist'}, batch_size: 5}}\n"
        "train: {max_epochs: 1, progress: false}\n"
    )
    assert train_main([str(config), "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert eval_main([str(tmp_path / "run"), "--split", "test", "--mc", "3"]) == 2
    err = capsys.readouterr().err
    assert "MC dropout (mc_samples, rhn-eval --mc) is for language models" in err
    assert "'image_classification' run" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "command, argv, message",
    [
        ("eval", ["--batch-size", "0"], "--batch-size: must be an integer >= 1, got '0'"),
        ("eval", ["--batch-size", "-1"], "--batch-size: must be an integer >= 1, got '-1'"),
        ("eval", ["--mc", "-3"], "--mc: must be an integer >= 0, got '-3'"),
        (
            "eval",
            ["--device", "tpu9"],
            "--device: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got",
        ),
        ("sample", ["--length", "0"], "--length: must be an integer >= 1, got '0'"),
        ("sample", ["--temperature", "-1"], "--temperature: must be a finite number >= 0"),
        ("sample", ["--temperature", "nan"], "--temperature: must be a finite number >= 0"),
        ("sample", ["--top-k", "0"], "--top-k: must be an integer >= 1, got '0'"),
        ("sample", ["--top-p", "0"], "--top-p: must be a number in (0, 1], got '0'"),
        ("sample", ["--top-p", "1.5"], "--top-p: must be a number in (0, 1], got '1.5'"),
        ("sample", ["--top-p", "nan"], "--top-p: must be a number in (0, 1], got 'nan'"),
        # torch takes no seed beyond 64 bits (a traceback, or a line that named no option).
        ("eval", ["--mc-seed", str(2**64)], f"--mc-seed: must be {SEEDS}, got '{2**64}'"),
        ("sample", ["--seed", str(-(2**63) - 1)], f"--seed: must be {SEEDS}, got '{-(2**63) - 1}'"),
        ("sample", ["--seed", "1.5"], f"--seed: must be {SEEDS}, got '1.5'"),
        ("sample", ["--seed", str(2**63)], f"--seed: must be {SEEDS}, got '{2**63}'"),
    ],
)
def test_eval_and_sample_refuse_bad_options_with_exit_2(
    command: str,
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rhn.tasks.cli import sample_main

    main = eval_main if command == "eval" else sample_main
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    # One line, as every other error (argparse printed its whole usage first).
    assert message in err and len(err.splitlines()) == 1
    assert err.startswith(f"rhn-{command}: error: ") and err.endswith(
        f"(see rhn-{command} --help)\n"
    )


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_ctrl_c_in_eval_or_sample_is_one_line_with_the_shells_status(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rhn.tasks import cli

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # what Python raises on Ctrl-C, mid-evaluation or sampling

    def interrupted_sample(*args: object, **kwargs: object) -> Iterator[str]:
        yield "The "
        yield "cat"
        raise KeyboardInterrupt

    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    capsys.readouterr()
    if command == "eval":
        monkeypatch.setattr(cli, "evaluate_checkpoint", interrupted)
    else:
        monkeypatch.setattr(cli, "sample_stream", interrupted_sample)
    main = eval_main if command == "eval" else cli.sample_main
    assert main([str(run)]) == 130  # 128 + SIGINT, as rhn-train's
    captured = capsys.readouterr()
    assert captured.err == "stopped: interrupted\n"
    # What was sampled before Ctrl-C stays on the screen, its line ended.
    assert captured.out == ("" if command == "eval" else "The cat\n")


def test_sample_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    # `rhn-sample RUN | head -c 10`: two chained BrokenPipeError tracebacks, once streamed.
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    code = "import sys; from rhn.tasks.cli import sample_main; sys.exit(sample_main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run), "--length", "5000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()  # the reader goes away mid-sample
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


def test_sample_prints_the_text_as_it_is_drawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhn.tasks import cli
    from rhn.tasks.language_model import sample_text

    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    capsys.readouterr()
    written: list[str] = []
    real_stream = cli.sample_stream

    def recording(*args: object, **kwargs: object) -> Iterator[str]:
        for piece in real_stream(*args, **kwargs):
            written.append(piece)
            yield piece

    monkeypatch.setattr(cli, "sample_stream", recording)
    argv = [str(run), "--prompt", "The ", "--length", "30", "--seed", "3"]
    assert cli.sample_main(argv) == 0
    text = sample_text(run / "checkpoints" / "best.pt", "The ", 30, 1.0, 3)
    assert capsys.readouterr().out == text + "\n"  # the same text as sample_text's
    # The prompt, then one piece per character (a char vocabulary): 31 pieces, not 1.
    assert written[0] == "The " and len(written) == 31 and "".join(written) == text
    # --top-k 1 keeps the most probable character alone: greedy at any temperature.
    assert cli.sample_main([*argv, "--top-k", "1", "--temperature", "3"]) == 0
    greedy = sample_text(run / "checkpoints" / "best.pt", "The ", 30, 0.0)
    assert capsys.readouterr().out == greedy + "\n" != text + "\n"
    assert cli.sample_main([*argv, "--top-p", "0.5", "--top-k", "3"]) == 0
    nucleus = sample_text(run / "checkpoints" / "best.pt", "The ", 30, 1.0, 3, top_k=3, top_p=0.5)
    top_k_alone = sample_text(run / "checkpoints" / "best.pt", "The ", 30, 1.0, 3, top_k=3)
    assert capsys.readouterr().out == nucleus + "\n" != top_k_alone + "\n"  # top_p took effect


def test_export_to_a_directory_or_a_read_only_place_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    capsys.readouterr()
    assert export_main([str(run), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"output {tmp_path} is a directory" in err and len(err.splitlines()) == 1
    below_a_file = run / "config.yaml" / "weights.safetensors"
    assert export_main([str(run), str(below_a_file)]) == 2
    err = capsys.readouterr().err
    blocker = run / "config.yaml"
    assert err == f"error: could not write {below_a_file}: {blocker} is not a directory\n"


def test_export_replaces_an_earlier_export_but_no_other_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    capsys.readouterr()
    for name in ("metrics.jsonl", "config.yaml", "vocab.json"):
        kept = (run / name).read_bytes()
        assert export_main([str(run), str(run / name)]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: output {run / name} exists and is not an rhn-export file; it is kept "
            "(name a new file, or an earlier export to replace)\n"
        )
        assert (run / name).read_bytes() == kept
    # The run still resumes from what it saved (metrics.jsonl was overwritten before).
    assert train_main([TINY, "--run-dir", str(run), *SHORT, "--set", "train.max_steps=14"]) == 0
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"")  # an empty file is not an export either
    assert export_main([str(run), str(out)]) == 2
    capsys.readouterr()
    from safetensors.torch import save_file

    theirs = tmp_path / "model.safetensors"  # a safetensors file of someone else's model
    save_file({"w": torch.ones(2)}, str(theirs), metadata={"format": "pt"})
    kept = theirs.read_bytes()
    assert export_main([str(run), str(theirs)]) == 2
    assert "is not an rhn-export file; it is kept" in capsys.readouterr().err
    assert theirs.read_bytes() == kept
    out.unlink()
    assert export_main([str(run), str(out)]) == 0
    first = load_file(out)
    assert export_main([str(run), str(out)]) == 0  # an earlier export is replaced
    assert load_file(out).keys() == first.keys()


def test_export_never_replaces_a_checkpoint_and_writes_whole_files_with_the_umask_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import stat

    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    best = run / "checkpoints" / "best.pt"
    kept = best.read_bytes()
    capsys.readouterr()
    assert export_main([str(run), str(best)]) == 2  # it read best.pt: the best model was lost
    assert "is a checkpoint; name a .safetensors file" in capsys.readouterr().err
    assert best.read_bytes() == kept
    old_umask = os.umask(0o022)
    try:
        out = tmp_path / "out" / "weights.safetensors"
        assert export_main([str(run), str(out)]) == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # safetensors alone wrote 0600
    assert [p.name for p in out.parent.iterdir()] == ["weights.safetensors"]


def test_unusable_run_dirs_configs_and_corpora_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    binary = tmp_path / "config.yaml"
    binary.write_bytes(bytes(range(128, 256)))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    corpus = ["--set", "data.corpus=file", "--set", "data.level=char"]
    cases = [
        ([TINY, "--run-dir", str(a_file)], f"run directory {a_file} is a file"),
        ([TINY, "--run-dir", str(a_file / "run")], f"cannot create run directory {a_file}/run"),
        ([str(binary), "--run-dir", str(tmp_path / "r1")], "is not text (not UTF-8)"),
        (
            [TINY, "--run-dir", str(tmp_path / "r2"), *corpus, "--set", f"data.path={empty}"],
            "the train split has 0 tokens, too few for data.batch_size",
        ),
        (
            [TINY, "--run-dir", str(tmp_path / "r3"), *corpus, "--set", f"data.path={short}"],
            "the train split has 3 tokens, too few for data.batch_size",
        ),
        (  # refused before any step, not at the first evaluation
            [TINY, "--run-dir", str(tmp_path / "r4"), "--set", "data.eval_batch_size=999999"],
            "tokens, too few for data.eval_batch_size = 999999 columns",
        ),
    ]
    for argv, message in cases:
        assert train_main([*argv, *SHORT]) == 2, message
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r4" / "checkpoints").exists()


def _can_mount_read_only() -> bool:
    """Whether a private mount namespace can be made here (``unshare`` as an unprivileged
    user maps to root inside, so even root sees a read-only mount as read-only)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def _files(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def _train_with_read_only(folder: Path, run: Path) -> subprocess.CompletedProcess:
    """rhn-train resuming ``run`` with ``folder`` bind-mounted read-only over itself, in a
    namespace of its own: chmod would not do, root (as CI runs) writes through permissions
    but not a read-only mount."""
    train = f"{sys.executable} -m rhn.tasks {TINY} --run-dir {run} --set train.max_steps=24"
    script = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec {train}"
    return subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, check=False
    )


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare -r -m (mount namespaces)")
def test_a_read_only_run_dir_is_one_line_with_exit_2_and_nothing_is_lost(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    before = _files(run)
    proc = _train_with_read_only(run, run)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"error: run directory {run} is not writable; choose another --run-dir"
    )
    assert _files(run) == before


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare -r -m (mount namespaces)")
@pytest.mark.parametrize("stale", [False, True])
def test_a_read_only_checkpoints_folder_is_one_line_before_any_training(
    tmp_path: Path, stale: bool
) -> None:
    """It failed at the first save, after training and rewriting config.yaml (with a
    killed save's temporary in it: a traceback, from removing that)."""
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    checkpoints = run / "checkpoints"
    if stale:
        (checkpoints / ".last.pt.123.tmp").write_bytes(b"half")
    before = _files(run)
    proc = _train_with_read_only(checkpoints, run)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"error: run directory {checkpoints} is not writable; choose another --run-dir"
    )
    assert _files(run) == before


def test_resuming_with_another_batch_size_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train_main([TINY, "--run-dir", str(run), *SHORT]) == 0
    capsys.readouterr()
    more = ["--set", "train.max_steps=20", "--set", "data.batch_size=7"]
    assert train_main([TINY, "--run-dir", str(run), *SHORT, *more]) == 2
    err = capsys.readouterr().err
    assert "carries a recurrent state for data.batch_size = " in err
    assert "but this run asks for 7" in err and len(err.strip().splitlines()) == 1
