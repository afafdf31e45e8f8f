"""Character CNN word encoder (Kim, Jernite, Sontag & Rush, AAAI 2016, arXiv 1508.06615).

    chars (..., W) → embedding (..., W, C) → for each width w: conv1d with f_w filters
    → tanh → max over the W − w + 1 positions → concatenate → (..., Σ f_w)

Shapes: ``W`` characters per word (padded with ``padding_idx``), ``C`` the character
embedding size. Kim et al.'s small model uses widths 1..6 with 25·w filters, the large one
widths 1..7 with min(200, 50·w).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from rhn.nn._validate import (
    ArgumentTypeError,
    DtypeError,
    check_init_range,
    check_positive_int,
)
from rhn.nn.activation import check_activation, get_activation


class CharCNN(nn.Module):
    """``(..., W)`` character ids → ``(..., sum(filters))`` word vectors.

    ``init_range`` None keeps torch's starts (embedding N(0, 1), convolutions ±1/√fan_in);
    r draws the embedding and every convolution weight and bias from U(−r, r), as Kim et
    al.'s code (r = 0.05). The padding character's vector is zero either way.
    """

    def __init__(
        self,
        num_chars: int,
        embed_size: int = 15,
        widths: tuple[int, ...] | list[int] = (1, 2, 3, 4, 5, 6),
        filters: tuple[int, ...] | list[int] = (25, 50, 75, 100, 125, 150),
        *,
        activation: str = "tanh",
        padding_idx: int | None = 0,
        init_range: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("num_chars", num_chars)
        check_positive_int("embed_size", embed_size)
        for name, values in (("widths", widths), ("filters", filters)):
            if not isinstance(values, (tuple, list)):
                raise ArgumentTypeError(f"{name} must be a tuple or list of ints, got {values!r}")
        if padding_idx is not None and not (
            isinstance(padding_idx, int)
            and not isinstance(padding_idx, bool)
            and 0 <= padding_idx < num_chars
        ):
            raise ValueError(
                f"padding_idx must be None or an id in [0, {num_chars - 1}] (num_chars = "
                f"{num_chars}), got {padding_idx!r}"
            )
        if len(widths) != len(filters) or not widths:
            raise ValueError(
                f"widths and filters must be non-empty and of equal length, got {list(widths)} "
                f"and {list(filters)}"
            )
        for i, (w, f) in enumerate(zip(widths, filters, strict=True)):
            check_positive_int(f"widths[{i}]", w)
            check_positive_int(f"filters[{i}]", f)
        self.widths = tuple(widths)
        self.activation = check_activation(activation)
        self._act = get_activation(activation)
        factory = {"device": device, "dtype": dtype}
        self.embedding = nn.Embedding(num_chars, embed_size, padding_idx=padding_idx, **factory)
        self.convs = nn.ModuleList(
            nn.Conv1d(embed_size, f, w, **factory) for w, f in zip(widths, filters, strict=True)
        )
        self.output_size = sum(filters)
        self.init_range = check_init_range(init_range)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init_range is None:
            self.embedding.reset_parameters()
            for conv in self.convs:
                conv.reset_parameters()
            return
        with torch.no_grad():
            for param in self.parameters():
                param.uniform_(-self.init_range, self.init_range)
            if self.embedding.padding_idx is not None:
                self.embedding.weight[self.embedding.padding_idx].zero_()

    def _check_ids(self, chars: object) -> None:
        if not isinstance(chars, torch.Tensor):
            raise ArgumentTypeError(
                f"chars must be a torch.Tensor of character ids, got {type(chars).__name__}"
            )
        if chars.dtype not in (torch.long, torch.int32):  # what nn.Embedding indexes with
            raise DtypeError(
                f"chars must hold integer character ids (torch.long or torch.int32), got dtype "
                f"{chars.dtype}"
            )
        if chars.dim() == 0:
            raise ValueError("chars must be (..., W): characters of each word, got a scalar")
        num_chars = self.embedding.num_embeddings
        if chars.numel():
            low, high = torch.aminmax(chars)
            if low < 0 or high >= num_chars:
                raise ValueError(
                    f"chars holds ids in [{int(low)}, {int(high)}], outside [0, {num_chars - 1}] "
                    f"(num_chars = {num_chars})"
                )

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        self._check_ids(chars)
        if chars.shape[-1] < max(self.widths):
            raise ValueError(
                f"CharCNN needs words of at least {max(self.widths)} characters (the widest "
                f"filter; pad them), got {chars.shape[-1]}"
            )
        lead = chars.shape[:-1]
        x = rearrange(self.embedding(chars.reshape(-1, chars.shape[-1])), "b w c -> b c w")
        pooled = [self._act(conv(x)).amax(dim=-1) for conv in self.convs]
        return torch.cat(pooled, dim=-1).reshape(*lead, self.output_size)
