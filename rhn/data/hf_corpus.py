"""Language-modelling corpora through Hugging Face ``datasets``.

``data.path`` names a hub dataset (``Salesforce/wikitext`` with ``data.hf_config:
wikitext-2-v1``), a folder written by ``save_to_disk``, or local data files — one file, or a
folder of them, in parquet, json/jsonl, csv, text or arrow — all opened by ``datasets``
(``load_dataset`` / ``load_from_disk``):

    DatasetDict → the train / valid / test splits (``validation``, ``valid`` or ``dev`` is
    valid unless ``data.hf_splits`` names another) → rows of ``data.text_field``, each closed
    by a line break unless it ends in one (the text loader is told to keep them)
    → the vocabulary, counted over the training split batch by batch
    → each split's token ids, by a batched ``map`` over the memory-mapped Arrow table

Nothing holds the whole corpus as one Python string: a batch of rows is joined, counted or
encoded, and dropped. The vocabulary is cached under the training split's identity (its
fingerprint and Arrow files) and the tokenisation options, the ids under each split's
identity and the vocabulary's digest (``cache_dir()/tokens``), so a second run reads both
from disk. Local data files are read into a ``datasets`` cache of their own content
(``cache_dir()/hf-datasets/<sha256>``): ``datasets`` tells local files apart by their
modification time, which an edited copy can keep. ``datasets`` is imported only
here, when an ``hf`` corpus is used. ``RHN_OFFLINE=1`` puts ``datasets`` and the hub client in
their offline mode: the hub is never contacted (a hub dataset loads from their cache, or fails
at once), as the other corpora skip their downloads. Without it, one connection tells a hub
that can't be reached (``HUB_PROBE_S``), and then only the cache is tried, not the client's
retries; a ``data.path`` that reads as a path (``./d``, ``/d``, ``a/b/c``, ``x.parquet``) but
doesn't exist is named as such, not looked up on the hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rhn.data.atomic_file import atomic_write_text
from rhn.data.corpora import SPLITS, split_points
from rhn.data.data_dirs import cache_dir, content_digest, downloads_allowed
from rhn.data.text_file import DataFileError
from rhn.data.vocab import (
    Vocab,
    corpus_vocab,
    digest,
    vocab_from_json,
)

# Local data files: suffix → the ``datasets`` builder that reads them.
LOCAL_BUILDERS = {
    ".parquet": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".txt": "text",
    ".arrow": "arrow",
}
SPLIT_ALIASES = {"train": ("train",), "valid": ("validation", "valid", "dev"), "test": ("test",)}
BATCH_ROWS = 10_000
ENCODING_VERSION = 4  # bump when the way rows become ids changes: old caches are ignored


@dataclass(frozen=True)
class HFSource:
    """Where the dataset is, and which column and split names to use."""

    path: str
    config: str | None = None
    text_field: str = "text"
    split_names: tuple[tuple[str, str], ...] = ()  # (ours, the dataset's) overrides
    level: str = "char"
    vocab_size: int = 8000  # bpe / unigram
    max_chars: int | None = None  # keep only the first rows up to this many characters
    path_key: str = "data.path"  # the config key that names ``path``, for messages
    num_proc: int = 1  # processes that tokenise a split (``Dataset.map``'s num_proc)
    # A dataset with a train split alone is cut into its first, next and last rows by these.
    valid_fraction: float = 0.05
    test_fraction: float = 0.05


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in ("dataset_dict.json", "state.json")
    )


def import_datasets() -> Any:
    """The ``datasets`` module; when ``RHN_OFFLINE`` forbids downloads, in the hub's offline
    mode, so no request is made (an unreachable hub otherwise costs ~30 s of retries)."""
    offline = not downloads_allowed()
    if offline:  # huggingface_hub and datasets read these once, when first imported
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    if offline:
        _hub_offline(datasets)
    return datasets


def _hub_offline(datasets: Any) -> None:
    """Put ``datasets`` and the hub client in their offline mode (cache only), even when they
    were imported before: both check these module flags at every request."""
    import huggingface_hub.constants

    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True


HUB_PROBE_S = 3.0  # how long a connection to the hub may take before it counts as unreachable


def hub_unreachable(timeout: float = HUB_PROBE_S) -> str | None:
    """Why the hub (``HF_ENDPOINT``, else huggingface.co) can't be reached, found with one TCP
    connection; None when it can, or when a proxy is set (whose reach this can't test).

    Without it an unreachable hub costs ~25 s of the client's retries (12 lines of them)
    before the error; with it, the dataset is looked up in the local cache at once."""
    import huggingface_hub.constants

    endpoint = huggingface_hub.constants.ENDPOINT
    parts = urllib.parse.urlsplit(endpoint)
    proxies = urllib.request.getproxies()
    if parts.hostname is None or proxies.get(parts.scheme) or proxies.get("all"):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as err:
        return f"could not reach the hub at {endpoint} ({err.strerror or err})"
    return None


def _looks_local(name: str) -> bool:
    """Whether ``data.path`` reads as a file or folder, not a hub id (``name`` or
    ``org/name``): absolute, ``./``, ``../`` or ``~``, deeper than ``org/name``, or a data
    file's suffix."""
    return (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or Path(name).suffix in LOCAL_BUILDERS
    )


def open_dataset(source: HFSource) -> Any:
    """The ``DatasetDict`` ``source.path`` stands for (a lone ``Dataset`` becomes ``train``)."""
    datasets = import_datasets()

    path = Path(source.path).expanduser()
    if path.exists() and source.config:
        raise DataFileError(
            f"data.hf_config ({source.config!r}) names a subset of a hub dataset; {path} is "
            f"local (leave data.hf_config unset)"
        )
    if _is_saved_dataset(path):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:  # a torn or foreign folder: one line, not datasets' traceback
            raise DataFileError(f"{path}: datasets could not load it ({_one_line(err)})") from None
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        return loaded
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        builders = {LOCAL_BUILDERS[p.suffix] for p in files if p.suffix in LOCAL_BUILDERS}
        if len(builders) != 1:
            found = "none" if not builders else ", ".join(sorted(builders))
            raise DataFileError(
                f"{path}: expected data files of one kind ({', '.join(LOCAL_BUILDERS)}) or a "
                f"save_to_disk folder; found {found}"
            )
        builder = builders.pop()
        options: dict[str, Any] = {}
        if builder == "text":
            # utf-8-sig: a byte-order mark is not text (the text corpora drop it too); read
            # in text mode, "\r\n" comes as "\n".
            options.update(keep_linebreaks=True, encoding="utf-8-sig")
        options["cache_dir"] = str(cache_dir() / "hf-datasets" / content_digest(files))
        if path.is_file():
            options["data_files"] = {"train": str(path)}
        else:
            options["data_dir"] = str(path)
        try:
            return datasets.load_dataset(builder, **options)
        except Exception as err:  # datasets raises many kinds; the user needs one line
            raise DataFileError(f"{path}: datasets could not read it ({_one_line(err)})") from None
    if _looks_local(source.path):
        raise DataFileError(
            f"{source.path_key} {source.path}: no such file or folder (a hub dataset is named "
            f"like name or org/name)"
        )
    unreachable = None
    if not datasets.config.HF_HUB_OFFLINE:
        unreachable = hub_unreachable()
        if unreachable is not None:
            _hub_offline(datasets)  # a copy in the cache still loads
    try:
        return datasets.load_dataset(source.path, source.config)
    except Exception as err:
        if not downloads_allowed():
            offline = " with RHN_OFFLINE set (the hub is not contacted)"
        elif unreachable is not None:
            offline = f" ({unreachable}; nor is it in the local cache)"
        elif datasets.config.HF_HUB_OFFLINE:
            offline = " with HF_DATASETS_OFFLINE / HF_HUB_OFFLINE set"
        else:
            offline = ""
        raise DataFileError(
            f"could not load the hub dataset {source.path!r}"
            f"{f' (config {source.config!r})' if source.config else ''}{offline}: "
            f"{_one_line(err)}. Offline, point {source.path_key} at a save_to_disk folder or at "
            f"local data files ({', '.join(LOCAL_BUILDERS)})"
        ) from None


def open_splits(source: HFSource, wanted: tuple[str, ...] = SPLITS) -> dict[str, Any]:
    """Our ``wanted`` splits as ``Dataset`` objects holding only the text column."""
    loaded = open_dataset(source)
    named = dict(source.split_names)
    if set(loaded) == {"train"} and not {"valid", "test"} & named.keys():
        loaded = cut_rows(loaded["train"], source)  # one file, one Dataset, a train-only hub set
    out = {}
    for split in wanted:
        candidates = (named[split],) if split in named else SPLIT_ALIASES[split]
        name = next((c for c in candidates if c in loaded), None)
        if name is None:
            raise DataFileError(
                f"{source.path}: no {split} split (looked for {' or '.join(candidates)}); the "
                f"dataset has {sorted(loaded)}; name one with data.hf_splits.{split}"
            )
        dataset = loaded[name]
        if source.text_field not in dataset.column_names:
            raise DataFileError(
                f"{source.path} split {name!r} has no column {source.text_field!r}; its "
                f"columns are {dataset.column_names}; set data.text_field"
            )
        _check_text_column(dataset, source, name)
        dataset = dataset.select_columns([source.text_field])
        out[split] = _first_chars(dataset, source) if source.max_chars else dataset
    return out


def cut_rows(dataset: Any, source: HFSource) -> dict[str, Any]:
    """A lone training split as ``train``, ``validation`` and ``test``: its first, next and
    last rows, by ``source.valid_fraction`` and ``test_fraction`` (no shuffling, as a single
    text file is cut; rows are lines, so no word is cut in two)."""
    n = len(dataset)
    valid_start, test_start = split_points(n, source.valid_fraction, source.test_fraction)
    if not 0 < valid_start < test_start < n:
        raise DataFileError(
            f"{source.path} has a train split alone, which is cut into train, valid and test "
            f"rows by data.valid_fraction and data.test_fraction ({source.valid_fraction} and "
            f"{source.test_fraction}); its {n} rows leave one of them empty"
        )
    bounds = {"train": (0, valid_start), "validation": (valid_start, test_start)}
    bounds["test"] = (test_start, n)
    return {name: dataset.select(range(*rows)) for name, rows in bounds.items()}


def _check_text_column(dataset: Any, source: HFSource, split: str) -> None:
    """The text column must hold strings (an id or a list of tokens can't become text)."""
    datasets = import_datasets()

    def is_text(feature: Any) -> bool:
        return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")

    feature = dataset.features[source.text_field]
    if not is_text(feature):
        texts = [name for name, f in dataset.features.items() if is_text(f)]
        raise DataFileError(
            f"{source.path} split {split!r}: column {source.text_field!r} holds "
            f"{getattr(feature, 'dtype', None) or type(feature).__name__} values, not text; "
            f"set data.text_field to a string column (this split's: {texts or 'none'})"
        )


def _first_chars(dataset: Any, source: HFSource) -> Any:
    """The first rows of ``dataset`` holding up to ``source.max_chars`` characters."""
    total = rows = 0
    for batch in dataset.iter(batch_size=BATCH_ROWS):
        for text in batch[source.text_field]:
            if total >= source.max_chars:
                return dataset.select(range(rows))
            total += len(text or "") + 1
            rows += 1
    return dataset


def join_rows(rows: list[str | None]) -> str:
    """Rows as text: each a line, closed by a line break unless it ends in one (a text
    file's rows keep theirs; a wikitext row is a line with its break; a json row may have
    none). An empty row is an empty line."""
    return "".join(r if r.endswith("\n") else f"{r}\n" for r in (row or "" for row in rows))


def _chunks(dataset: Any, field: str) -> Iterator[str]:
    for batch in dataset.iter(batch_size=BATCH_ROWS):
        yield join_rows(batch[field])


def build_vocab(source: HFSource, splits: dict[str, Any]) -> Vocab:
    """The vocabulary of ``splits`` as the text corpora's (:func:`rhn.data.vocab.corpus_vocab`),
    read batch by batch."""
    field = source.text_field
    held_out = (c for name, ds in splits.items() if name != "train" for c in _chunks(ds, field))
    return corpus_vocab(source.level, _chunks(splits["train"], field), held_out, source.vocab_size)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def _identity(dataset: Any) -> str:
    # datasets keeps a dataset's identity as its fingerprint (a hash of its source files'
    # names and mtimes and every transform applied; it has no public accessor); the Arrow
    # files it reads add the content-named cache that local files are loaded into.
    files = sorted(f["filename"] for f in dataset.cache_files)
    return json.dumps([dataset._fingerprint, files])


def encode_split(dataset: Any, vocab: Vocab, source: HFSource) -> torch.Tensor:
    """The token ids of one split: a batched map over its Arrow table, cached on disk
    (``source.num_proc`` processes, each a contiguous shard; the ids come out in order)."""
    import datasets
    import pyarrow.compute as pc

    key = _key(_identity(dataset), digest(vocab), source.text_field, ENCODING_VERSION)
    cache = cache_dir() / "tokens" / f"hf-ids-{key}.arrow"
    cache.parent.mkdir(parents=True, exist_ok=True)
    field = source.text_field

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return {"ids": [vocab.encode(join_rows(batch[field])).numpy().astype(np.int32)]}

    # No more processes than batches: datasets would warn and lower it anyway.
    num_proc = min(source.num_proc, -(-len(dataset) // BATCH_ROWS)) if len(dataset) else 1
    tokenized = dataset.map(
        encode,
        batched=True,
        batch_size=BATCH_ROWS,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=dataset.column_names,
        features=datasets.Features({"ids": datasets.Sequence(datasets.Value("int32"))}),
        cache_file_name=str(cache),
        new_fingerprint=key,
        desc="tokenising",
    )
    if "ids" not in tokenized.column_names:  # an empty split: map had no batch to run
        return torch.zeros(0, dtype=torch.long)
    ids = pc.list_flatten(tokenized.data.column("ids")).to_numpy()
    return torch.from_numpy(ids.astype(np.int64))


def load_vocab(source: HFSource, splits: dict[str, Any]) -> Vocab:
    """The vocabulary of ``splits`` (:func:`build_vocab`), from the cache when these splits
    and these options made one before."""
    options = (source.level, source.vocab_size, source.text_field, ENCODING_VERSION)
    identities = [f"{name}:{_identity(ds)}" for name, ds in sorted(splits.items())]
    path = cache_dir() / "tokens" / f"hf-vocab-{_key(*identities, *options)}.json"
    if path.is_file():
        try:
            return vocab_from_json(path.read_text(encoding="utf-8"))
        except Exception:  # a torn cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    vocab = build_vocab(source, splits)
    atomic_write_text(path, vocab.to_json())
    return vocab


def load_tokenized_hf(source: HFSource) -> tuple[Vocab, dict[str, torch.Tensor]]:
    """The vocabulary (:func:`build_vocab`) and the ids of every split."""
    splits = open_splits(source)
    vocab = load_vocab(source, splits)
    return vocab, {name: encode_split(ds, vocab, source) for name, ds in splits.items()}


def load_split_hf(source: HFSource, split: str, vocab: Vocab) -> torch.Tensor:
    """The ids of one split in a saved vocabulary: only that split is read."""
    return encode_split(open_splits(source, (split,))[split], vocab, source)
