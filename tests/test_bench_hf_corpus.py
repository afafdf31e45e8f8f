"""scripts/bench_hf_corpus.py: it writes only inside --dir, reuses its corpus, and refuses a
folder of other files or sizes it can't write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")  # it writes parquet; datasets brings pyarrow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_hf_corpus.py"


def bench(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=300
    )


def test_a_tiny_corpus_is_written_inside_dir_measured_and_reused(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    sizes = ["--tokens", "4600", "--vocab", "40", "--dir", str(out)]
    done = bench(*sizes)
    assert done.returncode == 0, done.stderr
    # Nothing beside --dir (it wrote DIR.json and cache/ next to the folder it was given).
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]
    assert sorted(p.name for p in out.iterdir()) == ["cache-np1", "corpus", "corpus.json"]
    info = json.loads((out / "corpus.json").read_text())
    assert (info["tokens"], info["vocab"]) == (4600, 40)
    runs = [line for line in done.stdout.splitlines() if line.startswith("num_proc 1")]
    assert len(runs) == 2 and "second run (cached)" in runs[1]
    # The first run filled the cache; the second read it and wrote nothing.
    assert not runs[0].endswith(", 0 new cache files") and runs[1].endswith(", 0 new cache files")
    # Each split's tokens: the rows' words plus a line break each (train 4600 words in rows
    # of 90: 52 rows; held-out splits 4600 // 460 = 10 words in one row).
    assert "tokens {'train': 4652, 'valid': 11, 'test': 11}" in runs[0]
    (out / "cache-np1" / "left by the first bench").write_text("")
    again = bench(*sizes)
    assert again.returncode == 0 and "wrote" not in again.stdout  # the corpus is reused
    # ... but not the last bench's cache: its "first run" would have been a cache read
    assert not (out / "cache-np1" / "left by the first bench").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tokens", "100"], "--tokens must be >= 460, got 100"),
        (["--vocab", "0"], "--vocab must be >= 1, got 0"),
    ],
)
def test_sizes_it_cannot_write_are_refused(argv: list[str], message: str, tmp_path: Path) -> None:
    done = bench(*argv, "--dir", str(tmp_path / "bench"))
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "bench").exists()


def test_a_folder_of_other_files_or_another_corpus_is_refused_and_kept(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    done = bench("--tokens", "4600", "--vocab", "40", "--dir", str(mine))
    assert done.returncode == 2
    assert "holds files that are not the benchmark's (notes.txt)" in done.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # A corpus/ folder of the user's own: it was taken for one a kill cut short and deleted.
    theirs = tmp_path / "theirs"
    (theirs / "corpus").mkdir(parents=True)
    (theirs / "corpus" / "notes.txt").write_text("mine")
    done = bench("--tokens", "4600", "--vocab", "40", "--dir", str(theirs))
    assert done.returncode == 2 and "holds files that are not the benchmark's" in done.stderr
    assert (theirs / "corpus" / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "corpus.json").write_text(json.dumps({"tokens": 9200, "vocab": 40, "text_bytes": 1}))
    done = bench("--tokens", "4600", "--vocab", "40", "--dir", str(other))
    assert done.returncode == 2
    assert "holds a corpus of 9200 tokens and 40 words, not --tokens 4600 --vocab 40" in done.stderr
