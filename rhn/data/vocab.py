"""Vocabularies: text ⇄ token ids, at word, character/byte or subword level.

    WordVocab          whitespace tokens with ``<eos>`` at each line end (PTB); a
                       ``tokenizers`` WordLevel model, saved as ``tokenizer.json``
    CharVocab          every character (a byte, for byte-level corpora read as Latin-1),
                       line breaks included
    SentencePieceVocab BPE or unigram subwords trained on the training text

A vocabulary holds an unknown symbol only where its data needs one (:func:`needs_unknown`):
PTB's word files write ``<unk>`` themselves, a user's held-out text may have words training
lacks; PTB's characters, text8 and enwik8 need none, so their softmax has the papers' 50, 27
and 205 classes. Without one, ``encode`` refuses a symbol it lacks. ``digest()`` identifies a
vocabulary, so a checkpoint can refuse data tokenised another way.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from rhn.data.atomic_file import atomic_write_bytes, atomic_write_text
from rhn.data.text_file import DataFileError

UNK, EOS = "<unk>", "<eos>"
# Lines a tokenizer encodes at once: the encodings of a whole corpus (tokenizers' Encoding
# objects, Python ints) take ~60 times the text's size, a tensor of a chunk's ids 8 bytes a
# token.
ENCODE_LINES = 10_000
CHAR_UNK = "\ufffd"  # in a character vocabulary that has one, stands for any other character


class UnknownSymbolError(ValueError):
    """Text with a symbol a vocabulary without an unknown symbol lacks."""


class Vocab(Protocol):
    kind: str
    has_unknown: bool  # unseen symbols encode to an unknown symbol; else encode refuses them

    def __len__(self) -> int: ...
    def encode(self, text: str) -> torch.Tensor: ...
    def decode(self, ids: torch.Tensor | list[int]) -> str: ...
    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]: ...
    def unknown_tokens(self, text: str) -> list[str]: ...
    def to_json(self) -> str: ...
    def save(self, run_dir: str | Path) -> None: ...


def digest(vocab: Vocab) -> str:
    """A short hash of a vocabulary's serialised form."""
    return hashlib.sha256(vocab.to_json().encode()).hexdigest()[:16]


# Whitespace to str.split but not to tokenizers' WhitespaceSplit (Rust's char::is_whitespace):
# the information separators U+001C–U+001F. Every other character agrees.
_PY_ONLY_WHITESPACE = "\x1c\x1d\x1e\x1f"
_WORD = re.compile("[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def split_words(text: str) -> list[str]:
    """``text``'s words as the vocabulary's tokenizer cuts them (``str.split`` would also cut
    at U+001C–U+001F, so a word counted would not be the word encoded)."""
    if not any(c in text for c in _PY_ONLY_WHITESPACE):
        return text.split()  # the common case, at C speed
    return _WORD.findall(text)


def needs_unknown(train_counts: Counter[str], held_out_words: Iterable[str]) -> bool:
    """Whether a word vocabulary of ``train_counts`` needs ``<unk>``: the training text writes
    it (PTB's word files) or a held-out word is one training lacks."""
    return UNK in train_counts or any(w not in train_counts and w != EOS for w in held_out_words)


class WordVocab:
    """Whitespace-separated tokens; each line ends with ``<eos>`` (Mikolov's PTB convention)."""

    kind = "word"

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self._token_to_id: dict[str, int] = tokenizer.get_vocab()
        self._id_to_token = {i: t for t, i in self._token_to_id.items()}
        self.has_unknown = tokenizer.token_to_id(UNK) is not None

    @classmethod
    def from_text(cls, text: str, *, unknown: bool = True) -> WordVocab:
        return cls.from_counts(Counter(split_words(text)), unknown=unknown)

    @classmethod
    def from_counts(cls, counts: Counter[str], *, unknown: bool = True) -> WordVocab:
        """Tokens ordered by frequency (ties alphabetically) after ``<eos>``, and ``<unk>``
        first where ``unknown``."""
        from tokenizers import Tokenizer, models, pre_tokenizers

        counts = Counter(counts)
        if counts.pop(UNK, None) and not unknown:
            raise ValueError(f"the text writes {UNK}, so its vocabulary needs it: unknown=True")
        counts.pop(EOS, None)
        ordered = sorted(counts, key=lambda t: (-counts[t], t))
        specials = [UNK, EOS] if unknown else [EOS]
        vocab = {tok: i for i, tok in enumerate([*specials, *ordered])}
        tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return cls(tokenizer)

    def __len__(self) -> int:
        return len(self._id_to_token)

    @property
    def tokens(self) -> list[str]:
        """Every token, in id order."""
        return [self._id_to_token[i] for i in range(len(self))]

    def encode(self, text: str) -> torch.Tensor:
        lines = text.split("\n")
        if lines and lines[-1].strip() == "":
            lines.pop()  # a final line break closes the last line; it doesn't open a new one
        pieces = []
        for start in range(0, len(lines), ENCODE_LINES):
            batch = [f"{line} {EOS}" for line in lines[start : start + ENCODE_LINES]]
            try:
                encoded = self.tokenizer.encode_batch(batch)
            except Exception:  # tokenizers' "Missing [UNK] token": a word this vocabulary lacks
                if self.has_unknown:
                    raise
                raise _no_unknown_error(self.unknown_tokens(text)) from None
            pieces.append(torch.tensor([i for e in encoded for i in e.ids], dtype=torch.long))
        return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.decode_stream(ids))

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """:meth:`decode` a token at a time (as a sampler makes them): ``<eos>`` is a line
        break, a word is spaced from the word before it on its line."""
        line_start = True
        for i in ids:
            token = self._id_to_token[int(i)]
            if token == EOS:
                yield "\n"
            else:
                yield token if line_start else f" {token}"
            line_start = token == EOS

    def unknown_tokens(self, text: str) -> list[str]:
        """The distinct words of ``text`` this vocabulary lacks (each encodes to ``<unk>``,
        or is refused without one), in order of first appearance."""
        held = self._token_to_id
        return list(dict.fromkeys(w for w in split_words(text) if w not in held))

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> WordVocab:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text))

    def save(self, run_dir: str | Path) -> None:
        # What Tokenizer.save writes, but whole or not at all (a kill mid-write)
        atomic_write_text(Path(run_dir) / "tokenizer.json", self.tokenizer.to_str(pretty=True))


