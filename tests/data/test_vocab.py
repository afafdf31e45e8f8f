import random
import re
from pathlib import Path

import pytest
import torch

from rhn.data.text_file import DataFileError
from rhn.data.vocab import CharVocab, SentencePieceVocab, WordVocab, digest, vocab_from_json

TEXT = "the cat sat on the mat\nthe dog sat\n"


def test_word_vocab_orders_by_frequency_adds_eos_and_maps_unknown_words() -> None:
    vocab = WordVocab.from_text(TEXT)
    assert vocab.tokens[:4] == ["<unk>", "<eos>", "the", "sat"]
    ids = vocab.encode(TEXT)
    # ties in frequency are ordered alphabetically: cat 4, dog 5, mat 6, on 7
    assert ids.tolist()[:7] == [2, 4, 3, 7, 2, 6, 1]  # the cat sat on the mat <eos>
    assert vocab.decode(ids) == "the cat sat on the mat\nthe dog sat\n"
    assert vocab.encode("the zebra sat").tolist() == [2, 0, 3, 1]


def test_word_vocab_without_unknown_has_eos_first_and_refuses_unseen_words() -> None:
    vocab = WordVocab.from_text(TEXT, unknown=False)
    assert not vocab.has_unknown and len(vocab) == 7  # <eos> and 6 words
    assert vocab.tokens[:3] == ["<eos>", "the", "sat"]
    assert vocab.encode("the cat\n").tolist() == [1, 3, 0]
    with pytest.raises(ValueError, match=r"2 symbol\(s\) this vocabulary doesn't hold: 'zebra', "
                       r"'<unk>' \(it has no unknown symbol"):  # fmt: skip
        vocab.encode("the zebra <unk>")
    with pytest.raises(ValueError, match="the text writes <unk>, so its vocabulary needs it"):
        WordVocab.from_text("a <unk> b", unknown=False)


def test_needs_unknown_only_where_the_data_does() -> None:
    from collections import Counter

    from rhn.data.vocab import needs_unknown

    train = Counter(["the", "cat", "sat"])
    assert not needs_unknown(train, ["the", "cat"])
    assert needs_unknown(train, ["the", "dog"])
    assert needs_unknown(Counter(["the", "<unk>", "sat"]), [])  # PTB's word files write it
    assert not needs_unknown(train, ["the", "<eos>"])  # a written <eos> encodes as <eos>


def test_char_vocab_keeps_line_breaks_and_maps_unseen_characters() -> None:
    vocab = CharVocab.from_text("ab\nba")
    ids = vocab.encode("ab\nz")
    assert vocab.decode(ids) == "ab\n\ufffd"
    assert ids[-1].item() == vocab.unk and vocab.has_unknown


def test_char_vocab_without_unknown_is_its_characters_and_refuses_others() -> None:
    vocab = CharVocab.from_text("ba\nab", unknown=False)
    assert vocab.symbols == ["\n", "a", "b"] and vocab.unk is None and not vocab.has_unknown
    assert vocab.encode("ab\n").tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match=r"1 symbol\(s\) this vocabulary doesn't hold: 'z'"):
        vocab.encode("abz")
    # a vocabulary saved before unknown symbols were optional keeps its own
    old = vocab_from_json('{"type": "char", "symbols": ["\\ufffd", "a", "b"]}')
    assert old.encode("az").tolist() == [1, 0]


def test_sentencepiece_round_trip() -> None:
    text = "\n".join(["the quick brown fox jumps over the lazy dog"] * 50)
    vocab = SentencePieceVocab.train(text, 40, "bpe")
    assert len(vocab) == 40
    assert vocab.decode(vocab.encode("the lazy fox\nover the dog")) == "the lazy fox\nover the dog"


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_a_sentencepiece_vocabulary_of_a_size_the_text_cant_take_names_the_size_it_can(
    model_type: str,
) -> None:
    text = "\n".join(["the quick brown fox jumps over the lazy dog"] * 50)
    with pytest.raises(DataFileError) as err:
        SentencePieceVocab.train(text, 8000, model_type)  # the default data.vocab_size
    found = re.fullmatch(
        rf"sentencepiece could not learn a {model_type} vocabulary of 8000 pieces: the "
        r"training text has room for at most (\d+); set data.vocab_size to \1 or less",
        str(err.value),
    )
    assert found, str(err.value)
    assert len(SentencePieceVocab.train(text, int(found[1]), model_type)) == int(found[1])
    with pytest.raises(DataFileError) as err:
        SentencePieceVocab.train(text, 3, model_type)
    found = re.fullmatch(
        rf"sentencepiece could not learn a {model_type} vocabulary of 3 pieces: the training "
        r"text needs at least (\d+) \(each of its characters is a piece\); set "
        r"data.vocab_size to \1 or more",
        str(err.value),
    )
    assert found, str(err.value)
    assert len(SentencePieceVocab.train(text, int(found[1]), model_type)) == int(found[1])
    with pytest.raises(DataFileError, match="the training text has no non-blank line"):
        SentencePieceVocab.train("\n \n", 40, model_type)


