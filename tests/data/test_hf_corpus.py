"""LM corpora through Hugging Face datasets, from real ``datasets`` objects made here: a
save_to_disk folder and local parquet, json, csv and text files, at char and word level."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch

from rhn.data import hf_corpus
from rhn.data.hf_corpus import (
    HFSource,
    join_rows,
    load_split_hf,
    load_tokenized_hf,
    open_splits,
)
from rhn.data.text_file import DataFileError
from rhn.data.vocab import CharVocab, WordVocab
from rhn.train.config import build_config
from rhn.train.evaluate import evaluate_checkpoint
from rhn.train.loop import train

ROWS = {
    "train": [f"the cat sat on mat {i % 7}" for i in range(600)],
    "validation": [f"the mat sat on cat {i % 5}" for i in range(80)],
    "test": [f"a cat on the mat {i % 3}" for i in range(80)],
}


def dataset_dict(rows: dict[str, list[str]] = ROWS, column: str = "text") -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {name: datasets.Dataset.from_dict({column: r}) for name, r in rows.items()}
    )


def write_kind(kind: str, root: Path) -> Path:
    """The same three splits as a save_to_disk folder or a folder of data files."""
    data = dataset_dict()
    if kind == "save_to_disk":
        data.save_to_disk(root)
        return root
    root.mkdir(parents=True)
    for name, split in data.items():
        if kind == "parquet":
            split.to_parquet(root / f"{name}.parquet")
        elif kind == "jsonl":
            split.to_json(root / f"{name}.jsonl")
        elif kind == "csv":
            split.to_csv(root / f"{name}.csv", index=False)
        elif kind == "text":
            (root / f"{name}.txt").write_text("".join(f"{r}\n" for r in ROWS[name]))
    return root


def lm_config(task: str, path: Path, *overrides: str):
    return build_config(
        {
            "task": task,
            "model": {"embed_size": 16, "hidden_size": 16, "depth": 2},
            "data": {"corpus": "hf", "path": str(path), "batch_size": 4, "seq_len": 10},
            "optim": {"name": "adam", "lr": 0.01},
            "train": {"max_steps": 6, "max_epochs": None, "eval_every": 6, "progress": False},
        },
        list(overrides),
    )


@pytest.mark.parametrize("kind", ["save_to_disk", "parquet", "jsonl", "csv", "text"])
@pytest.mark.parametrize("task", ["char_lm", "word_lm"])
def test_training_runs_from_every_kind_of_dataset(task: str, kind: str, tmp_path: Path) -> None:
    path = write_kind(kind, tmp_path / kind)
    result = train(lm_config(task, path), tmp_path / "run")
    assert result.status == "finished" and result.position.step == 6
    # Six steps already beat guessing uniformly over the vocabulary (18 characters, 14 words
    # with <eos> and <unk>; measured: 3.96-4.02 bpc, 11.5-12.7 ppl over three seeds).
    text = "".join(f"{r}\n" for r in ROWS["train"])
    if task == "char_lm":
        assert 0 < result.metrics["bpc"] < math.log2(len(CharVocab.from_text(text, unknown=False)))
    else:
        assert 1 < result.metrics["ppl"] < len(WordVocab.from_text(text).tokens)


@pytest.mark.parametrize("kind", ["save_to_disk", "parquet", "jsonl", "csv", "text"])
def test_every_kind_yields_the_same_tokens(kind: str, tmp_path: Path) -> None:
    vocab, ids = load_tokenized_hf(HFSource(str(write_kind(kind, tmp_path / kind)), level="word"))
    expected = WordVocab.from_text("\n".join(ROWS["train"]))
    assert vocab.tokens == expected.tokens
    for ours, theirs in (("train", "train"), ("valid", "validation"), ("test", "test")):
        text = "".join(f"{r}\n" for r in ROWS[theirs])
        assert ids[ours].tolist() == expected.encode(text).tolist()


def test_line_breaks_survive_and_a_char_model_learns_to_write_them(tmp_path: Path) -> None:
    folder = tmp_path / "lines"
    folder.mkdir()
    for name, count in (("train", 3000), ("validation", 200), ("test", 200)):
        (folder / f"{name}.txt").write_text("abc\n" * count)
    vocab, ids = load_tokenized_hf(HFSource(str(folder), level="char"))
    assert isinstance(vocab, CharVocab) and "\n" in vocab.symbols
    assert vocab.decode(ids["train"]) == "abc\n" * 3000  # datasets' text loader kept them
    config = lm_config(
        "char_lm", folder, "train.max_steps=150", "train.eval_every=150", "model.hidden_size=32"
    )
    train(config, tmp_path / "run")
    from rhn.tasks.language_model import sample_text

    sample = sample_text(tmp_path / "run" / "checkpoints" / "last.pt", "abc\na", 11, 0.0)
    assert sample == "abc\nabc\nabc\nabc\n"


@pytest.mark.parametrize("level", ["char", "word"])
def test_a_byte_order_mark_is_not_text(level: str, tmp_path: Path) -> None:
    from rhn.data.lm_corpus import CorpusSource, load_tokenized

    folder = tmp_path / "files"
    folder.mkdir()
    for name, theirs in (("train", "train"), ("valid", "validation"), ("test", "test")):
        text = "".join(f"{r}\n" for r in ROWS[theirs])
        (folder / f"{name}.txt").write_text(text, encoding="utf-8-sig")  # as Notepad saves
    hf_vocab, hf_ids = load_tokenized_hf(HFSource(str(folder), level=level))
    assert "\ufeff" not in hf_vocab.to_json() and "\\ufeff" not in hf_vocab.to_json()
    text_vocab, text_ids = load_tokenized(
        CorpusSource(corpus="file", path=str(folder), level=level), use_cache=False
    )
    assert hf_vocab.to_json() == text_vocab.to_json()
    assert {k: v.tolist() for k, v in hf_ids.items()} == {
        k: v.tolist() for k, v in text_ids.items()
    }


def test_rows_without_a_break_are_closed_by_one() -> None:
    assert join_rows(["a b", "c\n", "", None, "d"]) == "a b\nc\n\n\nd\n"


def test_split_names_map_and_errors_list_what_exists(tmp_path: Path) -> None:
    rows = {"train": ROWS["train"], "dev": ROWS["validation"], "heldout": ROWS["test"]}
    dataset_dict(rows).save_to_disk(tmp_path / "d")
    with pytest.raises(
        DataFileError,
        match=r"no test split \(looked for test\); the dataset "
        r"has \['dev', 'heldout', 'train'\]; name one with data.hf_splits.test",
    ):
        open_splits(HFSource(str(tmp_path / "d")))
    splits = open_splits(HFSource(str(tmp_path / "d"), split_names=(("test", "heldout"),)))
    assert splits["valid"]["text"] == ROWS["validation"]  # "dev" is valid by default
    assert splits["test"]["text"] == ROWS["test"]
    config = lm_config("char_lm", tmp_path / "d", "data.hf_splits.test=heldout")
    assert train(config, tmp_path / "run").status == "finished"


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "lone Dataset"])
def test_a_train_split_alone_is_cut_into_first_next_and_last_rows(
    kind: str, tmp_path: Path
) -> None:
    rows = [f"row {i} of the one file" for i in range(200)]
    data = datasets.Dataset.from_dict({"text": rows})
    path = tmp_path / {"jsonl": "one.jsonl", "parquet": "one.parquet"}.get(kind, "saved")
    if kind == "jsonl":
        data.to_json(path)
    elif kind == "parquet":
        data.to_parquet(path)
    else:
        data.save_to_disk(path)
    # hf_splits naming the train split alone (as a config may) cuts it all the same
    named = (("train", "train"),) if kind == "jsonl" else ()
    splits = open_splits(
        HFSource(str(path), valid_fraction=0.1, test_fraction=0.2, split_names=named)
    )
    assert splits["train"]["text"] == rows[:140]
    assert splits["valid"]["text"] == rows[140:160]
    assert splits["test"]["text"] == rows[160:]
    vocab, ids = load_tokenized_hf(HFSource(str(path), level="word"))  # 0.05 and 0.05
    expected = WordVocab.from_text("\n".join(rows[:180]))
    assert ids["test"].tolist() == expected.encode("".join(f"{r}\n" for r in rows[190:])).tolist()
    # Scoring reads the same rows as training held out.
    assert torch.equal(load_split_hf(HFSource(str(path), level="word"), "test", vocab), ids["test"])
    data.select(range(8)).save_to_disk(tmp_path / "few")  # 7 / 0 / 1 at 0.05 and 0.05
    with pytest.raises(DataFileError, match=r"a train split alone, .* its 8 rows leave one of"):
        open_splits(HFSource(str(tmp_path / "few")))


def test_a_missing_text_column_names_the_columns(tmp_path: Path) -> None:
    dataset_dict(column="sentence").save_to_disk(tmp_path / "d")
    with pytest.raises(
        DataFileError,
        match=r"has no column 'text'; its columns are "
        r"\['sentence'\]; set data.text_field",
    ):
        open_splits(HFSource(str(tmp_path / "d")))
    config = lm_config("char_lm", tmp_path / "d", "data.text_field=sentence")
    assert train(config, tmp_path / "run").status == "finished"


@pytest.mark.parametrize(
    ("values", "kind"), [([1, 2], "int64"), ([["a"], ["b"]], "List"), ([{"a": 1}] * 2, "dict")]
)
def test_a_text_column_that_holds_no_text_is_named_with_the_string_columns(
    values: list, kind: str, tmp_path: Path
) -> None:
    columns = {"text": values, "body": ["a b", "c d"]}
    data = datasets.Dataset.from_dict(columns)
    datasets.DatasetDict({name: data for name in ("train", "validation", "test")}).save_to_disk(
        tmp_path / "d"
    )
    with pytest.raises(
        DataFileError,
        match=rf"split 'train': column 'text' holds {kind} values, not text; set "
        r"data.text_field to a string column \(this split's: \['body'\]\)",
    ):
        open_splits(HFSource(str(tmp_path / "d")))
    with pytest.raises(DataFileError, match=rf"holds {kind} values, not text"):
        open_splits(HFSource(str(tmp_path / "d"), max_chars=10))  # before max_chars counts
    assert open_splits(HFSource(str(tmp_path / "d"), text_field="body"))["test"]["body"] == [
        "a b",
        "c d",
    ]


def test_the_second_run_reads_vocabulary_and_ids_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_kind("parquet", tmp_path / "p")
    first_vocab, first_ids = load_tokenized_hf(HFSource(str(path), level="word"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(hf_corpus, "build_vocab", refuse)
    monkeypatch.setattr(WordVocab, "encode", refuse)
    vocab, ids = load_tokenized_hf(HFSource(str(path), level="word"))
    assert vocab.tokens == first_vocab.tokens
    assert all(ids[k].tolist() == first_ids[k].tolist() for k in ids)
    # Another level is another cache entry: the vocabulary is built again.
    with pytest.raises(AssertionError, match="the cache should have answered"):
        load_tokenized_hf(HFSource(str(path), level="char"))


def test_an_edited_local_file_is_read_again_whatever_its_mtime(tmp_path: Path) -> None:
    path = write_kind("text", tmp_path / "t")
    source = HFSource(str(path), level="word")
    vocab, before = load_tokenized_hf(source)
    # Other words, written back with the old modification time (as cp -p or rsync -t do):
    # datasets' own cache and ours both told the file apart by path and mtime only.
    valid = path / "validation.txt"
    stat = valid.stat()
    valid.write_text("the cat\n" * 30)
    os.utime(valid, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _, after = load_tokenized_hf(source)
    assert vocab.decode(after["valid"]) == "the cat\n" * 30
    assert after["train"].tolist() == before["train"].tolist()


def test_evaluation_reads_only_the_split_it_scores(tmp_path: Path) -> None:
    path = write_kind("parquet", tmp_path / "p")
    train(lm_config("word_lm", path), tmp_path / "run")
    (path / "train.parquet").unlink()
    (path / "test.parquet").unlink()
    metrics = evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", "valid", "cpu")
    assert 1 < metrics["ppl"] < 60


def test_max_chars_keeps_the_first_rows(tmp_path: Path) -> None:
    path = write_kind("save_to_disk", tmp_path / "d")
    splits = open_splits(HFSource(str(path), max_chars=100))
    assert splits["train"]["text"] == ROWS["train"][:5]  # 21 + 1 characters a row


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "expected data files of one kind"),
        (
            lambda p: (p.mkdir(), (p / "a.parquet").write_text("x"), (p / "b.csv").write_text("x")),
            "found csv, parquet",
        ),
        (
            lambda p: (p.mkdir(), (p / "train.parquet").write_text("not parquet")),
            "datasets could not read it",
        ),
    ],
)
def test_unreadable_local_data_is_one_clear_error(tmp_path: Path, make, message: str) -> None:
    make(tmp_path / "d")
    with pytest.raises(DataFileError, match=message):
        open_splits(HFSource(str(tmp_path / "d")))


def test_a_hub_name_offline_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "task: word_lm\ndata: {corpus: hf, path: Salesforce/wikitext, hf_config: wikitext-2-v1}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "rhn.tasks", str(config), "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert (
        "could not load the hub dataset 'Salesforce/wikitext' (config 'wikitext-2-v1')" in lines[0]
    )
    assert "point data.path at a save_to_disk folder or at local data files" in lines[0]


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """RHN_OFFLINE=1 alone: the session's HF_*_OFFLINE dropped, empty hub caches."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    env.update(
        RHN_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf-ds")
    )
    return env


