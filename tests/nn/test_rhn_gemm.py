"""The recurrent matmuls compute ``addend + x·Wᵀ`` whichever implementation is chosen."""

import pytest
import torch

from rhn.nn.rhn_gemm import (
    ONEDNN_MIN_MACS,
    OneDNNMatmul,
    RecurrentMatmul,
    TorchMatmul,
    onednn_available,
    recurrent_matmul,
)

needs_onednn = pytest.mark.skipif(
    not onednn_available(), reason="this torch build lacks oneDNN linear ops"
)
IMPLEMENTATIONS = [TorchMatmul, pytest.param(OneDNNMatmul, marks=needs_onednn)]


def _build(cls, weight: torch.Tensor, batch: int) -> RecurrentMatmul:
    return cls(weight) if cls is TorchMatmul else cls(weight, batch)


@pytest.mark.parametrize("cls", IMPLEMENTATIONS)
def test_hand_checked_case(cls) -> None:
    weight = torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]])  # (rows 2, H 3)
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]])  # (N 2, H 3)
    matmul = _build(cls, weight, batch=2)
    # x·Wᵀ: row 0 → [1 + 6, −2 + 3] = [7, 1]; row 1 → [−2, −1 − 1] = [−2, −2]
    assert matmul(x).tolist() == [[7.0, 1.0], [-2.0, -2.0]]
    assert matmul(x, torch.tensor([10.0, 20.0])).tolist() == [[17.0, 21.0], [8.0, 18.0]]
    addend = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    assert matmul(x, addend).tolist() == [[8.0, 2.0], [0.0, 0.0]]


@pytest.mark.parametrize("cls", IMPLEMENTATIONS)
@pytest.mark.parametrize("addend_shape", [None, (48,), (20, 48)])
def test_matches_a_naive_product(cls, addend_shape) -> None:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 33, generator=g)
    x = torch.randn(20, 33, generator=g)
    addend = None if addend_shape is None else torch.randn(addend_shape, generator=g)
    expected = torch.zeros(20, 48, dtype=torch.float64)
    for n in range(20):  # one dot product at a time, in float64
        for r in range(48):
            expected[n, r] = (x[n].double() * weight[r].double()).sum()
    if addend is not None:
        expected += addend.double()
    got = _build(cls, weight, batch=20)(x, addend)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_torch_matmul_writes_into_out() -> None:
    weight, x = torch.randn(6, 4), torch.randn(3, 4)
    out = torch.empty(3, 6)
    result = TorchMatmul(weight)(x, torch.zeros(6), out=out)
    assert result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, x @ weight.T)


def test_choice_by_size_dtype_and_device() -> None:
    small = torch.randn(8, 4)
    assert type(recurrent_matmul(small, 2)) is TorchMatmul
    big = torch.empty(1660, 830)  # the PTB model's micro-layer at batch 20
    assert ONEDNN_MIN_MACS <= 20 * 1660 * 830
    expected = OneDNNMatmul if onednn_available() else TorchMatmul
    assert type(recurrent_matmul(big, 20)) is expected
    assert type(recurrent_matmul(big.double(), 20)) is TorchMatmul  # oneDNN: float32 only
    # oneDNN is the CPU's: a weight elsewhere (meta here, as a CUDA one) takes torch's matmul
    assert type(recurrent_matmul(big.to("meta"), 20)) is TorchMatmul
