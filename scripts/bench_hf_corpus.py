"""Time and peak memory of tokenising a WikiText-103-sized corpus through ``data.corpus: hf``.

    python scripts/bench_hf_corpus.py [--tokens 103000000] [--vocab 267735] [--dir DIR]
                                      [--num-proc 1 2 ...]

Writes a synthetic word corpus of WikiText-103's size (Zipf-distributed words, lines of about
a paragraph, train / validation / test parquet files in ``DIR/corpus``, its sizes in
``DIR/corpus.json``) unless ``DIR`` holds one of those sizes, then, in a fresh process each,
tokenises it twice with :func:`rhn.data.hf_corpus.load_tokenized_hf` (word level): the first
run counts the vocabulary and encodes every split, the second is served by the caches
(``DIR/cache-npN``). Prints the corpus's size beside each run's seconds and peak resident
memory, so the ratio of peak memory to text size shows that no whole-corpus string is held.
With several ``--num-proc`` values (``data.num_proc``) each tokenises into a cache of its own,
and the first runs' times are printed as ratios to the first value's. Everything it writes is
inside ``DIR`` (default: a new temporary folder), and a ``DIR`` of other files is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROW_TOKENS = 90  # about a WikiText paragraph line


HELD_OUT_SHARE = 460  # WikiText-103: 103M training tokens, 218k / 246k valid / test
# What DIR may hold: the benchmark's own files (anything else is someone's, and kept).
OWN_ENTRIES = ("corpus", "corpus.json")


def write_corpus(folder: Path, info: Path, tokens: int, vocab: int, seed: int = 0) -> None:
    """The corpus as parquet files in ``folder``, a slice at a time; its sizes in ``info``,
    written last (a corpus without it is one a kill cut short, and is written again)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(vocab)], dtype=object)
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    probs = 1.0 / ranks
    probs /= probs.sum()
    folder.mkdir(parents=True, exist_ok=True)
    held_out = tokens // HELD_OUT_SHARE
    text_bytes = 0
    for name, count in (("train", tokens), ("validation", held_out), ("test", held_out)):
        writer = None
        done = 0
        while done < count:
            n = min(5_000_000, count - done)
            ids = rng.choice(vocab, size=n, p=probs)
            rows = [" ".join(words[ids[i : i + ROW_TOKENS]]) for i in range(0, n, ROW_TOKENS)]
            lines = [f" {r} \n" for r in rows]
            text_bytes += sum(map(len, lines))  # ASCII: one byte a character
            table = pa.table({"text": lines})
            writer = writer or pq.ParquetWriter(folder / f"{name}.parquet", table.schema)
            writer.write_table(table)
            done += n
        writer.close()
    tmp = info.with_name(f".{info.name}.tmp")
    tmp.write_text(json.dumps({"tokens": tokens, "vocab": vocab, "text_bytes": text_bytes}))
    os.replace(tmp, info)


def prepare_dir(bench_dir: Path, tokens: int, vocab: int) -> str | None:
    """Why ``bench_dir`` can't be used (None if it can): a file, a folder of other files, or a
    corpus of other sizes."""
    if bench_dir.exists() and not bench_dir.is_dir():
        return f"--dir {bench_dir} is a file; name a new or empty folder"
    if not bench_dir.exists():
        return None
    others = [
        p.name
        for p in sorted(bench_dir.iterdir())
        if not p.name.startswith(".") and p.name not in OWN_ENTRIES
        and not p.name.startswith("cache-np")
    ]  # fmt: skip
    if others:
        return (
            f"--dir {bench_dir} holds files that are not the benchmark's ({', '.join(others[:3])}"
            f"); name a new or empty folder"
        )
    corpus = bench_dir / "corpus"
    own = {f"{split}.parquet" for split in ("train", "validation", "test")}
    if corpus.exists() and not (corpus.is_dir() and {p.name for p in corpus.iterdir()} <= own):
        # Only a corpus of its own parquet files (one a kill cut short) is written again.
        return (
            f"--dir {bench_dir}: {corpus} holds files that are not the benchmark's; name a new "
            f"or empty folder"
        )
    info = bench_dir / "corpus.json"
    if info.is_file():
        saved = json.loads(info.read_text())
        if (saved.get("tokens"), saved.get("vocab")) != (tokens, vocab):
            return (
                f"--dir {bench_dir} holds a corpus of {saved.get('tokens')} tokens and "
                f"{saved.get('vocab')} words, not --tokens {tokens} --vocab {vocab}; name "
                f"another --dir (or those sizes)"
            )
    return None


