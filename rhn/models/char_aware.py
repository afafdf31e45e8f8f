"""Character-aware language model (Kim, Jernite, Sontag & Rush, AAAI 2016, arXiv 1508.06615).

Words are read through their characters; predictions stay word-level:

    word ids (T, N) → characters (T, N, W) (a fixed table, one row per vocabulary word)
    → CharCNN (T, N, Σf) → Highway × k (relu, T-gate bias −2) → LSTM or RHN (T, N, H)
    → dropout → softmax over words (T, N, V)

Published PTB (test perplexity): small (widths 1–6, 25·w filters, 1 highway layer, 2×300
LSTM) 92.3 with 5M parameters; large (widths 1–7, min(200, 50·w), 2 highway, 2×650) 78.9
with 19M.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from rhn.models.recurrent_lm import RecurrentConfig, RecurrentLM
from rhn.models.registry import ModelMeta, meta_value, register_model
from rhn.nn import Highway
from rhn.nn.charcnn import CharCNN


@dataclass
class CharAwareConfig(RecurrentConfig):
    """The ``model`` section of the char-aware LM; defaults are Kim et al.'s small model."""

    rnn: Literal["rhn", "lstm"] = "lstm"
    hidden_size: int = 300
    num_layers: int = 2
    depth: int = 1
    layer_dropout: float = 0.5
    output_dropout: float = 0.5
    output_dropout_kind: Literal["variational", "ordinary"] = "ordinary"  # nn.Dropout in Kim's
    # code; its criterion sums the per-step batch means over the 35 steps (lr 1, clip 5 assume it)
    loss_reduction: Literal["mean", "sum_over_time"] = "sum_over_time"
    init_range: float | None = 0.05
    char_embed_size: int = 15
    widths: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    filters: list[int] = field(default_factory=lambda: [25, 50, 75, 100, 125, 150])
    highway_layers: int = 1
    highway_gate_bias: float = -2.0
    max_word_length: int = 21  # characters per word, start and end markers included

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.widths) != len(self.filters) or not self.widths:
            raise ValueError(
                f"model.widths and model.filters must be non-empty and equally long, got "
                f"{self.widths} and {self.filters}"
            )
        sizes = [("char_embed_size", self.char_embed_size)]
        sizes += [(f"widths[{i}]", w) for i, w in enumerate(self.widths)]
        sizes += [(f"filters[{i}]", f) for i, f in enumerate(self.filters)]
        for key, value in sizes:  # named here, not as the CharCNN's argument it becomes
            if value < 1:
                raise ValueError(f"model.{key} must be an integer >= 1, got {value}")
        if self.highway_layers < 0:
            raise ValueError(f"model.highway_layers must be >= 0, got {self.highway_layers}")
        # A word is its start and end markers around at least one character: with less
        # room every word was the same two markers.
        least = max(*self.widths, 3)
        if self.max_word_length < least:
            raise ValueError(
                f"model.max_word_length ({self.max_word_length}) must be at least {least}: the "
                f"widest filter ({max(self.widths)}) and 3 (a word's start and end markers "
                f"and one character)"
            )


class CharAwareLM(RecurrentLM):
    """``forward(word ids (T, N), state) → (logits (T, N, V), state)``.

    ``word_chars`` ``(V, W)`` holds each vocabulary word's character ids (0 = padding);
    it is a buffer, saved with the weights.
    """

    def __init__(self, word_chars: torch.Tensor, num_chars: int, cfg: CharAwareConfig) -> None:
        # init_range reaches every layer: Kim's code draws all parameters from U(±0.05).
        r = cfg.init_range
        cnn = CharCNN(num_chars, cfg.char_embed_size, cfg.widths, cfg.filters, init_range=r)
        super().__init__(word_chars.shape[0], cnn.output_size, cfg)
        self.register_buffer("word_chars", word_chars.clone())
        self.char_cnn = cnn
        self.highway = (
            Highway(
                cnn.output_size, cfg.highway_layers, "relu", cfg.highway_gate_bias, init_range=r
            )
            if cfg.highway_layers
            else nn.Identity()
        )
        self.reset_parameters()

    @classmethod
    def from_words(cls, words: list[str], cfg: CharAwareConfig) -> CharAwareLM:
        """The model for a vocabulary of ``words`` (id order), spelled as Kim et al. spell
        them (:data:`KIM_SPELLING`)."""
        table, chars = word_char_table(words, cfg.max_word_length, replace=KIM_SPELLING)
        return cls(table, len(chars), cfg)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        # Each distinct word of the batch is read once (a PTB batch of 700 tokens holds ~360):
        # the CNN and the highway layers are a third of a training step, and they see words
        # one at a time, so the copies are the same vectors (their gradients add up).
        words, where = torch.unique(tokens, return_inverse=True)
        return self.highway(self.char_cnn(self.word_chars[words]))[where]


# Kim et al. spell the two special tokens with one character each.
KIM_SPELLING = {"<unk>": "|", "<eos>": "+"}


def word_char_table(
    words: list[str], max_length: int, *, replace: dict[str, str] | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Each word's characters as ids, ``(V, max_length)``, and the character list.

    Id 0 pads, 1 marks the start and 2 the end of a word (Kim's ``{`` and ``}``); words
    longer than ``max_length − 2`` are cut. ``replace`` spells special tokens differently
    (Kim writes ``<unk>`` as ``|`` and ``<eos>`` as ``+``).
    """
    replace = replace or {}
    spelled = [replace.get(w, w) for w in words]
    chars = ["<pad>", "<w>", "</w>", *sorted({c for w in spelled for c in w})]
    index = {c: i for i, c in enumerate(chars)}
    table = torch.zeros(len(words), max_length, dtype=torch.long)
    for row, word in enumerate(spelled):
        ids = [1, *(index[c] for c in word[: max_length - 2]), 2]
        table[row, : len(ids)] = torch.tensor(ids)
    return table, chars


@register_model(CharAwareConfig)
def _build(cfg: CharAwareConfig, meta: ModelMeta) -> CharAwareLM:
    words = meta_value(meta, "words", (list, tuple), cfg)
    if not words or not all(isinstance(w, str) for w in words):
        raise ValueError("model metadata 'words' for CharAwareConfig must be a list of strings")
    return CharAwareLM.from_words(words, cfg)
