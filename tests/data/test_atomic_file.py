from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rhn.data.atomic_file import atomic_open, atomic_write_text


def test_atomic_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.yaml"
    atomic_write_text(path, "a: 1\n")
    atomic_write_text(path, "a: 2\n")
    assert path.read_text() == "a: 2\n"
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]


def test_a_write_that_dies_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n')
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as f:
        f.write('{"step": 1}\n')  # half of the new content, then a kill
        raise KeyboardInterrupt
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_new_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_mode(
    tmp_path: Path,
) -> None:
    old_umask = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        atomic_write_text(new, "{}")
        plain = tmp_path / "plain.json"
        plain.write_text("{}")  # what open() gives under the same umask
        assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
        shared = tmp_path / "shared.json"
        shared.write_text("{}")
        shared.chmod(0o664)
        atomic_write_text(shared, '{"a": 1}')
        assert stat.S_IMODE(shared.stat().st_mode) == 0o664
    finally:
        os.umask(old_umask)


def test_the_data_and_then_the_rename_are_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash can't be staged here, so what makes the write survive one is watched: the
    # temporary's bytes reach the disk before the rename, the directory entry after it.
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def watched_fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", "dir" if Path(target).is_dir() else Path(target).name))
        fsync(fd)

    def watched_replace(src: str, dst: str) -> None:
        events.append(("replace", Path(dst).name))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "replace", watched_replace)
    atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(".config.yaml.") and events[0][1].endswith(".tmp")
    assert events[1:] == [("replace", "config.yaml"), ("fsync", "dir")]
