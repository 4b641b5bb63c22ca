"""Scores of binary masks against binary masks, over the last two axes (numpy, vectorised over
any leading axes): the synthetic set's reference scores and its disagreement split.

- ``dice(a, b) = 2|a & b| / (|a| + |b|)``, ``iou(a, b) = |a & b| / |a | b|``; both empty -> 1.
- ``outline_shift(m, +1)`` dilates ``m`` by one pixel, ``-1`` erodes it: the 4-neighbour cross,
  i.e. every pixel within Euclidean distance 1 (outside the image counts as background).
- ``attainable_dice(oracle, masks) = (dice(erode(oracle), masks) + dice(dilate(oracle), masks)) / 2``:
  the oracle with its whole outline one pixel off, inwards or outwards with equal weight — what a
  model that recovers each mask to about a pixel reaches.
- ``style_disagreement(core)``: mean over rater pairs j != k of ``1 - iou(core_j, core_k)``
  (0 with fewer than 2 raters), where ``core[r]`` is rater r's style applied to the unambiguous
  object: the inter-rater disagreement due to style alone.
- ``ambiguity_disagreement(core, full, p)``: mean over raters of ``2 p (1 - p) (1 - iou(core_r,
  full_r))``, the expected ``1 - IoU`` between two independent annotations by the same rater who
  includes the ambiguous part (``full_r`` = with it, ``core_r`` = without) with probability p:
  the intra-rater disagreement due to ambiguity alone (0 without an ambiguous part).
"""

from __future__ import annotations

import numpy as np


def _counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inter = (a & b).sum(axis=(-2, -1)).astype(np.float64)
    return inter, a.sum(axis=(-2, -1)).astype(np.float64), b.sum(axis=(-2, -1)).astype(np.float64)


def dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter, sa, sb = _counts(a, b)
    total = sa + sb
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter, sa, sb = _counts(a, b)
    union = sa + sb - inter
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def outline_shift(m: np.ndarray, step: int) -> np.ndarray:
    """``m`` (bool [..., H, W]) dilated (``step=+1``) or eroded (``step=-1``) by one pixel."""
    if step not in (1, -1):
        raise ValueError(f"outline_shift: step must be +1 or -1, got {step}")
    x = m if step == 1 else ~m
    pad = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], constant_values=step == -1)
    grown = (pad[..., 1:-1, 1:-1] | pad[..., :-2, 1:-1] | pad[..., 2:, 1:-1]
             | pad[..., 1:-1, :-2] | pad[..., 1:-1, 2:])
    return grown if step == 1 else ~grown


def attainable_dice(oracle: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return 0.5 * (dice(outline_shift(oracle, -1), masks) + dice(outline_shift(oracle, 1), masks))


def style_disagreement(core: np.ndarray) -> np.ndarray:
    """``core`` bool [..., R, H, W] -> [...]."""
    r = core.shape[-3]
    if r < 2:
        return np.zeros(core.shape[:-3])
    d = 1 - iou(core[..., :, None, :, :], core[..., None, :, :, :])  # [..., R, R]
    return d.sum(axis=(-2, -1)) / (r * (r - 1))


def ambiguity_disagreement(core: np.ndarray, full: np.ndarray, p: float) -> np.ndarray:
    """``core``, ``full`` bool [..., R, H, W] -> [...]."""
    return (2 * p * (1 - p) * (1 - iou(core, full))).mean(-1)
