"""Mask scores of the synthetic set's references: hand-built masks, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg_bench.datasets import mask_scores as ms


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_dice_and_iou_hand_computed_and_empty():
    a, b = _box(4, 4, 0, 2, 0, 2), _box(4, 4, 0, 2, 1, 3)  # 4 px each, 2 shared, union 6
    assert ms.dice(a, b) == pytest.approx(0.5) and ms.iou(a, b) == pytest.approx(2 / 6)
    empty = np.zeros((4, 4), bool)
    assert ms.dice(empty, empty) == 1.0 and ms.iou(empty, empty) == 1.0
    assert ms.dice(a, empty) == 0.0 and ms.iou(a, empty) == 0.0


def test_outline_shift_is_the_one_pixel_cross():
    dot = _box(5, 5, 2, 3, 2, 3)
    grown = ms.outline_shift(dot, 1)
    assert grown.sum() == 5 and grown[1, 2] and grown[2, 1] and not grown[1, 1]  # no diagonals
    square = _box(5, 5, 1, 4, 1, 4)
    assert ms.outline_shift(square, -1).tolist() == dot.tolist()
    # outside the image is background: a mask touching the border erodes there
    corner = _box(3, 3, 0, 2, 0, 2)
    assert ms.outline_shift(corner, -1).sum() == 0
    # leading axes are kept; empty stays empty both ways
    stack = np.stack([dot, np.zeros_like(dot)])
    assert ms.outline_shift(stack, 1).sum(axis=(1, 2)).tolist() == [5, 0]
    assert ms.outline_shift(stack, -1).sum() == 0
    with pytest.raises(ValueError, match="step must be"):
        ms.outline_shift(dot, 2)


def test_attainable_is_the_oracle_one_pixel_off_both_ways():
    oracle = _box(7, 7, 2, 5, 2, 5)  # 3x3 = 9 px
    # eroded: the centre (1 px) -> Dice 2*1/(1+9) = 0.2; dilated: 9 + 12 = 21 px -> 2*9/30 = 0.6
    assert ms.attainable_dice(oracle, oracle) == pytest.approx((0.2 + 0.6) / 2)
    empty = np.zeros((7, 7), bool)
    assert ms.attainable_dice(empty, empty) == 1.0  # an empty oracle stays empty


def test_style_disagreement_hand_built():
    a, b, c = _box(4, 4, 0, 2, 0, 2), _box(4, 4, 0, 2, 1, 3), _box(4, 4, 0, 2, 0, 2)
    # pairs: (a,b) 1 - 2/6, (a,c) 0, (b,c) 1 - 2/6; each ordered pair counted once each way
    assert ms.style_disagreement(np.stack([a, b, c])) == pytest.approx(2 * (2 / 3) / 3)
    assert ms.style_disagreement(np.stack([a, a])) == 0.0  # all raters equal
    assert ms.style_disagreement(np.stack([a])) == 0.0  # one rater: no pair
    batch = np.stack([np.stack([a, b]), np.stack([a, a])])  # leading case axis
    assert ms.style_disagreement(batch).tolist() == pytest.approx([2 / 3, 0.0])


def test_ambiguity_disagreement_hand_built():
    core = _box(6, 6, 0, 4, 0, 4)  # 16 px
    full = core | _box(6, 6, 4, 6, 0, 4)  # + an 8-px lobe: IoU(core, full) = 16/24
    # two independent annotations differ with probability 2 p (1 - p) = 1/2, then 1 - IoU = 1/3
    one = ms.ambiguity_disagreement(core[None], full[None], 0.5)
    assert one == pytest.approx(0.5 / 3)
    # mean over raters: a second rater whose annotation has no lobe (core = full) adds 0
    two = ms.ambiguity_disagreement(np.stack([core, core]), np.stack([full, core]), 0.5)
    assert two == pytest.approx(0.5 / 3 / 2)
    assert ms.ambiguity_disagreement(core[None], full[None], 1.0) == 0.0  # always included
    assert ms.ambiguity_disagreement(core[None], full[None], 0.0) == 0.0  # never included
    assert ms.ambiguity_disagreement(core[None], full[None], 0.25) == pytest.approx(2 * 0.25 * 0.75 / 3)
