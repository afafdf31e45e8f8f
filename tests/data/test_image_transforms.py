"""Batched augmentation and GCN against per-image references written out by hand."""

from __future__ import annotations

import pytest
import torch

from rhn.data.image_transforms import augment, global_contrast_normalize, random_crop, random_flip


def test_gcn_gives_zero_mean_unit_std_per_image() -> None:
    x = torch.rand(5, 3, 8, 8) * torch.arange(1, 6).view(5, 1, 1, 1) + 7
    y = global_contrast_normalize(x)
    flat = y.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(flat.std(1), torch.ones(5), atol=1e-5)
    # a constant image has no contrast: it becomes zeros, not NaN
    assert torch.equal(
        global_contrast_normalize(torch.full((1, 1, 2, 2), 3.0)), torch.zeros(1, 1, 2, 2)
    )


def test_crop_matches_a_per_image_loop() -> None:
    x = torch.randn(6, 3, 5, 7)
    out = random_crop(x, 2, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    top = torch.randint(0, 5, (6,), generator=g)
    left = torch.randint(0, 5, (6,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        expected = padded[i, :, top[i] : top[i] + 5, left[i] : left[i] + 7]
        assert torch.equal(out[i], expected)


def test_flip_mirrors_about_half_and_keeps_the_rest() -> None:
    x = torch.randn(400, 1, 2, 3)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.all(flipped | kept) and 150 < int(flipped.sum()) < 250


def test_augment_is_deterministic_under_a_seed_and_keeps_shape() -> None:
    x = torch.randn(8, 3, 32, 32)
    a = augment(x, padding=4, flip=True, generator=torch.Generator().manual_seed(1))
    b = augment(x, padding=4, flip=True, generator=torch.Generator().manual_seed(1))
    c = augment(x, padding=4, flip=True, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(augment(x, padding=0, flip=False), x)
    with pytest.raises(ValueError, match="padding"):
        random_crop(x, -1)