def measure(folder: Path, num_proc: int) -> None:
    from rhn.data.hf_corpus import HFSource, load_tokenized_hf

    start = time.perf_counter()
    vocab, ids = load_tokenized_hf(HFSource(str(folder), level="word", num_proc=num_proc))
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = {"seconds": seconds, "peak_rss_mib": peak_mib, "vocab": len(vocab)}
    report["worker_peak_rss_mib"] = workers_mib
    report["tokens"] = {k: int(v.numel()) for k, v in ids.items()}
    print(json.dumps(report))


def _files(folder: Path) -> set[Path]:
    """The data files under ``folder``: not the ``.lock`` files a cached read takes too."""
    if not folder.is_dir():
        return set()
    return {p for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=103_000_000)
    parser.add_argument("--vocab", type=int, default=267_735)
    parser.add_argument("--dir", type=Path, help="where the corpus and caches are (or go)")
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1], metavar="N")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.num_proc) < 1:
        parser.error(f"--num-proc values must be >= 1, got {args.num_proc}")
    if args.measure:
        measure(args.measure, args.num_proc[0])
        return
    if args.tokens < HELD_OUT_SHARE:  # the held-out splits get tokens // 460
        parser.error(f"--tokens must be >= {HELD_OUT_SHARE}, got {args.tokens}")
    if args.vocab < 1:
        parser.error(f"--vocab must be >= 1, got {args.vocab}")
    bench_dir = args.dir or Path(tempfile.mkdtemp(prefix="rhn-hf-bench-"))
    problem = prepare_dir(bench_dir, args.tokens, args.vocab)
    if problem:
        parser.error(problem)
    folder, info = bench_dir / "corpus", bench_dir / "corpus.json"
    if not info.is_file():
        shutil.rmtree(folder, ignore_errors=True)  # one a kill cut short
        start = time.perf_counter()
        write_corpus(folder, info, args.tokens, args.vocab)
        print(f"wrote {folder} in {time.perf_counter() - start:.0f} s")
    corpus = json.loads(info.read_text())
    parquet_mib = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 2**20
    print(
        f"corpus: {corpus['tokens']:,} training tokens, text {corpus['text_bytes'] / 2**20:.0f} "
        f"MiB (all splits), parquet {parquet_mib:.0f} MiB"
    )
    first_runs: dict[int, float] = {}
    for num_proc in args.num_proc:
        cache = bench_dir / f"cache-np{num_proc}"
        shutil.rmtree(cache, ignore_errors=True)  # a reused --dir's: the first run counts again
        env = {**os.environ, "RHN_CACHE_DIR": str(cache)}
        for label in ("first run (count + encode)", "second run (cached)"):
            before = _files(cache)
            out = subprocess.run(
                [sys.executable, __file__, "--measure", str(folder), "--num-proc", str(num_proc)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            report = json.loads(out.stdout.strip().splitlines()[-1])
            first_runs.setdefault(num_proc, report["seconds"])
            # A run served by the cache writes nothing to it: the count shows which one was.
            print(f"num_proc {num_proc}, {label}: {report['seconds']:.1f} s, peak RSS "
                  f"{report['peak_rss_mib']:.0f} MiB (largest worker "
                  f"{report['worker_peak_rss_mib']:.0f} MiB), vocab {report['vocab']:,}, "
                  f"tokens {report['tokens']}, "
                  f"{len(_files(cache) - before)} new cache files")  # fmt: skip
    base = args.num_proc[0]
    for num_proc, seconds in first_runs.items():
        if num_proc != base:
            print(f"first run, num_proc {num_proc} / num_proc {base}: "
                  f"{seconds / first_runs[base]:.2f}× the time")  # fmt: skip


if __name__ == "__main__":
    main()