def test_decoding_a_token_at_a_time_gives_the_pieces_a_sampler_prints() -> None:
    words = WordVocab.from_text("the cat\nsat\n")
    ids = [words.tokens.index(t) for t in ["the", "cat", "<eos>", "sat", "the", "<eos>", "<eos>"]]
    assert list(words.decode_stream(ids)) == ["the", " cat", "\n", "sat", " the", "\n", "\n"]
    assert words.decode(ids) == "the cat\nsat the\n\n"
    chars = CharVocab.from_text("ab\n")
    assert list(chars.decode_stream(chars.encode("ba\n").tolist())) == ["b", "a", "\n"]
    # Subwords a line at a time (a piece's spacing depends on its neighbours): the lines
    # joined by line breaks, as decode gives them.
    pieces = SentencePieceVocab.train("\n".join(["the quick brown fox"] * 50), 30, "bpe")
    ids = pieces.encode("the fox\nquick brown\nthe").tolist()[:-1]  # the last line open
    assert list(pieces.decode_stream(ids)) == ["the fox", "\nquick brown", "\nthe"]
    assert list(pieces.decode_stream([*ids, pieces.processor.eos_id()]))[-1] == "\nthe"


@pytest.mark.parametrize(
    "vocab",
    [WordVocab.from_text(TEXT), CharVocab.from_text(TEXT)],
    ids=["word", "char"],
)
def test_serialisation_round_trip_and_digest(vocab) -> None:
    restored = vocab_from_json(vocab.to_json())
    assert torch.equal(restored.encode(TEXT), vocab.encode(TEXT))
    assert digest(restored) == digest(vocab)
    other = type(vocab).from_text(TEXT + " extra")
    assert digest(other) != digest(vocab)


def test_unknown_tokens_are_what_encodes_to_the_unknown_symbol() -> None:
    words = WordVocab.from_text("the cat sat\non the mat\n")
    # as written in the text, in order, once each; "<unk>" itself is in the vocabulary
    assert words.unknown_tokens("The cat xyzzy\nxyzzy <unk> sat") == ["The", "xyzzy"]
    assert words.unknown_tokens("the cat\n") == []
    chars = CharVocab.from_text("the cat\n")
    assert chars.unknown_tokens("the CAT!") == ["C", "A", "T", "!"]
    pieces = SentencePieceVocab.train(
        "the cat sat on the mat\n" * 200 + "a dog ran\n" * 100, 30, "bpe"
    )
    assert pieces.unknown_tokens("the Zqx cat\nZqx Q") == ["Zqx", "Q"]
    assert pieces.unknown_tokens("the cat sat\n") == []


def test_saved_vocabularies_are_what_their_libraries_write_and_leave_no_temporary(
    tmp_path: Path,
) -> None:
    words = WordVocab.from_text("the cat sat\n")
    words.save(tmp_path)
    words.tokenizer.save(str(tmp_path / "by_tokenizers.json"))
    assert (tmp_path / "tokenizer.json").read_text() == (
        tmp_path / "by_tokenizers.json"
    ).read_text()
    CharVocab.from_text("the cat\n").save(tmp_path)
    pieces = SentencePieceVocab.train("the cat sat on the mat\n" * 200, 30, "bpe")
    pieces.save(tmp_path)
    assert (tmp_path / "spm.model").read_bytes() == pieces.model_proto
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "by_tokenizers.json", "spm.model", "tokenizer.json", "vocab.json"
    ]  # fmt: skip


def test_words_are_counted_as_the_tokenizer_cuts_them() -> None:
    from tokenizers import pre_tokenizers

    from rhn.data.vocab import split_words

    # str.split also cuts at U+001C..U+001F; WhitespaceSplit does not. A word counted must be
    # the word encoded, or it encodes to <unk> though it was in the training text.
    vocab = WordVocab.from_text("alpha\x1cbeta gamma\n")
    assert "alpha\x1cbeta" in vocab.tokens and "alpha" not in vocab.tokens
    ids = vocab.encode("alpha\x1cbeta gamma\n")
    assert vocab.decode(ids) == "alpha\x1cbeta gamma\n"
    # Against the tokenizer itself, on text mixing every kind of whitespace.
    rng = random.Random(0)
    pieces = ["ab", "\x1c", "\x1f", " ", "\t", "\n", "\u3000", "\xa0", "\x85", "é", "\u2028"]
    cut = pre_tokenizers.WhitespaceSplit()
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(30))
        assert split_words(text) == [word for word, _ in cut.pre_tokenize_str(text)], repr(text)


@pytest.mark.parametrize("kind", ["word", "sentencepiece"])
def test_a_long_text_is_encoded_in_chunks_of_lines_to_the_same_ids_as_line_by_line(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rhn.data.vocab as vocab_module

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(23)]
    text = "\n".join(lines) + "\n"
    if kind == "word":
        vocab = WordVocab.from_text(text)
    else:
        vocab = SentencePieceVocab.train(text * 20, 30, "bpe")
    # The reference: one line at a time, concatenated (a blank line is <eos> alone for words
    # and nothing for sentencepiece, which skips it).
    expected = torch.cat([vocab.encode(line + "\n") for line in lines])
    monkeypatch.setattr(vocab_module, "ENCODE_LINES", 5)  # 23 lines: 5 chunks, the last of 3
    assert torch.equal(vocab.encode(text), expected)
    assert vocab.encode("").tolist() == [] and vocab.encode("").dtype == torch.long
