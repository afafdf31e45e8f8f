import io
import os
import random
import re
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch

from rhn.data import corpora, data_dirs, lm_corpus
from rhn.data.corpora import load_corpus
from rhn.data.lm_corpus import CorpusSource, load_tokenized, read_splits
from rhn.data.synthetic import write_ptb
from rhn.data.text_file import DataFileError
from rhn.train.config import build_config
from tests.data.disk_full import download_with_full_disk

DATA = os.environ.get("RHN_DATA_DIR")
needs_data = pytest.mark.skipif(
    not DATA or not (Path(DATA) / "ptb").is_dir(),
    reason="RHN_DATA_DIR is unset or has no ptb/ folder (the real PTB files)",
)


@needs_data
def test_real_ptb_word_has_the_standard_sizes() -> None:
    vocab, ids = load_tokenized(CorpusSource(corpus="ptb_word"), use_cache=False)
    assert len(vocab) == 10000
    assert {k: len(v) for k, v in ids.items()} == {"train": 929589, "valid": 73760, "test": 82430}
    text = load_corpus("ptb_word", allow_download=False)["valid"]
    assert text.startswith(" consumers may want to move their telephones")


@needs_data
def test_real_ptb_char_keeps_characters_as_tokens() -> None:
    vocab, ids = load_tokenized(CorpusSource(corpus="ptb_char"), use_cache=False)
    # 49 symbols ('_' for spaces among them) and <eos>: the 50 classes of the RHN paper; no
    # <unk>, which no split of the character files holds
    assert len(vocab) == 50 and not vocab.has_unknown
    assert len(ids["train"]) == 5017482
    assert vocab.decode(ids["valid"][:9]) == "c o n s u m e r s"


def _hutter_file(tmp_path: Path, name: str, payload: bytes, *, zipped: bool) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    if zipped:
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as archive:
            archive.writestr(name, payload)
    else:
        (folder / name).write_bytes(payload)
    return tmp_path


def test_enwik8_is_read_as_bytes_and_split_90_5_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpora, "HUTTER_SPLIT", (900, 50, 50))
    payload = bytes(range(256)) * 3 + "naïve – ✓\n".encode() * 20
    payload = payload[:1000]
    root = _hutter_file(tmp_path, "enwik8", payload, zipped=True)
    splits = load_corpus("enwik8", root, allow_download=False)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [900, 50, 50]
    assert "".join(splits.values()).encode("latin-1") == payload  # bytes, line breaks and all


def test_text8_plain_file_and_truncation_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpora, "HUTTER_SPLIT", (90, 5, 5))
    root = _hutter_file(tmp_path, "text8", b" anarchism originated as a term" * 4, zipped=False)
    splits = load_corpus("text8", root, allow_download=False)
    assert splits["train"].startswith(" anarchism") and len(splits["test"]) == 5
    monkeypatch.setattr(corpora, "HUTTER_SPLIT", (900, 50, 50))
    with pytest.raises(DataFileError, match=r"text8 holds 124 symbols; text8 has 1,000"):
        load_corpus("text8", root, allow_download=False)


def test_missing_corpus_says_what_was_looked_for_where_and_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    with pytest.raises(DataFileError) as err:
        load_corpus("ptb_word", tmp_path, allow_download=False)
    message = str(err.value)
    assert "could not find ptb.train.txt, ptb.valid.txt, ptb.test.txt" in message
    assert str(tmp_path / "ptb") in message
    assert "simple-examples.tgz" in message
    with pytest.raises(ValueError, match="corpus must be one of"):
        load_corpus("wikitext")


