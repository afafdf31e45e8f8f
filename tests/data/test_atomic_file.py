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
    # temporary's bytes, all of them, reach the disk before the rename; the directory's
    # entry after it.
    events: list[tuple[str, os.stat_result]] = []
    fsync, replace = os.fsync, os.replace

    def watched_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd)))
        fsync(fd)

    def watched_replace(src: str, dst: str) -> None:
        events.append(("replace", os.stat(src)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "replace", watched_replace)
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "a: 1\n")
    assert [what for what, _ in events] == ["fsync", "replace", "fsync"]
    (_, data), (_, renamed), (_, folder) = events
    assert os.path.samestat(data, renamed) and os.path.samestat(data, path.stat())
    assert data.st_size == len("a: 1\n")  # flushed before the fsync, not at the close
    assert os.path.samestat(folder, tmp_path.stat())  # the file's own directory
