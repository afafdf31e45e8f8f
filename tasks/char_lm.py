"""Character-level language modelling with an RHN (or LSTM) on a text stream.

The default corpus is the Python reference documentation bundled with CPython
(``rhn.data.builtin_corpus``), so this task runs anywhere with no download; ``data.path``
trains on any text file instead. Metric:
bits per character on the validation split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rhn.data.builtin_corpus import builtin_text, split_corpus
from rhn.data.char_vocab import CharVocab
from rhn.data.tbptt import TBPTTStream
from rhn.data.text_file import read_text
from rhn.models import LanguageModel, LanguageModelConfig
from rhn.train.task import State, StepResult, Task, register


@dataclass
class CharDataConfig:
    """``path``: a text file (plain, .gz, .xz, .bz2) instead of the built-in corpus."""

    path: str | None = None
    max_chars: int | None = None  # use only the first characters of the corpus (smoke tests)
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    batch_size: int = 32
    seq_len: int = 50
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        for key in ("batch_size", "seq_len", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be >= 1, got {getattr(self, key)}")
        if self.max_chars is not None and self.max_chars < 1000:
            raise ValueError(f"data.max_chars must be null or >= 1000, got {self.max_chars}")


@register
class CharLMTask(Task):
    name = "char_lm"
    model_config = LanguageModelConfig
    data_config = CharDataConfig
    metric = "bpc"
    unit = "tokens"

    def __init__(self, config: Any, *, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank=rank, world_size=world_size)
        data: CharDataConfig = config.data
        text = builtin_text() if data.path is None else read_text(data.path)
        if data.max_chars is not None:
            text = text[: data.max_chars]
        splits = split_corpus(text, data.valid_fraction, data.test_fraction)
        self.vocab = CharVocab.from_text(splits["train"])
        self.train_stream = TBPTTStream.for_rank(
            self.vocab.encode(splits["train"]), data.batch_size, data.seq_len, rank, world_size
        )
        self.eval_streams = {
            split: TBPTTStream.for_rank(
                self.vocab.encode(splits[split]), data.eval_batch_size, data.seq_len, 0, 1
            )
            for split in ("valid", "test")
        }

    def build_model(self) -> nn.Module:
        return LanguageModel(len(self.vocab), self.config.model)

    def batches_per_epoch(self) -> int:
        return len(self.train_stream)

    def batch(self, epoch: int, index: int, device: torch.device) -> Any:
        inputs, targets = self.train_stream.window(index)
        return inputs.to(device), targets.to(device)

    def initial_state(self, model: nn.Module, device: torch.device) -> State:
        return _unwrap(model).initial_state(self.train_stream.columns.shape[1], device)

    def train_step(self, model: nn.Module, batch: Any, state: State) -> StepResult:
        inputs, targets = batch
        logits, state = model(inputs, state)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return StepResult(loss=loss, state=state, count=targets.numel())

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        stream = self.eval_streams[split]
        lm = _unwrap(model)
        state = lm.initial_state(stream.columns.shape[1], device)
        total, count = 0.0, 0
        gate_sum: torch.Tensor | None = None
        for inputs, targets in stream.all_windows():
            inputs, targets = inputs.to(device), targets.to(device)
            if lm.cfg.rnn == "rhn":
                logits, state, gates = lm(inputs, state, return_gates=True)
                # Mean transform-gate activity per micro-layer, over layers, steps, batch, units.
                per_depth = gates.float().mean(dim=(0, 1, 2, 4))
                gate_sum = per_depth if gate_sum is None else gate_sum + per_depth
            else:
                logits, state = lm(inputs, state)
            total += F.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"
            ).item()
            count += targets.numel()
        loss = total / count
        metrics = {"loss": loss, "bpc": loss / math.log(2)}
        if gate_sum is not None:
            windows = math.ceil((stream.columns.shape[0] - 1) / stream.seq_len)
            for depth, value in enumerate((gate_sum / windows).tolist()):
                metrics[f"gate_mean/depth{depth}"] = value
        return metrics

    def save_artifacts(self, run_dir: str) -> None:
        Path(run_dir, "vocab.json").write_text(self.vocab.to_json())


def _unwrap(model: nn.Module) -> LanguageModel:
    while not isinstance(model, LanguageModel):
        model = getattr(model, "module", None) or model._orig_mod
    return model
