"""A language-modelling corpus, tokenised: the vocabulary and each split's token ids.

Tokenising a large corpus takes a while, so the result is cached (``cache_dir()/tokens``)
under a key made of the source files' content (a SHA-256 of their bytes), the tokenisation
options and :data:`ENCODING_VERSION`: the second run starts in seconds, and an edited file
is never answered from the cache, whatever its size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from rhn.data.atomic_file import atomic_open, write_failure
from rhn.data.builtin_corpus import builtin_text
from rhn.data.corpora import (
    CORPORA,
    SPLITS,
    find_corpus_files,
    head_text,
    load_corpus,
    load_text_corpus,
    read_corpus_file,
    split_text,
    text_corpus_files,
)
from rhn.data.data_dirs import cache_dir, content_digest
from rhn.data.hf_corpus import HFSource, load_split_hf, load_tokenized_hf
from rhn.data.text_file import DataFileError
from rhn.data.vocab import (
    UnknownSymbolError,
    Vocab,
    corpus_vocab,
    vocab_from_json,
)

LEVELS = ("auto", "word", "char", "bpe", "unigram")
ENCODING_VERSION = 5  # bump when the way text becomes ids changes: old caches are ignored
DEAD_TEMPORARY_S = 3600.0  # a cache file's temporary this old is a killed write's


@dataclass(frozen=True)
class CorpusSource:
    """What to read and how to cut it into tokens.

    corpus: ptb_word, ptb_char, enwik8, text8, builtin (CPython's reference docs), file, or
        hf (anything Hugging Face ``datasets`` opens: :mod:`rhn.data.hf_corpus`)
    path: for ``file``, a text file or a folder with train/valid/test.txt; for ``hf``, a hub
        dataset id, a save_to_disk folder or local data files; otherwise an extra directory
        to search before RHN_DATA_DIR
    hf_config, text_field, hf_splits: for ``hf``, the hub subset, the text column and
        (ours, the dataset's) split names that replace the defaults
    num_proc: for ``hf``, the processes that tokenise each split (the ids are the same)
    level: auto (the corpus's own), word, char, bpe or unigram (sentencepiece)
    """

    corpus: str = "builtin"
    path: str | None = None
    level: str = "auto"
    vocab_size: int = 8000  # bpe / unigram only
    max_chars: int | None = None  # keep only each split's first lines (smoke tests)
    valid_fraction: float = 0.05  # for a single file, a train-only hf set, the built-in corpus
    test_fraction: float = 0.05
    hf_config: str | None = None
    text_field: str = "text"
    hf_splits: tuple[tuple[str, str], ...] = ()
    num_proc: int = 1

    def hf(self) -> HFSource:
        if self.path is None:
            raise ValueError("data.path must name a dataset when data.corpus is 'hf'")
        return HFSource(
            path=self.path,
            config=self.hf_config,
            text_field=self.text_field,
            split_names=self.hf_splits,
            level=self.resolved_level(),
            vocab_size=self.vocab_size,
            max_chars=self.max_chars,
            num_proc=self.num_proc,
            valid_fraction=self.valid_fraction,
            test_fraction=self.test_fraction,
        )

    def resolved_level(self) -> str:
        if self.level != "auto":
            return self.level
        if self.corpus in CORPORA:
            return {"byte": "char"}.get(CORPORA[self.corpus].level, CORPORA[self.corpus].level)
        return "char"


def read_splits(
    source: CorpusSource, *, allow_download: bool = True, splits: tuple[str, ...] = SPLITS
) -> dict[str, str]:
    """The text of each of ``splits``; where the corpus keeps a file per split, only those
    files are read."""
    if source.corpus == "builtin":
        cut = split_text(builtin_text(), source.valid_fraction, source.test_fraction)
        texts = {split: cut[split] for split in splits}
    elif source.corpus == "file":
        if source.path is None:
            raise ValueError("data.path must name a text file or folder when data.corpus is 'file'")
        texts = load_text_corpus(
            source.path, source.valid_fraction, source.test_fraction, splits=splits
        )
    else:
        texts = load_corpus(
            source.corpus, source.path, allow_download=allow_download, splits=splits
        )
    if source.max_chars is not None:
        texts = {k: head_text(v, source.max_chars) for k, v in texts.items()}
    return texts


def build_vocab(source: CorpusSource, texts: dict[str, str]) -> Vocab:
    """The vocabulary of ``texts`` (split → text): :func:`~rhn.data.vocab.corpus_vocab` with
    the training split as what is learnt and the others held out."""
    held_out = [text for split, text in texts.items() if split != "train"]
    return corpus_vocab(source.resolved_level(), [texts["train"]], held_out, source.vocab_size)


def _identity(source: CorpusSource) -> str:
    """What the cache key rests on: the options, the encoding's version and each source
    file's name and content (a copy that keeps the old size and mtime is still seen)."""
    if source.corpus in CORPORA:
        found = find_corpus_files(CORPORA[source.corpus], source.path)
        paths = [p for p in found.values() if p is not None]
    elif source.corpus == "file" and source.path:
        root = Path(source.path).expanduser()
        # the files load_text_corpus reads, not whatever else the folder holds
        found = list(text_corpus_files(root).values()) if root.is_dir() else [root]
        paths = [p for p in found if p is not None]
    else:  # the built-in corpus changes only with Python
        paths = []
    files = [f"{p.name}:{content_digest([p])}" for p in paths if p.is_file()]
    files.append(f"python-{sys.version_info[:3]}")
    return json.dumps(
        {
            "source": vars(source),
            "level": source.resolved_level(),
            "files": files,
            "encoding": ENCODING_VERSION,
        }
    )


def load_tokenized(
    source: CorpusSource, *, use_cache: bool = True
) -> tuple[Vocab, dict[str, torch.Tensor]]:
    """The vocabulary (:func:`build_vocab`) and the ids of every split."""
    if source.corpus == "hf":
        return load_tokenized_hf(source.hf())  # cached by the dataset's own fingerprints
    key = hashlib.sha256(_identity(source).encode()).hexdigest()[:24]
    path = cache_dir() / "tokens" / f"{source.corpus}-{key}.pt"
    if use_cache and path.is_file():
        try:
            cached = torch.load(path, weights_only=True)
            return vocab_from_json(cached["vocab"]), cached["ids"]
        except Exception:  # a stale or torn cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    splits = read_splits(source)
    vocab = build_vocab(source, splits)
    ids = {name: vocab.encode(text) for name, text in splits.items()}
    if use_cache:
        try:
            _remove_dead_temporaries(path)
            with atomic_open(path, "wb") as f:
                torch.save({"vocab": vocab.to_json(), "ids": ids}, f)
        except (OSError, RuntimeError) as err:
            # A cache is a saving of time, not a need: a full disk there is no reason to stop.
            if (cause := write_failure(err)) is None:
                raise
            warnings.warn(
                f"could not cache the tokenised corpus in {path}: {cause}; it is tokenised "
                f"again next time (RHN_CACHE_DIR names another cache folder)",
                stacklevel=2,
            )
    return vocab, ids


def _remove_dead_temporaries(path: Path) -> None:
    """Delete what writes of ``path`` killed before their rename left behind (an enwik8
    entry is ~0.8 GB). A temporary lives only while its write runs, seconds, so one an hour
    old is no other process's write in progress."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > DEAD_TEMPORARY_S:
                tmp.unlink()
        except FileNotFoundError:  # another process removed or renamed it meanwhile
            pass


def read_text_as(source: CorpusSource, path: str | Path) -> str:
    """A text file of one's own (to score a model on) read as ``source``'s files are: a byte
    corpus's (enwik8) one byte to a character, a Hugging Face set's as Python's text mode
    reads it (``\\r\\n`` and ``\\r`` as ``\\n``), any other as UTF-8; a byte-order mark dropped."""
    spec = CORPORA.get(source.corpus)
    text = read_corpus_file(Path(path), as_bytes=spec is not None and spec.level == "byte")
    if source.corpus == "hf":
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def load_split(source: CorpusSource, split: str, vocab: Vocab) -> torch.Tensor:
    """The ids of one split in a saved vocabulary (evaluating a trained model): the other
    splits' files are not needed."""
    try:
        if source.corpus == "hf":
            return load_split_hf(source.hf(), split, vocab)
        return vocab.encode(read_splits(source, splits=(split,))[split])
    except UnknownSymbolError as err:
        where = f"{source.corpus} {source.path}" if source.path else source.corpus
        raise DataFileError(
            f"the {split} split of {where}: {err}; the vocabulary saved with the model was "
            f"built from other data"
        ) from None
