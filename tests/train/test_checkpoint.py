import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rhn.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_torch_save,
    check_same_model,
    export_safetensors,
    load_checkpoint,
    unwrap,
)


def _ckpt() -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "model": {"w": torch.arange(4.0)},
        "step": 3,
        "config": {"task": "t", "model": {"depth": 2}},
        "rng": [{"python": (3, tuple(range(5)), None)}],
    }


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_torch_save(_ckpt(), path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0)) and loaded["step"] == 3
    assert torch.load(path, weights_only=True)["config"]["model"]["depth"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_torch_save(_ckpt(), path)
    before = path.read_bytes()

    class Unsaveable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"x": Unsaveable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("keep", [0, 10, 200, -1])
def test_truncated_or_corrupt_files_give_one_clear_error(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "last.pt"
    atomic_torch_save(_ckpt(), path)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else b"garbage" * 50)
    with pytest.raises(CheckpointError, match=r"last\.pt is corrupt or truncated"):
        load_checkpoint(path)


def test_a_file_that_is_no_checkpoint_gives_one_clear_error(tmp_path: Path) -> None:
    """A run's config.yaml handed over as the checkpoint: torch's unpickler raises an
    IndexError on it, which must still be the one CheckpointError."""
    path = tmp_path / "config.yaml"
    path.write_text("task: word_lm\nmodel: {depth: 2}\n")
    with pytest.raises(CheckpointError, match=r"config\.yaml is corrupt or truncated, or not a"):
        load_checkpoint(path)


def test_missing_foreign_and_other_model_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an rhn training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"another model config \(model\.depth: 2 → 4\)"):
        check_same_model("x.pt", _ckpt()["config"], {"task": "t", "model": {"depth": 4}})
    old = _ckpt()
    old["format_version"] = 99
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "old.pt")


def test_unwrap_and_safetensors_export_with_tied_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file, load_model

    def tied() -> torch.nn.Sequential:
        model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5))
        model[1].weight = model[0].weight  # tied
        return model

    model = tied()
    state = model.state_dict()
    assert list(state) == ["0.weight", "1.weight", "1.bias"]
    export_safetensors(torch.compile(model), tmp_path / "w.safetensors")
    tensors = load_file(str(tmp_path / "w.safetensors"))
    # The tied pair is stored once, under either of its names; the bias as it is. No
    # wrapper prefix (torch.compile's _orig_mod.).
    assert set(tensors) in ({"0.weight", "1.bias"}, {"1.weight", "1.bias"})
    for name, tensor in tensors.items():
        assert torch.equal(tensor, state[name]), name
    # The file restores the whole model, both tied names included, into a fresh copy.
    fresh = tied()
    assert not torch.equal(fresh[0].weight, model[0].weight)
    load_model(fresh, str(tmp_path / "w.safetensors"))
    assert fresh[1].weight is fresh[0].weight  # still tied
    for name, tensor in state.items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert unwrap(torch.compile(model)) is model


def test_a_full_disk_is_one_error_naming_the_file_and_the_old_checkpoint_survives(
    tmp_path: Path,
) -> None:
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes writes fail as a full disk
    does; the save must say so in one line and leave the previous checkpoint as it was."""
    path = tmp_path / "last.pt"
    atomic_torch_save({"w": torch.zeros(10)}, path)
    before = path.read_bytes()
    script = (
        "import resource, signal, sys, torch\n"
        "from rhn.train.checkpoint import CheckpointError, atomic_torch_save\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
        "try:\n"
        f"    atomic_torch_save({{'w': torch.zeros(1 << 20)}}, {str(path)!r})\n"
        "except CheckpointError as err:\n"
        "    print(err); sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    message = proc.stdout.strip()
    assert message.startswith(f"could not write checkpoint {path}: ")
    assert "the previous last.pt is unchanged" in message and "\n" not in message
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))  # the partial temporary is gone


def test_a_training_checkpoint_holds_exactly_the_documented_keys(tmp_path: Path) -> None:
    from rhn.train.checkpoint import CHECKPOINT_KEYS
    from rhn.train.loop import train
    from tests.train.test_loop import toy_config

    train(toy_config("train.max_steps=2"), tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert sorted(ckpt) == sorted(CHECKPOINT_KEYS)
    assert ckpt["step"] == ckpt["position"]["step"] == 2


def test_same_state_compares_tensors_by_value_and_lists_as_tuples() -> None:
    from rhn.train.checkpoint import same_state

    mean = torch.linspace(0, 1, 6).reshape(2, 3)
    assert same_state({"a": [1, (2, 3)], "m": mean}, {"a": (1, [2, 3]), "m": mean + 4e-6})
    assert not same_state({"m": mean}, {"m": mean + 1e-3})
    assert not same_state({"m": mean}, {"m": mean.double()})
    assert not same_state({"m": mean}, {"m": mean.flatten()})
    assert not same_state(torch.tensor([1, 2]), torch.tensor([1, 3]))
    assert not same_state({"a": 1}, {"a": 1, "b": 2}) and not same_state({"m": mean}, {"m": 1})
    assert not same_state([1, 2], [1, 2, 3]) and same_state(None, None)


def test_an_export_is_on_disk_before_it_replaces_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        synced.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    export_safetensors(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
    # The temporary's data, then the rename, then the folder's entry.
    assert [Path(s).name if s != "replace" else s for s in synced] == [
        f".w.safetensors.{os.getpid()}.tmp", "replace", tmp_path.name
    ]  # fmt: skip
