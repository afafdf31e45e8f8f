"""The corpora of the RHN and character-aware LM papers, from a local directory or online.

Each corpus has two doors: local files in the canonical format (``RHN_DATA_DIR``, a config
path, or the download cache), and the official download when the machine is online (not
tried when ``RHN_OFFLINE=1``). Files
may be plain or compressed (``.gz``, ``.xz``, ``.bz2``, ``.zip``). Text keeps its line
breaks; byte-level corpora (enwik8) are read as bytes and mapped one byte to one character
(Latin-1), so every vocabulary below works on ``str``.

    name       level  files                                      split
    ptb_word   word   ptb.{train,valid,test}.txt                 as given (Mikolov)
    ptb_char   word*  ptb.char.{train,valid,test}.txt            as given; * tokens are the
                                                                  space-separated characters
    enwik8     byte   enwik8                                     first 90M / 5M / last 5M bytes
    text8      char   text8                                      first 90M / 5M / last 5M chars
"""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rhn.data import data_dirs
from rhn.data.atomic_file import atomic_open
from rhn.data.text_file import DataFileError, read_text

SPLITS = ("train", "valid", "test")
SUFFIXES = ("", ".xz", ".gz", ".bz2", ".zip")


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    level: str  # how text becomes tokens: word (whitespace + <eos>), char, or byte
    files: tuple[str, ...]  # one file per split, or one file cut 90M/5M/5M
    subdir: str  # folder under RHN_DATA_DIR where it usually sits
    url: str  # the official download
    members: tuple[str, ...]  # the files' paths inside the downloaded archive

    @property
    def single_file(self) -> bool:
        return len(self.files) == 1


_PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
CORPORA = {
    "ptb_word": CorpusSpec(
        "ptb_word",
        "word",
        tuple(f"ptb.{s}.txt" for s in SPLITS),
        "ptb",
        _PTB_URL,
        tuple(f"./simple-examples/data/ptb.{s}.txt" for s in SPLITS),
    ),
    "ptb_char": CorpusSpec(
        "ptb_char",
        "word",
        tuple(f"ptb.char.{s}.txt" for s in SPLITS),
        "ptb",
        _PTB_URL,
        tuple(f"./simple-examples/data/ptb.char.{s}.txt" for s in SPLITS),
    ),
    "enwik8": CorpusSpec(
        "enwik8", "byte", ("enwik8",), "enwik8", "http://mattmahoney.net/dc/enwik8.zip", ("enwik8",)
    ),
    "text8": CorpusSpec(
        "text8", "char", ("text8",), "text8", "http://mattmahoney.net/dc/text8.zip", ("text8",)
    ),
}
HUTTER_SPLIT = (90_000_000, 5_000_000, 5_000_000)


def find_file(name: str, dirs: list[Path]) -> Path | None:
    """A corpus file, plain or compressed."""
    return data_dirs.find_file(name, dirs, SUFFIXES)


def search_dirs(spec: CorpusSpec, data_dir: str | Path | None) -> list[Path]:
    # data.path: what a language-model config names the folder (see locate's message).
    return data_dirs.search_dirs(spec.subdir, spec.name, data_dir, key="data.path")


def read_corpus_file(path: Path, *, as_bytes: bool) -> str:
    """A corpus file's text; ``as_bytes`` maps raw bytes 1:1 to characters (Latin-1)."""
    return read_text(path, "latin-1" if as_bytes else "utf-8")


def download(spec: CorpusSpec) -> Path:
    """Fetch the official archive and unpack the corpus files into the download cache."""
    target = data_dirs.download_dir(spec.name)
    target.mkdir(parents=True, exist_ok=True)
    payload = data_dirs.fetch(spec.url)
    # Each file whole or not at all: a download killed or failed part-way (a full disk)
    # must not leave a short corpus file that later runs read without a word.
    if spec.url.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            for member, name in zip(spec.members, spec.files, strict=True):
                with archive.open(member) as source, atomic_open(target / name, "wb") as out:
                    shutil.copyfileobj(source, out)
    else:
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
            for member, name in zip(spec.members, spec.files, strict=True):
                source = archive.extractfile(member)
                if source is None:
                    raise DataFileError(f"{spec.url} has no file {member}")
                with source, atomic_open(target / name, "wb") as out:
                    shutil.copyfileobj(source, out)
    return target


def locate(
    spec: CorpusSpec,
    data_dir: str | Path | None,
    *,
    allow_download: bool,
    names: tuple[str, ...] | None = None,
) -> list[Path]:
    """The corpus's files (``names``, by default all of ``spec.files``), downloading them if
    allowed."""
    dirs = search_dirs(spec, data_dir)
    names = spec.files if names is None else names
    found = find_corpus_files(spec, data_dir, names)
    if all(found.values()):
        return list(found.values())  # type: ignore[arg-type]
    download_error = ""
    if allow_download and data_dirs.downloads_allowed():
        try:
            download(spec)
            found = find_corpus_files(spec, data_dir, names)
            if all(found.values()):
                return list(found.values())  # type: ignore[arg-type]
        except (OSError, DataFileError, zipfile.BadZipFile) as err:
            download_error = f" Downloading {spec.url} failed: {err}."
    missing = [name for name, path in found.items() if path is None]
    looked = ", ".join(str(d) for d in dirs)
    # data_dir is what a language-model config names data.path (these corpora are LM data;
    # data.data_dir is the vision configs' key, which an LM config rejects).
    raise DataFileError(
        f"corpus {spec.name!r}: could not find {', '.join(missing)} (plain or "
        f"{'/'.join(SUFFIXES[1:])}) in: {looked}{data_dirs.partial_folder_note(found)}."
        f"{download_error} Get it from {spec.url} and put the files in a folder named by "
        f"RHN_DATA_DIR or data.path."
    )