# The hub's client reads its offline flag when first imported: so each way in is a fresh
# process, with datasets imported after RHN_OFFLINE is seen (the CLI) or before it.
SCRIPTS = {
    "cli": None,
    "datasets imported first": (
        "import datasets, sys\n"
        "from rhn.data.hf_corpus import HFSource, open_splits\n"
        "from rhn.data.text_file import DataFileError\n"
        "try:\n"
        "    open_splits(HFSource('rhn-tests/no-such-dataset'))\n"
        "except DataFileError as err:\n"
        "    sys.exit(f'error: {err}')\n"
    ),
}


@pytest.mark.parametrize("way", SCRIPTS)
def test_rhn_offline_keeps_the_hub_uncontacted_one_line_at_once(tmp_path: Path, way: str) -> None:
    if SCRIPTS[way] is None:
        config = tmp_path / "c.yaml"
        config.write_text("task: word_lm\ndata: {corpus: hf, path: rhn-tests/no-such-dataset}\n")
        command = [sys.executable, "-m", "rhn.tasks", str(config), "--run-dir", str(tmp_path / "r")]
    else:
        command = [sys.executable, "-c", SCRIPTS[way]]
    run = subprocess.run(command, capture_output=True, text=True, env=_offline_env(tmp_path))
    assert "Retrying" not in run.stderr and "huggingface.co" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert run.returncode == (2 if way == "cli" else 1) and len(lines) == 1, run.stderr
    assert (
        "could not load the hub dataset 'rhn-tests/no-such-dataset' with RHN_OFFLINE set (the "
        "hub is not contacted)" in lines[0]
    )
    assert "point data.path at a save_to_disk folder or at local data files" in lines[0]