class CharVocab:
    """Characters, in the order given; ``\ufffd`` among them stands for any other.

    A corpus's vocabulary is every character of all its splits (sorted), as the RHN and
    Graves (2013) set-ups count enwik8's 205 bytes over the whole file: no symbol of the data
    is unknown, and text beyond it is refused rather than read as an unknown symbol.
    """

    kind = "char"

    def __init__(self, symbols: list[str]) -> None:
        if len(set(symbols)) != len(symbols):
            raise ValueError("a character vocabulary lists each symbol once")
        self.symbols = list(symbols)
        self.has_unknown = CHAR_UNK in symbols
        self.unk = symbols.index(CHAR_UNK) if self.has_unknown else None
        codes = np.array([ord(c) for c in symbols], dtype=np.int64)
        self._order = np.argsort(codes)
        self._sorted_codes = codes[self._order]

    @classmethod
    def from_text(cls, text: str, *, unknown: bool = True) -> CharVocab:
        """The characters of ``text`` (sorted), after ``\ufffd`` where ``unknown``."""
        symbols = sorted(set(text) - {CHAR_UNK})
        return cls([CHAR_UNK, *symbols] if unknown else sorted(set(text)))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> torch.Tensor:
        # Vectorised: a 90M-character corpus encodes in seconds, not minutes.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.searchsorted(self._sorted_codes, codes).clip(max=len(self.symbols) - 1)
        ids = self._order[pos]
        known = self._sorted_codes[pos] == codes
        if not known.all():
            if self.unk is None:
                raise _no_unknown_error(self.unknown_tokens(text))
            ids = np.where(known, ids, self.unk)
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.decode_stream(ids))

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """:meth:`decode` a character at a time."""
        return (self.symbols[int(i)] for i in ids)

    def unknown_tokens(self, text: str) -> list[str]:
        """The distinct characters of ``text`` this vocabulary lacks, in order of first
        appearance."""
        held = set(self.symbols)
        return list(dict.fromkeys(c for c in text if c not in held))

    def to_json(self) -> str:
        return json.dumps({"type": "char", "symbols": self.symbols}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CharVocab:
        return cls(json.loads(text)["symbols"])

    def save(self, run_dir: str | Path) -> None:
        atomic_write_text(Path(run_dir) / "vocab.json", self.to_json())


class SentencePieceVocab:
    """Subword units (BPE or unigram) learnt by ``sentencepiece`` from the training text."""

    kind = "sentencepiece"
    has_unknown = True  # sentencepiece models always hold <unk>

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, text: str, vocab_size: int, model_type: str) -> SentencePieceVocab:
        return cls.train_from_lines(iter(text.split("\n")), vocab_size, model_type)

    @classmethod
    def train_from_lines(
        cls, lines: Iterator[str], vocab_size: int, model_type: str
    ) -> SentencePieceVocab:
        """Learnt from the non-blank ``lines``, read one at a time."""
        import io

        import sentencepiece as spm

        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(line for line in lines if line.strip()),
                model_writer=buffer,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=1.0,
                bos_id=-1,
                eos_id=1,
                unk_id=0,
                pad_id=-1,
                minloglevel=2,
            )
        except RuntimeError as err:  # sentencepiece's C++ check, with its source line
            raise DataFileError(_spm_failure(str(err), vocab_size, model_type)) from None
        return cls(buffer.getvalue())

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> torch.Tensor:
        lines = [line for line in text.split("\n") if line.strip()]
        eos = self.processor.eos_id()
        chunks = []
        for start in range(0, len(lines), ENCODE_LINES):
            encoded = self.processor.encode(lines[start : start + ENCODE_LINES])
            ids = [i for pieces in encoded for i in [*pieces, eos]]
            chunks.append(torch.tensor(ids, dtype=torch.long))
        return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.decode_stream(ids))

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """:meth:`decode` a line at a time: a piece's spacing depends on its neighbours, so
        each line is decoded whole once its ``<eos>`` comes (lines joined by line breaks,
        the last one's not closed by one)."""
        eos = self.processor.eos_id()
        current: list[int] = []
        separator = ""
        for i in (int(i) for i in ids):
            if i == eos:
                yield separator + self.processor.decode(current)
                current, separator = [], "\n"
            else:
                current.append(i)
        if current:
            yield separator + self.processor.decode(current)

    def unknown_tokens(self, text: str) -> list[str]:
        """The distinct pieces of ``text`` that encode to the unknown piece, in order of
        first appearance."""
        sp, found = self.processor, []
        for line in (line for line in text.split("\n") if line.strip()):
            pieces = zip(sp.encode(line, out_type=str), sp.encode(line), strict=True)
            found += [piece for piece, i in pieces if i == sp.unk_id()]
        return list(dict.fromkeys(found))

    def to_json(self) -> str:
        return json.dumps(
            {"type": "sentencepiece", "model": base64.b64encode(self.model_proto).decode()}
        )

    @classmethod
    def from_json(cls, text: str) -> SentencePieceVocab:
        return cls(base64.b64decode(json.loads(text)["model"]))

    def save(self, run_dir: str | Path) -> None:
        atomic_write_bytes(Path(run_dir) / "spm.model", self.model_proto)


