"""Character vocabulary: every character of the training text, plus ``<unk>`` for others."""

from __future__ import annotations

import hashlib
import json

import torch

UNK = "\ufffd"  # stands for any character not seen in training


class CharVocab:
    def __init__(self, symbols: list[str]) -> None:
        if UNK not in symbols:
            symbols = [UNK, *symbols]
        self.symbols = symbols
        self.index = {c: i for i, c in enumerate(symbols)}
        self.unk = self.index[UNK]

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(c, self.unk) for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.symbols[int(i)] for i in ids)

    def digest(self) -> str:
        """A hash that identifies this vocabulary (recorded with checkpoints)."""
        return hashlib.sha256(json.dumps(self.symbols).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({"type": "char", "symbols": self.symbols}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CharVocab:
        return cls(json.loads(text)["symbols"])
