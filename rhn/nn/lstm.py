"""``torch.nn.LSTM`` with the uniform initialisation of the LSTM language-model papers.

Zaremba et al. 2014 (arXiv 1409.2329) and Kim et al. 2016 draw every LSTM parameter from
U(−r, r) (Zaremba's code: r = 0.1 for the small model, 0.04 for the large; Kim's: 0.05 for
both sizes); torch's default is the same rule with r = 1/√H. This is the baseline the RHN
is compared against, so it keeps cuDNN / oneDNN's fused kernels: only the initialisation
differs from ``nn.LSTM``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rhn.nn._validate import check_init_range


class UniformInitLSTM(nn.LSTM):
    """``nn.LSTM(*args, init_range=r, **kwargs)``: every parameter starts in U(−r, r).

    ``init_range=None`` keeps torch's ±1/√H. Everything else is ``nn.LSTM``'s.
    """

    def __init__(self, *args: Any, init_range: float | None = None, **kwargs: Any) -> None:
        # nn.LSTM.__init__ ends by calling reset_parameters, which reads the range.
        self.init_range = check_init_range(init_range)
        super().__init__(*args, **kwargs)

    def reset_parameters(self) -> None:
        if self.init_range is None:
            super().reset_parameters()
            return
        with torch.no_grad():
            for weight in self.parameters():
                weight.uniform_(-self.init_range, self.init_range)
