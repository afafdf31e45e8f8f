"""A recurrent language model: embedding → RHN (or LSTM) → softmax over the vocabulary.

Zilly et al. 2017 (arXiv 1607.03474), §5 and the official ``rhn_train.py``:

    tokens (T, N) → embed (T, N, E) → [embedding dropout: whole words]
    → RHN or LSTM (T, N, H) with variational input and state dropout
    → variational output dropout → logits (T, N, V); decoder weight tied to the embedding
      when ``tie_weights`` (needs E = H).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rhn.nn import RHN
from rhn.nn.dropout import VariationalDropout

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None


@dataclass
class LanguageModelConfig:
    """The ``model`` section of a language-modelling config (the vocabulary size comes
    from the data)."""

    rnn: Literal["rhn", "lstm"] = "rhn"
    embed_size: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    depth: int = 3
    gate_bias: float = -2.0
    embed_dropout: float = 0.0
    input_dropout: float = 0.0
    state_dropout: float = 0.0
    output_dropout: float = 0.0
    tie_weights: bool = False
    # "mean": per-token mean cross-entropy. "sum_over_time": summed over time, averaged over
    # the batch — the RHN code's loss, under which its learning rates (SGD 0.2) and clip
    # norm (10) are defined.
    loss_reduction: Literal["mean", "sum_over_time"] = "mean"
    init_range: float | None = None  # None: ±1/√hidden_size; the RHN recipes use 0.04

    def __post_init__(self) -> None:
        for key in ("embed_size", "hidden_size", "num_layers", "depth"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("embed_dropout", "input_dropout", "state_dropout", "output_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"model.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError(
                f"model.tie_weights needs embed_size == hidden_size, got {self.embed_size} "
                f"and {self.hidden_size}"
            )
        if self.init_range is not None and self.init_range <= 0:
            raise ValueError(f"model.init_range must be > 0, got {self.init_range}")


class LanguageModel(nn.Module):
    """``forward(tokens (T, N), state) → (logits (T, N, V), state)``."""

    def __init__(self, vocab_size: int, cfg: LanguageModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.embed_size)
        if cfg.rnn == "rhn":
            self.rnn: nn.Module = RHN(
                cfg.embed_size,
                cfg.hidden_size,
                num_layers=cfg.num_layers,
                depth=cfg.depth,
                gate_bias=cfg.gate_bias,
                input_dropout=cfg.input_dropout,
                state_dropout=cfg.state_dropout,
            )
        else:
            self.rnn = nn.LSTM(
                cfg.embed_size, cfg.hidden_size, num_layers=cfg.num_layers, dropout=0.0
            )
            self.lstm_input_dropout = VariationalDropout(cfg.input_dropout)
        self.output_dropout = VariationalDropout(cfg.output_dropout)
        self.decoder = nn.Linear(cfg.hidden_size, vocab_size)
        self.reset_parameters()
        if cfg.tie_weights:
            self.decoder.weight = self.embedding.weight

    def reset_parameters(self) -> None:
        """Uniform ±``init_range`` everywhere, as the RHN code; then the RHN's gate biases."""
        r = self.cfg.init_range or self.cfg.hidden_size**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -r, r)
        if isinstance(self.rnn, RHN):
            hidden = self.cfg.hidden_size
            with torch.no_grad():
                for k in range(self.cfg.num_layers):
                    bias = self.rnn.layer_parameters(k)[2]
                    bias[:, :hidden].zero_()
                    bias[:, hidden:].fill_(self.cfg.gate_bias)
        nn.init.zeros_(self.decoder.bias)

    def initial_state(self, batch: int, device: torch.device) -> State:
        shape = (self.cfg.num_layers, batch, self.cfg.hidden_size)
        zeros = torch.zeros(shape, device=device)
        return zeros if self.cfg.rnn == "rhn" else (zeros, zeros.clone())

    def _embed_dropout(self, tokens: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        # Drop whole word types for the batch (Gal & Ghahramani): every occurrence of a
        # dropped token is zeroed.
        p = self.cfg.embed_dropout
        if not self.training or p == 0.0:
            return embedded
        keep = torch.empty(self.vocab_size, 1, device=tokens.device).bernoulli_(1 - p) / (1 - p)
        return embedded * keep[tokens]

    def forward(
        self, tokens: torch.Tensor, state: State = None, *, return_gates: bool = False
    ) -> tuple[torch.Tensor, State] | tuple[torch.Tensor, State, torch.Tensor]:
        x = self._embed_dropout(tokens, self.embedding(tokens))
        gates = None
        if isinstance(self.rnn, RHN):
            if return_gates:
                output, state, gates = self.rnn(x, state, return_gates=True)
            else:
                output, state = self.rnn(x, state)
        else:
            output, state = self.rnn(self.lstm_input_dropout(x), state)
        logits = self.decoder(self.output_dropout(output))
        return (logits, state, gates) if return_gates else (logits, state)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss of logits (T, N, V) against targets (T, N), per ``loss_reduction``."""
        total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        if self.cfg.loss_reduction == "sum_over_time":
            return total / targets.shape[1]
        return total / targets.numel()

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        length: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` (P,) token ids by ``length`` sampled tokens (0 = greedy)."""
        if prompt.numel() == 0:
            raise ValueError("the prompt must hold at least one token")
        device = self.embedding.weight.device
        logits, state = self(prompt.to(device).view(-1, 1), self.initial_state(1, device))
        out = []
        for _ in range(length):
            last = logits[-1, 0].float()
            if temperature <= 0:
                token = last.argmax().view(1)
            else:
                probs = torch.softmax(last / temperature, dim=-1)
                token = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
            out.append(token)
            logits, state = self(token.view(1, 1), state)
        return torch.cat(out).cpu()