def _spm_failure(message: str, vocab_size: int, model_type: str) -> str:
    what = f"sentencepiece could not learn a {model_type} vocabulary of {vocab_size} pieces"
    if (most := re.search(r"value <= (\d+)", message)) is not None:
        return (
            f"{what}: the training text has room for at most {most[1]}; set data.vocab_size "
            f"to {most[1]} or less"
        )
    if (least := re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)) is not None:
        return (
            f"{what}: the training text needs at least {least[1]} (each of its characters is "
            f"a piece); set data.vocab_size to {least[1]} or more"
        )
    if "sentences_.empty()" in message:
        return f"{what}: the training text has no non-blank line"
    return f"{what}: {message.split('] ', 1)[-1] or message}"


def corpus_vocab(
    level: str, train: Iterable[str], held_out: Iterable[str], vocab_size: int
) -> Vocab:
    """A corpus's vocabulary from its text in chunks of whole lines (a split may be one):
    ``train``'s words (``<unk>`` only where :func:`needs_unknown`) or subwords (``bpe`` /
    ``unigram``, ``vocab_size`` pieces); at ``char`` level, the characters of both."""
    if level == "word":
        counts: Counter[str] = Counter()
        for chunk in train:
            counts.update(split_words(chunk))
        words = (w for chunk in held_out for w in split_words(chunk))
        return WordVocab.from_counts(counts, unknown=needs_unknown(counts, words))
    if level == "char":
        symbols: set[str] = set()
        for chunk in itertools.chain(train, held_out):
            symbols.update(chunk)
        return CharVocab(sorted(symbols))
    lines = (line for chunk in train for line in chunk.split("\n"))
    return SentencePieceVocab.train_from_lines(lines, vocab_size, level)


def _no_unknown_error(unknown: list[str]) -> UnknownSymbolError:
    shown = ", ".join(repr(t) for t in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    return UnknownSymbolError(
        f"the text has {len(unknown)} symbol(s) this vocabulary doesn't hold: {shown}{more} "
        f"(it has no unknown symbol: its training data had no use for one)"
    )


def vocab_from_json(text: str) -> Vocab:
    """Any vocabulary from its ``to_json()`` form."""
    if text.lstrip().startswith('{"type": "char"'):
        return CharVocab.from_json(text)
    if text.lstrip().startswith('{"type": "sentencepiece"'):
        return SentencePieceVocab.from_json(text)
    return WordVocab.from_json(text)
