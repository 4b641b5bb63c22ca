"""The shared losses (mrseg_bench/losses.py), checked by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mrseg_bench.losses import bce_loss, generalised_dice_loss


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_gdl_one_channel_adds_background_by_hand():
    # B=1, C=1, two pixels: p = (0.8, 0.4), t = (1, 0)
    logits = torch.tensor([[[[logit(0.8), logit(0.4)]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    fg = 2 * (0.8 * 1 + 0.4 * 0) / (0.8 + 0.4 + 1 + 0)  # 1.6 / 2.2
    bg = 2 * (0.2 * 0 + 0.6 * 1) / (0.2 + 0.6 + 0 + 1)  # 1.2 / 1.8
    expected = 1 - (fg + bg) / 2
    assert generalised_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_gdl_two_channels_flattened_over_the_batch_by_hand():
    # B=2, C=2, one pixel each: channel c flattens over both images, no background added
    p = torch.tensor([[[[0.9]], [[0.3]]], [[[0.5]], [[0.7]]]])
    t = torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])
    logits = torch.log(p / (1 - p))
    d0 = 2 * (0.9 * 1 + 0.5 * 0) / (0.9 + 0.5 + 1)
    d1 = 2 * (0.3 * 0 + 0.7 * 1) / (0.3 + 0.7 + 1)
    assert generalised_dice_loss(logits, t).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-5)


def test_gdl_perfect_prediction_is_near_zero_and_wrong_is_near_one():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 30.0  # sigmoid -> 1 on foreground, 0 on background
    assert generalised_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert generalised_dice_loss(-perfect, target).item() == pytest.approx(1.0, abs=1e-6)


def test_gdl_soft_targets_and_errors():
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.full((1, 1, 2, 2), 0.5)  # soft target: Dice = 2*(4*0.25)/(4*1) = 0.5 per channel
    assert generalised_dice_loss(logits, target).item() == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        generalised_dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="need"):
        generalised_dice_loss(torch.zeros(3), torch.zeros(3))


def test_bce_by_hand():
    logits = torch.tensor([[[[logit(0.8), logit(0.4)]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="differ"):
        bce_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
