"""What every recurrent language model here shares: an RHN (or LSTM) stack, output
dropout, a softmax decoder, the loss, state handling and sampling.

    tokens (T, N) → encode (T, N, E) → RHN / LSTM (T, N, H) → output dropout
    → decoder → logits (T, N, V)

Subclasses say how token ids become vectors (``encode``): a word embedding
(:class:`~rhn.models.language_model.LanguageModel`) or a character CNN with highway layers
(:class:`~rhn.models.char_aware.CharAwareLM`).

Initialisation: every layer initialises itself (``reset_parameters``) from its constructor
arguments — the recurrent stack and the char-aware model's CNN and highway layers from
``init_range`` (U(±r)), or, where it is null, each from its own rule (He's for highway H
weights) — and a model's own ``reset_parameters`` touches only the parameters it holds
directly (the decoder, the embedding), never a layer's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rhn.models.config_fields import check_field_types
from rhn.models.token_sampling import check_sampling, draw_token
from rhn.nn import RHN
from rhn.nn.dropout import VariationalDropout
from rhn.nn.lstm import UniformInitLSTM

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None


# Keys only the RHN reads, and why an LSTM has no use for them: with rnn: lstm, a value other
# than the default is refused rather than silently ignored (state_dropout, also RHN-only, has
# its own message).
RHN_ONLY_KEYS = {
    "depth": "an LSTM layer has one step per token, no micro-layers",
    "gate_bias": "the initial bias of the RHN's transform gates; an LSTM has none",
    "rnn_backend": "torch.nn.LSTM picks cuDNN/oneDNN itself",
}


@dataclass
class RecurrentConfig:
    """The recurrent part of a ``model`` section.

    rnn: ``rhn`` or the ``lstm`` baseline (``torch.nn.LSTM``, cuDNN/oneDNN).
    depth, gate_bias: the RHN's recurrence depth (micro-layers per step) and the initial
        bias of its transform gates; with ``rnn: lstm`` they must keep their defaults.
    input_dropout, state_dropout, output_dropout: variational (one mask per sequence), as
        the RHN paper; state dropout needs ``rnn: rhn``.
    output_dropout_kind: ``variational`` (the RHN code's one mask per sequence) or
        ``ordinary`` (a fresh mask at every step, ``nn.Dropout``: Kim et al.'s code).
    layer_dropout: ordinary dropout between stacked layers (``nn.LSTM``'s ``dropout``).
    loss_reduction: ``mean`` per token, or ``sum_over_time`` (summed over time, averaged
        over the batch): the RHN code's loss, for which its learning rate (SGD 0.2) and
        clip norm (10) were tuned — with ``mean`` the same run needs both × seq_len.
    rnn_backend: how :class:`rhn.nn.RHN` computes the recurrence (``auto``, ``reference``,
        ``fused``, or ``cuda-graph`` on a GPU); the numbers agree, the speed differs. Gate
        activity is read off the reference recurrence, so ``auto`` evaluates through it and
        logs the gate means, while a fast backend named here is kept and logs none.
    """

    rnn: Literal["rhn", "lstm"] = "rhn"
    hidden_size: int = 128
    num_layers: int = 1
    depth: int = 3
    gate_bias: float = -2.0
    input_dropout: float = 0.0
    state_dropout: float = 0.0
    layer_dropout: float = 0.0
    output_dropout: float = 0.0
    output_dropout_kind: Literal["variational", "ordinary"] = "variational"
    loss_reduction: Literal["mean", "sum_over_time"] = "mean"
    init_range: float | None = None  # uniform ±init_range; None: ±1/√hidden_size
    rnn_backend: Literal["auto", "reference", "fused", "cuda-graph"] = "auto"

    def __post_init__(self) -> None:
        check_field_types(self)  # the YAML loader checks them; Python callers too
        for key in ("hidden_size", "num_layers", "depth"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("input_dropout", "state_dropout", "layer_dropout", "output_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"model.{key} must be in [0, 1), got {getattr(self, key)}")
        # Refused when set away from the class's default (the char-aware model's is Kim's
        # 0.5 for his two layers, which a one-layer variant need not undo).
        if self.num_layers == 1 and self.layer_dropout not in (0.0, type(self).layer_dropout):
            raise ValueError(
                f"model.layer_dropout ({self.layer_dropout}) acts between stacked layers and "
                f"model.num_layers is 1 (nn.LSTM warns of its dropout so); use input_dropout "
                f"or output_dropout, or num_layers >= 2"
            )
        if self.rnn == "lstm":
            self._check_no_rhn_only_keys()
        if self.init_range is not None and self.init_range <= 0:
            raise ValueError(f"model.init_range must be > 0, got {self.init_range}")

    def _check_no_rhn_only_keys(self) -> None:
        """An LSTM would ignore the RHN's own keys: one set away from its default (this
        class's: a config that doesn't name it passes) is refused, not dropped unseen."""
        if self.state_dropout > 0:
            raise ValueError(
                "model.state_dropout needs rnn: rhn (torch.nn.LSTM's fused kernel can't drop "
                "its state); use input/output/layer dropout for the LSTM baseline"
            )
        defaults = {f.name: f.default for f in fields(self)}
        for key, why in RHN_ONLY_KEYS.items():
            value = getattr(self, key)
            if value != defaults[key]:
                raise ValueError(
                    f"model.{key}={value!r} needs rnn: rhn ({why}); leave it at its "
                    f"default, {defaults[key]!r}, for the LSTM baseline"
                )


class RecurrentLM(nn.Module):
    """Base class: ``forward(tokens (T, N), state) → (logits (T, N, V), state)``."""

    def __init__(self, vocab_size: int, input_size: int, cfg: RecurrentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        between = cfg.layer_dropout if cfg.num_layers > 1 else 0.0  # between layers only
        if cfg.rnn == "rhn":
            self.rnn: nn.Module = RHN(
                input_size,
                cfg.hidden_size,
                num_layers=cfg.num_layers,
                depth=cfg.depth,
                dropout=between,
                gate_bias=cfg.gate_bias,
                input_dropout=cfg.input_dropout,
                state_dropout=cfg.state_dropout,
                init_range=cfg.init_range,
                backend=cfg.rnn_backend,
            )
            self.lstm_input_dropout = None
        else:
            self.rnn = UniformInitLSTM(
                input_size,
                cfg.hidden_size,
                num_layers=cfg.num_layers,
                dropout=between,
                init_range=cfg.init_range,
            )
            self.lstm_input_dropout = VariationalDropout(cfg.input_dropout)
        self.output_dropout: nn.Module = (
            VariationalDropout(cfg.output_dropout)
            if cfg.output_dropout_kind == "variational"
            else nn.Dropout(cfg.output_dropout)
        )
        self.decoder = nn.Linear(cfg.hidden_size, vocab_size)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` token ids → ``(T, N, E)`` inputs of the recurrent stack."""
        raise NotImplementedError

    @property
    def init_bound(self) -> float:
        """r of the uniform ±r start of the parameters the model holds itself."""
        return self.cfg.init_range or self.cfg.hidden_size**-0.5

    def reset_parameters(self) -> None:
        """The decoder (weight and bias) uniform ±``init_range``, as the RHN code's softmax."""
        nn.init.uniform_(self.decoder.weight, -self.init_bound, self.init_bound)
        nn.init.uniform_(self.decoder.bias, -self.init_bound, self.init_bound)

    def initial_state(self, batch: int, device: torch.device) -> State:
        shape = (self.cfg.num_layers, batch, self.cfg.hidden_size)
        # The parameters' dtype: a .double() or .bfloat16() model takes a state of its own.
        zeros = torch.zeros(shape, device=device, dtype=self.decoder.weight.dtype)
        return zeros if self.cfg.rnn == "rhn" else (zeros, zeros.clone())

    def forward(
        self, tokens: torch.Tensor, state: State = None, *, return_gates: bool = False
    ) -> tuple[torch.Tensor, State] | tuple[torch.Tensor, State, torch.Tensor]:
        x = self.encode(tokens)
        gates = None
        if self.lstm_input_dropout is not None:
            output, state = self.rnn(self.lstm_input_dropout(x), state)
        elif return_gates:
            output, state, gates = self.rnn(x, state, return_gates=True)
        else:
            output, state = self.rnn(x, state)
        logits = self.decoder(self.output_dropout(output))
        return (logits, state, gates) if return_gates else (logits, state)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss of logits (T, N, V) against targets (T, N), per ``loss_reduction``."""
        total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        if self.cfg.loss_reduction == "sum_over_time":
            return total / targets.shape[1]
        return total / targets.numel()

    def generate(
        self,
        prompt: torch.Tensor,
        length: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` (P,) token ids by ``length`` sampled tokens, in eval mode
        whatever the model's (dropout would draw new masks at every token); the mode is
        restored after. Each token is drawn from the softmax at ``temperature`` (0 = greedy),
        cut to the ``top_k`` most probable tokens and to the nucleus of mass ``top_p``
        (:mod:`rhn.models.token_sampling`)."""
        tokens = self.generate_stream(
            prompt, length, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
        return torch.tensor(list(tokens), dtype=torch.long)

    def generate_stream(
        self,
        prompt: torch.Tensor,
        length: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[int]:
        """:meth:`generate` a token at a time, as each is drawn (a sampler shows them as they
        come). The arguments are checked at once; the model is in eval mode from the first
        token to the last (or until the iterator is closed), then back in its own mode."""
        if prompt.numel() == 0:
            raise ValueError("the prompt must hold at least one token")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be an integer >= 0 (tokens to add), got {length!r}")
        temperature, top_k, top_p = check_sampling(temperature, top_k, top_p)
        draw = functools.partial(
            draw_token, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
        return self._draw(prompt, length, draw)

    def _draw(
        self,
        prompt: torch.Tensor,
        length: int,
        draw: Callable[[torch.Tensor], torch.Tensor],
    ) -> Iterator[int]:
        if length == 0:
            return
        was_training = self.training
        self.eval()
        # no_grad around each step, never across a yield: the caller's code between tokens
        # runs in its own grad mode.
        try:
            device = self.decoder.weight.device
            with torch.no_grad():
                start = self.initial_state(1, device)
                logits, state = self(prompt.to(device).view(-1, 1), start)
            for step in range(length):
                with torch.no_grad():
                    token = draw(logits[-1, 0])
                yield int(token)
                if step + 1 < length:  # the last token's logits would go unused
                    with torch.no_grad():
                        logits, state = self(token.view(1, 1), state)
        finally:
            self.train(was_training)
