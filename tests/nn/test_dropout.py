"""VariationalDropout: one mask per sequence and feature, the same at every time step."""

from __future__ import annotations

import re

import pytest
import torch

from rhn.nn.dropout import VariationalDropout, variational_mask

KEEP_SCALE = 1 / (1 - 0.3)


def test_one_mask_per_sequence_shared_over_time() -> None:
    x = torch.rand(50, 8, 64) + 0.5  # (T, N, F), no zeros
    out = VariationalDropout(0.3).train()(x)
    kept = out != 0
    # Inverted dropout: a kept unit is x / (1 − p), so evaluation needs no rescaling.
    torch.testing.assert_close(out, x * kept * KEEP_SCALE)
    mask = kept[0]  # (N, F)
    assert torch.equal(kept, mask.expand_as(kept))  # the same at every step
    # Drawn per sequence and per unit: rows (sequences) and columns (units) differ.
    assert len({tuple(row.tolist()) for row in mask}) == 8
    assert len({tuple(col.tolist()) for col in mask.T}) > 1
    # 512 Bernoulli draws with p = 0.3: the dropped share within 5 standard errors (0.02).
    dropped = 1 - mask.float().mean().item()
    assert 0.2 < dropped < 0.4


def test_batch_first_shares_the_mask_over_dim_1() -> None:
    x = torch.rand(8, 50, 64) + 0.5  # (N, T, F)
    torch.manual_seed(5)
    out = VariationalDropout(0.3, batch_first=True).train()(x)
    kept = out != 0
    torch.testing.assert_close(out, x * kept * KEEP_SCALE)
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # constant over time (dim 1)
    assert len({tuple(row.tolist()) for row in kept[:, 0]}) == 8  # one mask per sequence
    # The same draws as time-major input transposed: mask (N, F), one per sequence.
    torch.manual_seed(5)
    time_major = VariationalDropout(0.3).train()(x.transpose(0, 1)).transpose(0, 1)
    assert torch.equal(out, time_major)


def test_the_mean_is_kept_and_gradients_follow_the_mask() -> None:
    x = torch.ones(4, 200, 250, requires_grad=True)
    out = VariationalDropout(0.5).train()(x)
    # 50,000 masks of 0 or 2: the mean 1 within 5 standard errors (1 / √50,000 ≈ 0.0045).
    assert abs(out.mean().item() - 1.0) < 0.025
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # d(x · m)/dx = m, and x = 1


def test_evaluation_and_p_zero_are_the_identity() -> None:
    x = torch.randn(5, 3, 4)
    drop = VariationalDropout(0.9)
    drop.eval()
    assert drop(x) is x
    assert VariationalDropout(0.0).train()(x) is x
    assert repr(VariationalDropout(0.25, batch_first=True)) == (
        "VariationalDropout(p=0.25, batch_first=True)"
    )


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1, float("nan"), True, "0.5", None])
def test_p_outside_zero_to_one_is_refused(p: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"p must be a number in [0, 1), got {p!r}")):
        VariationalDropout(p)  # type: ignore[arg-type]
    # The mask function itself too: p = 1 scaled by 1 / 0, a mask of NaN.
    with pytest.raises(ValueError, match=re.escape(f"p must be a number in [0, 1), got {p!r}")):
        variational_mask(2, 3, p, like=torch.zeros(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 5), (7,)])
@pytest.mark.parametrize("training", [True, False])
def test_input_that_is_not_3d_is_refused_in_training_and_evaluation(
    shape: tuple[int, ...], training: bool
) -> None:
    drop = VariationalDropout(0.5).train(training)
    message = f"VariationalDropout expects a 3-D (T, N, F) or (N, T, F) input, got shape {shape}"
    with pytest.raises(ValueError, match=re.escape(message)):
        drop(torch.ones(shape))


def test_batch_first_that_is_not_a_bool_is_refused() -> None:
    # bool("no") is True: the mask would be drawn along the wrong axis
    with pytest.raises(TypeError, match=r"^batch_first must be True or False, got 'no'$"):
        VariationalDropout(0.5, batch_first="no")