def find_corpus_files(
    spec: CorpusSpec, data_dir: str | Path | None, names: tuple[str, ...] | None = None
) -> dict[str, Path | None]:
    """Where the corpus's files (``names``, by default all) are: all from one folder."""
    names = spec.files if names is None else names
    return data_dirs.find_together(names, search_dirs(spec, data_dir), SUFFIXES)


def load_corpus(
    name: str,
    data_dir: str | Path | None = None,
    *,
    allow_download: bool = True,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, str]:
    """The text of each of ``splits`` (train, valid, test) of a named corpus. A corpus kept
    one file per split reads only those files; a single-file corpus reads its one file."""
    if name not in CORPORA:
        raise ValueError(f"corpus must be one of {sorted(CORPORA)}, got {name!r}")
    spec = CORPORA[name]
    if not spec.single_file:
        names = tuple(spec.files[SPLITS.index(split)] for split in splits)
        paths = locate(spec, data_dir, allow_download=allow_download, names=names)
        pairs = zip(splits, paths, strict=True)
        return {split: read_corpus_file(p, as_bytes=False) for split, p in pairs}
    paths = locate(spec, data_dir, allow_download=allow_download)
    text = read_corpus_file(paths[0], as_bytes=spec.level == "byte")
    train, valid, test = HUTTER_SPLIT
    if len(text) < train + valid + test:
        raise DataFileError(
            f"data file {paths[0]} holds {len(text):,} symbols; {spec.name} has "
            f"{train + valid + test:,} (is it truncated?)"
        )
    cut = {
        "train": text[:train],
        "valid": text[train : train + valid],
        "test": text[train + valid : train + valid + test],
    }
    return {split: cut[split] for split in splits}


def text_corpus_files(folder: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, Path | None]:
    """A user's corpus folder: its ``{split}.txt`` of each of ``splits`` (plain or compressed)."""
    return {split: find_file(f"{split}.txt", [folder]) for split in splits}


def load_text_corpus(
    path: str | Path,
    valid_fraction: float,
    test_fraction: float,
    *,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, str]:
    """A user's corpus: a folder with train/valid/test files, or one file cut in three.

    A folder is searched for ``train.txt``, ``valid.txt`` and ``test.txt`` (plain or
    compressed) — only those of ``splits`` are read; a single file gives its first, middle
    and last parts.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = text_corpus_files(path, splits)
        missing = [f"{split}.txt" for split, p in files.items() if p is None]
        if missing:
            raise DataFileError(f"folder {path} has no {', '.join(missing)} (plain or compressed)")
        return {split: read_text(p) for split, p in files.items()}  # type: ignore[arg-type]
    cut = split_text(read_text(path), valid_fraction, test_fraction)
    return {split: cut[split] for split in splits}


def check_split_fractions(valid_fraction: float, test_fraction: float) -> None:
    """The fractions :func:`split_text` takes: each in (0, 1), their sum below 1."""
    if not (
        0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
    ):
        raise ValueError(
            f"valid and test fractions must be in (0, 1) with a sum below 1, got "
            f"{valid_fraction} and {test_fraction}"
        )


def split_points(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Where valid and test begin in ``n`` items cut into train / valid / test parts."""
    check_split_fractions(valid_fraction, test_fraction)
    return int(n * (1 - valid_fraction - test_fraction)), int(n * (1 - test_fraction))


def split_text(text: str, valid_fraction: float, test_fraction: float) -> dict[str, str]:
    """Train / valid / test as the first, next and last parts of ``text`` (no shuffling).

    Each cut is moved forward to the next line's start, so that no line (no word) is cut in
    two: a word's halves would be held-out words the vocabulary must give ``<unk>``. Where
    that would leave the next part without text (lines longer than it, blank lines at the
    end), to the next whitespace; a text without any there (a char stream) is cut at the
    offset itself."""
    n = len(text)
    valid_at, test_at = split_points(n, valid_fraction, test_fraction)
    test_start = _cut_after(text, test_at, n)
    valid_start = _cut_after(text, valid_at, test_start)
    return {
        "train": text[:valid_start],
        "valid": text[valid_start:test_start],
        "test": text[test_start:],
    }


def _cut_after(text: str, offset: int, limit: int) -> int:
    """The first place at or after ``offset`` that begins a line, else that follows
    whitespace, with text (more than line breaks and spaces) between it and ``limit``;
    else ``offset``."""
    line = offset if offset == 0 or text[offset - 1] == "\n" else text.find("\n", offset) + 1
    space = _WHITESPACE.search(text, offset, limit)
    for cut in (line, space.end() if space else 0):
        if offset <= cut < limit and _TEXT.search(text, cut, limit):
            return cut
    return offset


_TEXT = re.compile(r"\S")
_WHITESPACE = re.compile(r"\s")


def head_text(text: str, max_chars: int) -> str:
    """The first whole lines of ``text`` holding at most ``max_chars`` characters (no word
    cut in two, as :func:`split_text`): the longest such start ending in a line break, else
    in whitespace, else the first ``max_chars`` characters."""
    if len(text) <= max_chars:
        return text
    end = text.rfind("\n", 0, max_chars)
    if end < 0:
        end = max((text.rfind(c, 0, max_chars) for c in " \t\r\f\v"), default=-1)
    return text[: end + 1] if end >= 0 else text[:max_chars]
