"""Batched flips/rotations: exact on hand-checkable cases, identical for image and masks."""

from __future__ import annotations

import math

import pytest
import torch

from mrseg_bench.datasets.augment import apply_affine, augment_batch, augmentation_params
from mrseg_bench.types import MultiRaterBatch


def _batch(b: int = 16, h: int = 8, w: int = 8, seed: int = 0) -> MultiRaterBatch:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 2, h, w, generator=g)
    masks = (torch.rand(b, 3, h, w, generator=g) > 0.5).to(torch.uint8)
    valid = torch.ones(b, 3, dtype=torch.bool)
    valid[0, 2] = False
    return MultiRaterBatch(image, masks, valid, [f"c{i}" for i in range(b)], [f"g{i}" for i in range(b)])


def test_flips_exact() -> None:
    batch = _batch()
    out = augment_batch(batch, torch.Generator().manual_seed(4), rotate=False)
    hflip, vflip, angle = augmentation_params(16, torch.Generator().manual_seed(4), rotate=False)
    assert (angle == 0).all() and hflip.any() and (~hflip).any() and vflip.any() and (~vflip).any()
    for i in range(16):  # reference built per sample in the test only
        dims = [d for d, f in ((-1, hflip[i]), (-2, vflip[i])) if f]
        exp_img = torch.flip(batch.image[i], dims) if dims else batch.image[i]
        exp_msk = torch.flip(batch.masks[i], dims) if dims else batch.masks[i]
        assert torch.allclose(out.image[i], exp_img, atol=1e-5)
        assert torch.equal(out.masks[i], exp_msk)
    assert torch.equal(out.rater_valid, batch.rater_valid) and out.case_id == batch.case_id


def test_rotation_by_quarter_turns_exact() -> None:
    batch = _batch(b=3)
    z = torch.zeros(3, dtype=torch.bool)
    angle = torch.tensor([math.pi / 2, math.pi, -math.pi / 2], dtype=torch.float64)
    out = apply_affine(batch, z, z, angle)
    for i, k in enumerate((1, 2, -1)):
        assert torch.equal(out.masks[i], torch.rot90(batch.masks[i], k, dims=(-2, -1)))
        assert torch.allclose(out.image[i], torch.rot90(batch.image[i], k, dims=(-2, -1)), atol=1e-5)


def test_non_square_half_turn_is_double_flip() -> None:
    batch = _batch(b=2, h=6, w=10)
    z = torch.zeros(2, dtype=torch.bool)
    out = apply_affine(batch, z, z, torch.full((2,), math.pi, dtype=torch.float64))
    assert torch.equal(out.masks, torch.flip(batch.masks, (-2, -1)))


def test_image_and_masks_move_together() -> None:
    batch = _batch(b=32, h=32, w=32)
    batch.image = batch.masks[:, :1].float()  # the image is rater 0's mask
    out = augment_batch(batch, torch.Generator().manual_seed(1), image_mode="nearest")
    assert torch.equal(out.image[:, 0].to(torch.uint8), out.masks[:, 0])
    assert out.masks.dtype == torch.uint8 and set(out.masks.unique().tolist()) <= {0, 1}
    _, _, angle = augmentation_params(32, torch.Generator().manual_seed(1))
    assert angle.abs().max() <= math.pi and angle.unique().numel() == 32  # per-sample angles


def test_seeded_and_identity_cases() -> None:
    batch = _batch()
    a = augment_batch(batch, torch.Generator().manual_seed(9))
    b = augment_batch(batch, torch.Generator().manual_seed(9))
    c = augment_batch(batch, torch.Generator().manual_seed(10))
    assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.masks, c.masks)
    same = augment_batch(batch, torch.Generator().manual_seed(9), flip=False, max_degrees=0.0)
    assert torch.allclose(same.image, batch.image, atol=1e-5) and torch.equal(same.masks, batch.masks)


def test_constant_image_interior_stays_constant() -> None:
    batch = _batch(b=8, h=32, w=32)
    batch.image = torch.ones_like(batch.image)
    out = augment_batch(batch, torch.Generator().manual_seed(2))
    centre = out.image[..., 12:20, 12:20]
    assert torch.allclose(centre, torch.ones_like(centre), atol=1e-5)


def test_negative_degrees_rejected() -> None:
    with pytest.raises(ValueError, match="max_degrees"):
        augment_batch(_batch(), torch.Generator(), max_degrees=-1.0)