def test_a_corpus_is_read_from_one_folder_never_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, mine = tmp_path / "shared", tmp_path / "mine"
    write_ptb(shared / "ptb", seed=1)
    monkeypatch.setenv("RHN_DATA_DIR", str(shared))
    write_ptb(mine, seed=2)
    (mine / "ptb.test.txt").unlink()
    # data.path holds two of the three files: the test split was taken from RHN_DATA_DIR.
    with pytest.raises(
        DataFileError,
        match=rf"could not find ptb\.test\.txt .*\({re.escape(str(mine))} holds ptb\.train\.txt, "
        r"ptb\.valid\.txt but not the rest; they are read from one folder\)",
    ):
        load_corpus("ptb_word", mine, allow_download=False)
    # A data.path holding none of them still falls back to RHN_DATA_DIR, whole.
    empty = tmp_path / "empty"
    empty.mkdir()
    ours = load_corpus("ptb_word", empty, allow_download=False)
    assert ours == load_corpus("ptb_word", shared, allow_download=False)
    # With all three, data.path's own files are read, not RHN_DATA_DIR's.
    (mine / "ptb.test.txt").write_text("a b c\n")
    assert load_corpus("ptb_word", mine, allow_download=False)["test"] == "a b c\n"


def test_missing_corpus_names_the_config_key_a_language_model_config_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError) as err:
        load_corpus("ptb_word", tmp_path / "empty", allow_download=False)
    found = re.search(r"a folder named by RHN_DATA_DIR or (data\.\w+)\.$", str(err.value))
    assert found, str(err.value)
    key = found.group(1)
    assert key == "data.path"  # data.data_dir is the vision configs' key
    # Following the advice works: the key is accepted and the files are found there.
    write_ptb(tmp_path / "mine")
    config = build_config(
        {"task": "word_lm", "data": {"corpus": "ptb_word"}}, [f"{key}={tmp_path / 'mine'}"]
    )
    source = config.data.source("word")
    assert read_splits(source, allow_download=False, splits=("valid",))["valid"]


def test_user_folder_and_single_file(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text(f"{split} text\nsecond line\n")
    vocab, ids = load_tokenized(CorpusSource(corpus="file", path=str(folder)), use_cache=False)
    # The characters of every split, 'v' of "valid" and 's' of "test" included; no unknown.
    assert vocab.symbols == sorted(set("train valid test text\nsecond line"))
    assert vocab.decode(ids["valid"]) == "valid text\nsecond line\n"
    assert vocab.decode(ids["train"]) == "train text\nsecond line\n"
    single = tmp_path / "one.txt"
    single.write_text("abcdefghij" * 100)
    _, ids = load_tokenized(
        CorpusSource(corpus="file", path=str(single), valid_fraction=0.1, test_fraction=0.2),
        use_cache=False,
    )
    assert [len(ids[s]) for s in ("train", "valid", "test")] == [700, 100, 200]


def test_tokenised_corpora_are_cached_and_reloaded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path))
    source = CorpusSource(corpus="builtin", max_chars=5000)
    vocab, ids = load_tokenized(source)
    cached = list((tmp_path / "tokens").glob("builtin-*.pt"))
    assert len(cached) == 1
    with monkeypatch.context() as patched:  # the second load must come from the cache

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("the cache should have answered")

        patched.setattr(lm_corpus, "read_splits", refuse)
        patched.setattr(lm_corpus, "build_vocab", refuse)
        vocab2, ids2 = load_tokenized(source)
    assert vocab2.to_json() == vocab.to_json()
    assert set(ids2) == set(ids) == {"train", "valid", "test"}
    assert all(torch.equal(ids[k], ids2[k]) for k in ids)
    cached[0].write_bytes(b"torn")  # a broken cache is rebuilt, not trusted
    _, ids3 = load_tokenized(source)
    assert torch.equal(ids3["train"], ids["train"])


