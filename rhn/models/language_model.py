"""A word- or character-level language model: embedding → RHN (or LSTM) → softmax.

Zilly et al. 2017 (arXiv 1607.03474), §5 and the official ``rhn_train.py``:

    tokens (T, N) → embedding (T, N, E) → embedding dropout (whole token types)
    → RHN with variational input and state dropout (T, N, H) → variational output dropout
    → logits (T, N, V), the decoder weight tied to the embedding if ``tie_weights`` (E = H)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from rhn.models.recurrent_lm import RecurrentConfig, RecurrentLM
from rhn.models.registry import ModelMeta, meta_value, register_model


@dataclass
class LanguageModelConfig(RecurrentConfig):
    """The ``model`` section of word- and character-level LM configs."""

    embed_size: int = 128
    embed_dropout: float = 0.0
    tie_weights: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embed_size < 1:
            raise ValueError(f"model.embed_size must be >= 1, got {self.embed_size}")
        if not 0.0 <= self.embed_dropout < 1.0:
            raise ValueError(f"model.embed_dropout must be in [0, 1), got {self.embed_dropout}")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError(
                f"model.tie_weights needs embed_size == hidden_size, got {self.embed_size} "
                f"and {self.hidden_size}"
            )


class LanguageModel(RecurrentLM):
    """``forward(tokens (T, N), state) → (logits (T, N, V), state)``.

    ``embed_dropout_unit`` is what embedding dropout drops: ``word_type`` (training: every
    occurrence of a word type within a column, the RHN code's ``noise_x``) or ``column`` (a
    column's whole input at once — what ``noise_x`` amounts to in the RHN code's
    ``evaluate_mc``, which runs batch 1, one step at a time, and draws it once per pass).
    """

    embed_dropout_unit: Literal["word_type", "column"] = "word_type"

    def __init__(self, vocab_size: int, cfg: LanguageModelConfig) -> None:
        super().__init__(vocab_size, cfg.embed_size, cfg)
        self.embedding = nn.Embedding(vocab_size, cfg.embed_size)
        self._tie()
        # load_state_dict(assign=True) puts a parameter of its own at each key, the
        # decoder's among them: tied again after it.
        self.register_load_state_dict_post_hook(lambda module, _: module._tie())
        self.reset_parameters()

    def _tie(self) -> None:
        if self.cfg.tie_weights:
            self.decoder.weight = self.embedding.weight

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> LanguageModel:
        # Where a conversion makes new parameters (to_empty() from the meta device, a move
        # torch can't do in place), each module gets its own: tied again after it.
        super()._apply(fn, recurse)
        self._tie()
        return self

    def reset_parameters(self) -> None:
        """The embedding and the decoder uniform ±``init_range`` (the RHN code's init)."""
        super().reset_parameters()
        nn.init.uniform_(self.embedding.weight, -self.init_bound, self.init_bound)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(tokens)
        p = self.cfg.embed_dropout
        if not self.training or p == 0.0:
            return embedded
        if self.embed_dropout_unit == "column":
            keep = torch.empty(1, tokens.shape[1], 1, device=tokens.device, dtype=embedded.dtype)
            return embedded * keep.bernoulli_(1 - p).div_(1 - p)
        # Drop whole token types per sequence (Gal & Ghahramani; the RHN code's noise_x):
        # within a batch column every occurrence of a dropped token is zeroed.
        # In the embedding's dtype: a float32 mask would promote a bf16 model's input.
        keep = torch.empty(
            tokens.shape[1], self.vocab_size, device=tokens.device, dtype=embedded.dtype
        )
        keep.bernoulli_(1 - p).div_(1 - p)
        return embedded * keep.gather(1, tokens.T).T.unsqueeze(-1)


@register_model(LanguageModelConfig)
def _build(cfg: LanguageModelConfig, meta: ModelMeta) -> LanguageModel:
    vocab_size = meta_value(meta, "vocab_size", int, cfg)
    if vocab_size < 2:  # -1 failed inside nn.Embedding; 0 or 1 is no vocabulary to predict
        raise ValueError(f"model metadata 'vocab_size' must be >= 2, got {vocab_size}")
    return LanguageModel(vocab_size, cfg)