def test_an_unreachable_hub_is_seen_at_once_and_only_the_cache_is_tried(tmp_path: Path) -> None:
    # Neither RHN_OFFLINE nor HF_*_OFFLINE: the hub client alone retried for ~25 s, printing
    # 12 lines. A closed local port stands for the unreachable hub.
    env = _offline_env(tmp_path)
    del env["RHN_OFFLINE"]
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    config = tmp_path / "c.yaml"
    config.write_text("task: word_lm\ndata: {corpus: hf, path: rhn-tests/no-such-dataset}\n")
    command = [sys.executable, "-m", "rhn.tasks", str(config), "--run-dir", str(tmp_path / "r")]
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    assert "Retrying" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith(
        "error: could not load the hub dataset 'rhn-tests/no-such-dataset' (could not reach the "
        "hub at http://127.0.0.1:9 (Connection refused); nor is it in the local cache)"
    )


@pytest.mark.parametrize("proxy", ["HTTP_PROXY", "ALL_PROXY"])
def test_behind_a_proxy_the_hub_is_not_probed(proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rhn.data.hf_corpus import hub_unreachable

    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    assert hub_unreachable() is not None  # a closed port, reached directly
    # Only the proxy can say whether the hub is there: the client goes through it.
    monkeypatch.setenv(proxy, "http://127.0.0.1:3128")
    assert hub_unreachable() is None


@pytest.mark.parametrize("name", ["./missing_dir", "/no/such/folder", "~/nowhere", "a/b/c",
                                  "train.parquet", "corpus/train.jsonl"])  # fmt: skip
def test_a_missing_local_path_is_named_not_looked_up_on_the_hub(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhn.data import hf_corpus

    def no_hub(*args: object) -> None:
        raise AssertionError("the hub was asked for a local path")

    monkeypatch.setattr(hf_corpus, "hub_unreachable", no_hub)
    with pytest.raises(DataFileError) as caught:
        open_splits(HFSource(name))
    assert str(caught.value) == (
        f"data.path {name}: no such file or folder (a hub dataset is named like name or org/name)"
    )


def test_hf_options_need_the_hf_corpus() -> None:
    with pytest.raises(ValueError, match=r"data\.hf_config applies to data\.corpus 'hf' only"):
        build_config({"task": "char_lm", "data": {"hf_config": "wikitext-2-v1"}})
    with pytest.raises(ValueError, match=r"data\.path must name a hub dataset id"):
        build_config({"task": "char_lm", "data": {"corpus": "hf"}})


def test_an_empty_split_encodes_to_no_tokens() -> None:
    empty = datasets.Dataset.from_dict({"text": []}, features=datasets.Features(
        {"text": datasets.Value("string")}))  # fmt: skip
    ids = hf_corpus.encode_split(empty, CharVocab(["a"]), HFSource("-"))
    assert ids.shape == (0,) and ids.dtype == torch.long


def test_tokenising_in_several_processes_gives_the_same_ids_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = {name: [f"{name} {i} w{i % 97} w{(i * 7) % 89}" for i in range(n)] for name, n in
            (("train", 300), ("validation", 40), ("test", 40))}  # fmt: skip
    dataset_dict(rows).save_to_disk(tmp_path / "d")
    monkeypatch.setattr(hf_corpus, "BATCH_ROWS", 25)  # 12 training batches to share out
    shards = hf_corpus.cache_dir() / "tokens"
    vocab, three = load_tokenized_hf(HFSource(str(tmp_path / "d"), level="word", num_proc=3))
    # Three processes ran on the training split (each wrote its shard); valid and test have
    # two batches each, so two processes.
    assert len(list(shards.glob("hf-ids-*_of_00003.arrow"))) == 3
    assert len(list(shards.glob("hf-ids-*_of_00002.arrow"))) == 4
    for path in shards.glob("hf-ids-*"):
        path.unlink()  # so the one-process run below tokenises again
    one_vocab, one = load_tokenized_hf(HFSource(str(tmp_path / "d"), level="word"))
    expected = WordVocab.from_text("\n".join(rows["train"]))
    assert vocab.tokens == one_vocab.tokens == expected.tokens
    for ours, theirs in (("train", "train"), ("valid", "validation"), ("test", "test")):
        text = "".join(f"{r}\n" for r in rows[theirs])
        assert three[ours].tolist() == one[ours].tolist() == expected.encode(text).tolist()
    with pytest.raises(ValueError, match=r"data\.num_proc must be >= 1"):
        build_config({"task": "word_lm", "data": {"corpus": "hf", "path": "x", "num_proc": 0}})
    with pytest.raises(ValueError, match=r"data\.num_proc applies to data\.corpus 'hf' only"):
        build_config({"task": "word_lm", "data": {"num_proc": 2}})


@pytest.mark.parametrize(
    ("level", "test_rows", "size", "unknown"),
    [
        ("char", ["zebra é"], 18 + 4, False),  # training's 18 and test's b, r, z, é
        ("word", ["the cat"], 13, False),  # <eos> and 12 words: no held-out word is unseen
        ("word", ["the zebra"], 14, True),  # 'zebra' needs <unk>
    ],
)
def test_the_hf_door_builds_the_text_door_vocabulary(
    level: str, test_rows: list[str], size: int, unknown: bool, tmp_path: Path
) -> None:
    from rhn.data.lm_corpus import CorpusSource, load_tokenized

    rows = {"train": ROWS["train"], "valid": ROWS["train"][:50], "test": test_rows}
    folder = tmp_path / "files"
    folder.mkdir()
    for name, split_rows in rows.items():
        (folder / f"{name}.txt").write_text("".join(f"{r}\n" for r in split_rows))
    hf_vocab, hf_ids = load_tokenized_hf(HFSource(str(folder), level=level))
    text_vocab, text_ids = load_tokenized(
        CorpusSource(corpus="file", path=str(folder), level=level), use_cache=False
    )
    assert hf_vocab.to_json() == text_vocab.to_json()
    assert len(hf_vocab) == size and hf_vocab.has_unknown is unknown
    assert {k: v.tolist() for k, v in hf_ids.items()} == {
        k: v.tolist() for k, v in text_ids.items()
    }