def test_changing_the_source_file_changes_the_cache_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path / "cache"))
    text = tmp_path / "corpus.txt"
    text.write_text("abcd" * 25)
    source = CorpusSource(corpus="file", path=str(text), valid_fraction=0.1, test_fraction=0.1)
    vocab, ids = load_tokenized(source)
    assert vocab.decode(ids["train"]) == ("abcd" * 25)[:80]
    cache = tmp_path / "cache" / "tokens"
    assert len(list(cache.glob("file-*.pt"))) == 1
    # Other content (another size): a new cache entry, built from the new text.
    text.write_text("wxyz" * 30)
    vocab, ids = load_tokenized(source)
    assert vocab.decode(ids["train"]) == ("wxyz" * 30)[:96]
    assert len(list(cache.glob("file-*.pt"))) == 2
    # The same size and the old modification time (as cp -p or rsync -t leave a copy):
    # rebuilt too, not the stale entry.
    stat = text.stat()
    text.write_text("pqrs" * 30)
    os.utime(text, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert text.stat().st_size == stat.st_size and text.stat().st_mtime_ns == stat.st_mtime_ns
    vocab, ids = load_tokenized(source)
    assert vocab.decode(ids["train"]) == ("pqrs" * 30)[:96]
    assert len(list(cache.glob("file-*.pt"))) == 3
    # Another way of encoding (a new ENCODING_VERSION) ignores what the old one cached.
    monkeypatch.setattr(lm_corpus, "ENCODING_VERSION", lm_corpus.ENCODING_VERSION + 1)
    load_tokenized(source)
    assert len(list(cache.glob("file-*.pt"))) == 4


def test_a_killed_cache_write_leaves_no_file_and_its_temporary_is_removed_later(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path))
    source = CorpusSource(corpus="builtin", max_chars=5000)

    def killed(obj: object, f: object) -> None:
        f.write(b"half an entry")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # a kill mid-write, as far as the file is concerned

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(lm_corpus.torch, "save", killed)
        load_tokenized(source)
    tokens = tmp_path / "tokens"
    assert list(tokens.iterdir()) == []  # no torn entry, and this temporary went with it
    # A SIGKILL leaves its temporary; the next write of that entry removes it once it is
    # too old to be a write in progress, and leaves a young one (another process's) alone.
    load_tokenized(source)
    (entry,) = tokens.iterdir()
    key = entry.name
    entry.unlink()
    dead, young = tokens / f".{key}.dead.tmp", tokens / f".{key}.young.tmp"
    dead.write_bytes(b"x")
    young.write_bytes(b"y")
    old = time.time() - lm_corpus.DEAD_TEMPORARY_S - 60
    os.utime(dead, (old, old))
    load_tokenized(source)
    assert sorted(p.name for p in tokens.iterdir()) == sorted([key, young.name])


def test_a_download_that_fails_part_way_leaves_no_torn_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = {split: f" {split} words \n" * n for split, n in (("train", 90), ("valid", 90))}
    texts["test"] = " test words \n" * 400  # 5,200 bytes, the only file past the limit
    (tmp_path / "server").mkdir()
    with tarfile.open(tmp_path / "server" / "simple-examples.tgz", "w:gz") as archive:
        for split, text in texts.items():
            member = tarfile.TarInfo(f"./simple-examples/data/ptb.{split}.txt")
            member.size = len(text.encode())
            archive.addfile(member, io.BytesIO(text.encode()))
    cache = tmp_path / "cache"
    code = "from rhn.data.corpora import load_corpus\nload_corpus('ptb_word')"
    err = download_with_full_disk(code, server=tmp_path / "server", cache=cache, limit=4000)
    assert "File too large" in err.splitlines()[-1]
    folder = cache / "downloads" / "ptb_word"
    assert sorted(p.name for p in folder.iterdir()) == ["ptb.train.txt", "ptb.valid.txt"]
    # Offline, the short copy is not taken for the corpus: its test file is named as missing.
    monkeypatch.setenv("RHN_CACHE_DIR", str(cache))
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.setenv("RHN_OFFLINE", "1")
    with pytest.raises(DataFileError, match=r"could not find ptb\.test\.txt"):
        load_corpus("ptb_word")
    monkeypatch.setenv("RHN_OFFLINE", "0")
    archive = (tmp_path / "server" / "simple-examples.tgz").read_bytes()
    monkeypatch.setattr(data_dirs, "fetch", lambda url, timeout=60.0: archive)
    assert load_corpus("ptb_word") == texts  # the next download completes it


