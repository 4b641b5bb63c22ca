"""Rater drawing, rater means, masked per-rater GDL, backbones, per-rater models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrseg_bench.baselines.common import (
    draw_valid_rater,
    per_rater_generalised_dice_loss,
    recon_loss,
    valid_rater_mean,
)
from mrseg_bench.baselines.per_rater import MultiHeadUNet, PerRaterConfig, SeparatePerRater
from mrseg_bench.baselines.unet import KohlUNet, build_backbone, build_unet
from mrseg_bench.losses import generalised_dice_loss
from mrseg_bench.method import Stage
from mrseg_bench.types import DatasetInfo, MultiRaterBatch


def test_draw_valid_rater_never_draws_an_invalid_rater_and_gathers_its_mask():
    b, r = 64, 4
    # only rater 2 draws foreground, so the gathered mask tells which rater was drawn
    masks = (torch.arange(r) == 2).to(torch.uint8)[None, :, None, None].expand(b, r, 3, 3)
    valid = torch.rand(b, r, generator=torch.Generator().manual_seed(0)) > 0.5
    valid[:, 0] |= ~valid.any(1)  # at least one valid rater per image
    g = torch.Generator().manual_seed(1)
    mask, idx = draw_valid_rater(masks, valid, generator=g)
    assert mask.shape == (b, 1, 3, 3) and mask.dtype == torch.float32
    assert valid[torch.arange(b), idx].all()
    assert torch.equal(mask[:, 0, 0, 0], (idx == 2).float())  # the gathered mask is rater idx's


def test_draw_valid_rater_is_uniform_over_valid_raters():
    valid = torch.tensor([[True, False, True, True]]).expand(30000, 4)
    masks = torch.zeros(30000, 4, 1, 1, dtype=torch.uint8)
    _, idx = draw_valid_rater(masks, valid, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(idx, minlength=4).float() / idx.numel()
    assert freq[1] == 0
    assert torch.allclose(freq[[0, 2, 3]], torch.full((3,), 1 / 3), atol=0.015)


def test_no_valid_rater_and_bad_shapes_raise():
    masks = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"image\(s\) \[1\]"):
        draw_valid_rater(masks, torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="rater_valid must be bool"):
        valid_rater_mean(masks, torch.ones(2, 3))
    with pytest.raises(ValueError, match="loss must be"):
        recon_loss("focal", torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_masked_gdl_equals_per_channel_gdl_when_all_valid():
    torch.manual_seed(0)
    logits, target = torch.randn(3, 4, 5, 5), (torch.rand(3, 4, 5, 5) > 0.5).float()
    expected = torch.stack([generalised_dice_loss(logits[:, r:r + 1], target[:, r:r + 1])
                            for r in range(4)]).mean()
    got = per_rater_generalised_dice_loss(logits, target, torch.ones(3, 4, dtype=torch.bool))
    assert torch.allclose(got, expected, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_masked_gdl_ignores_invalid_pairs(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 4, 4, generator=g)
    target = (torch.rand(3, 4, 4, 4, generator=g) > 0.5).float()
    valid = torch.rand(3, 4, generator=g) > 0.4
    valid[0, 0] = True
    noise = (torch.rand(3, 4, 4, 4, generator=g) > 0.5).float()
    changed = torch.where(valid[:, :, None, None], target, noise)  # only invalid pairs change
    a = per_rater_generalised_dice_loss(logits, target, valid)
    assert torch.allclose(a, per_rater_generalised_dice_loss(logits, changed, valid))
    # by hand: rater r's loss from its valid images only, mean over raters with any valid image
    per = []
    for r in range(4):
        keep = valid[:, r]
        if keep.any():
            per.append(generalised_dice_loss(logits[keep, r:r + 1], target[keep, r:r + 1]))
    assert torch.allclose(a, torch.stack(per).mean(), atol=1e-6)


def test_valid_rater_mean_by_hand():
    masks = torch.tensor([[[[1]], [[0]], [[1]]]], dtype=torch.uint8)
    assert valid_rater_mean(masks, torch.tensor([[True, True, False]])).item() == 0.5
    assert valid_rater_mean(masks, torch.tensor([[True, False, True]])).item() == 1.0


@pytest.mark.parametrize("size", [(32, 32), (20, 28)])
def test_kohl_unet_feature_map(size):
    net = KohlUNet(2, (8, 16, 24, 32))
    out = net(torch.randn(2, 2, *size))
    assert out.shape == (2, 8, *size) and net.out_channels == 8
    full = KohlUNet(1)  # the classic filters (32, 64, 128, 192)
    assert full.out_channels == 32 and full.filters == (32, 64, 128, 192)
    with pytest.raises(ValueError, match="KohlUNet"):
        KohlUNet(1, (8,))


def test_build_backbone_and_build_unet_any_encoder():
    smp_feat = build_backbone("smp", 3, "tu-resnet10t", decoder_channels=(16, 16, 8, 8, 4))
    assert smp_feat(torch.randn(2, 3, 32, 32)).shape == (2, 4, 32, 32) and smp_feat.out_channels == 4
    unet = build_unet(1, classes=2, encoder_name="resnet18", decoder_channels=(64, 32, 32, 16, 16))
    assert unet(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)
    with pytest.raises(ValueError, match="backbone"):
        build_backbone("vgg", 1)


def test_multihead_has_one_1x1_head_per_rater_and_separate_has_r_nets():
    feat = KohlUNet(1, (4, 8))
    mh = MultiHeadUNet(feat, 3)
    assert mh.heads.kernel_size == (1, 1) and mh.heads.out_channels == 3
    assert mh(torch.randn(2, 1, 8, 8)).shape == (2, 3, 8, 8)
    cfg = PerRaterConfig(encoder_name="tu-resnet10t", decoder_channels=(16, 16, 8, 8, 8))
    method = SeparatePerRater(cfg)
    model = method.build(DatasetInfo("d", 1, 3, ("a", "b", "c"), (32, 32)))
    assert len(model.nets) == 3
    # the nets are independent: rater r's gradient only reaches net r
    batch = MultiRaterBatch(torch.randn(2, 1, 32, 32), torch.ones(2, 3, 32, 32, dtype=torch.uint8),
                            torch.tensor([[True, False, True], [True, False, True]]))
    method.training_step(model, batch, Stage("train", 1, 1e-3))["loss"].backward()
    grads = [sum(float(p.grad.abs().sum()) for p in n.parameters() if p.grad is not None)
             for n in model.nets]
    assert grads[0] > 0 and grads[1] == 0 and grads[2] > 0  # rater 1 invalid everywhere