def test_the_download_door_unpacks_a_zipped_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b" anarchism originated as a term" * 4
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("text8", payload)
    asked = []
    monkeypatch.setattr(
        data_dirs, "fetch", lambda url, timeout=60.0: asked.append(url) or archive.getvalue()
    )
    monkeypatch.setattr(corpora, "HUTTER_SPLIT", (100, 12, 12))
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.delenv("RHN_OFFLINE", raising=False)
    splits = load_corpus("text8")
    assert asked == ["http://mattmahoney.net/dc/text8.zip"]
    assert "".join(splits.values()).encode() == payload
    assert (tmp_path / "cache" / "downloads" / "text8" / "text8").read_bytes() == payload


def test_a_single_file_is_cut_between_lines_never_inside_a_word(tmp_path: Path) -> None:
    lines = [" ".join(f"w{(i * 7 + j) % 97}" for j in range(5)) for i in range(200)]
    single = tmp_path / "one.txt"
    single.write_text("".join(f"{line}\n" for line in lines))
    source = CorpusSource(
        corpus="file", path=str(single), level="word", valid_fraction=0.1, test_fraction=0.1
    )
    texts = read_splits(source)
    assert "".join(texts.values()) == single.read_text()
    kept = {split: text.splitlines() for split, text in texts.items()}
    # Whole lines only, about the fractions asked for: 160 / 20 / 20 of the 200.
    assert kept["train"] + kept["valid"] + kept["test"] == lines
    assert [len(kept[s]) for s in ("train", "valid", "test")] == [160, 20, 20]
    vocab, _ = load_tokenized(source, use_cache=False)
    assert not vocab.has_unknown  # every held-out word is a training word
    # Lines longer than a part: cut at a space instead, a part never left empty.
    long = " ".join(f"x{i}" for i in range(300))
    cut = corpora.split_text(f"{long}\n{long}\n", 0.1, 0.1)
    assert all(cut.values()) and "".join(cut.values()) == f"{long}\n{long}\n"
    assert cut["valid"].startswith("x") and cut["test"].startswith("x")
    assert all(word in long.split() for text in cut.values() for word in text.split())


def test_no_part_of_a_cut_file_is_left_without_a_word() -> None:
    # Paragraphs longer than a part, between blank lines, the file ending in one: a cut at
    # the next line's start gave a test split of "\n" alone.
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "then", "it", "ran", "from", "the", "dog"]
    for _ in range(200):
        paragraphs = [" ".join(rng.choices(words, k=rng.randint(30, 90))) for _ in range(12)]
        text = "\n\n".join(paragraphs) + rng.choice(["\n", "\n\n", "\n\n\n", ""])
        cut = corpora.split_text(text, 0.05, 0.05)
        assert "".join(cut.values()) == text
        assert all(part.split() and set(part.split()) <= set(words) for part in cut.values())


def test_a_cache_that_cant_be_written_is_warned_of_and_the_corpus_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path / "cache"))
    source = CorpusSource(corpus="builtin", max_chars=5000)
    expected = load_tokenized(source, use_cache=False)[1]

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.warns(UserWarning, match=r"could not cache the tokenised corpus in .*builtin-"):
        _, ids = load_tokenized(source)
    assert all(torch.equal(ids[k], expected[k]) for k in expected)
    assert not list((tmp_path / "cache" / "tokens").iterdir())  # nor a temporary left


def test_max_chars_keeps_whole_lines(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    line = " ".join(f"word{i}" for i in range(40)) + "\n"  # 309 characters
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text(line * 10)
    source = CorpusSource(corpus="file", path=str(folder), level="word", max_chars=1000)
    texts = read_splits(source)
    assert all(text == line * 3 for text in texts.values())  # 927 of the 1,000
    assert not load_tokenized(source, use_cache=False)[0].has_unknown
    # One long line: cut after a space; no whitespace at all: at max_chars itself.
    assert corpora.head_text("ab cd ef", 7) == "ab cd "
    assert corpora.head_text("abcdefgh", 7) == "abcdefg"
    assert corpora.head_text("abc", 7) == "abc"
