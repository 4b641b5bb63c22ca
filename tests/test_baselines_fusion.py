"""Label fusion: majority vote and soft mean by hand, SimpleITK STAPLE vs majority, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrseg_bench.baselines.common import valid_rater_mean
from mrseg_bench.baselines.fusion import (
    FusionConfig,
    StapleFuser,
    StapleFusion,
    majority_vote,
    staple_probability,
)
from mrseg_bench.method import Stage
from mrseg_bench.types import DatasetInfo, MultiRaterBatch

YY, XX = np.mgrid[:32, :32]


def disk(cy: int, cx: int, r: int) -> np.ndarray:
    return (((YY - cy) ** 2 + (XX - cx) ** 2) <= r * r).astype(np.uint8)


def test_majority_and_soft_by_hand_with_ties_and_invalid_raters():
    # one image, 1x4 pixels, 4 raters; rater 3 invalid (its votes must be ignored)
    masks = torch.tensor([[[[1, 1, 0, 1]], [[1, 0, 0, 1]], [[0, 1, 0, 0]], [[1, 1, 1, 1]]]],
                         dtype=torch.uint8)
    valid = torch.tensor([[True, True, True, False]])
    soft = valid_rater_mean(masks, valid)
    assert torch.allclose(soft, torch.tensor([[[2 / 3, 2 / 3, 0.0, 2 / 3]]]))
    assert torch.equal(majority_vote(masks, valid), torch.tensor([[[1.0, 1.0, 0.0, 1.0]]]))
    # two valid raters that disagree: a tie (mean 0.5) counts as foreground
    valid2 = torch.tensor([[True, False, True, False]])
    assert torch.equal(majority_vote(masks, valid2), torch.tensor([[[1.0, 1.0, 0.0, 1.0]]]))


def test_staple_equals_majority_on_unanimous_raters():
    for m in (disk(16, 16, 7), np.zeros((32, 32), np.uint8)):  # all-empty would be NaN in ITK
        stack = np.stack([m, m, m])
        assert np.array_equal(staple_probability(stack), m.astype(float))
        fused = StapleFuser()(torch.from_numpy(stack)[None], torch.ones(1, 3, dtype=torch.bool))
        maj = majority_vote(torch.from_numpy(stack)[None], torch.ones(1, 3, dtype=torch.bool))
        assert torch.equal(fused, maj)


def test_staple_differs_from_majority_where_one_rater_is_systematically_off():
    rng = np.random.default_rng(0)
    truth = disk(16, 16, 7)

    def noisy(m: np.ndarray) -> np.ndarray:
        return (m ^ (rng.random(m.shape) < 0.05)).astype(np.uint8)

    off = disk(16, 21, 7)  # rater 3 always draws the lesion 5 px to the right
    stack = torch.from_numpy(np.stack([truth, noisy(truth), noisy(truth), off]))[None]
    valid = torch.ones(1, 4, dtype=torch.bool)
    maj = majority_vote(stack, valid)[0].numpy().astype(bool)
    sta = StapleFuser()(stack, valid)[0].numpy().astype(bool)
    differ = maj != sta
    assert differ.sum() > 0
    # the disagreements are 2-of-4 ties (foreground for majority), mostly pushed there by the off
    # rater: STAPLE, which estimates a low specificity for that rater, leaves them out
    assert maj[differ].all() and not sta[differ].any()
    assert off[differ].mean() > 0.5
    assert (sta != truth.astype(bool)).sum() < (maj != truth.astype(bool)).sum()


def test_staple_uses_only_valid_raters_and_caches_per_case():
    stack = torch.from_numpy(np.stack([disk(16, 16, 7), disk(16, 16, 7), np.ones((32, 32), np.uint8)]))
    masks = stack[None].repeat(2, 1, 1, 1)
    valid = torch.tensor([[True, True, False], [True, True, False]])
    fuser = StapleFuser()
    out = fuser(masks, valid)
    assert torch.equal(out[0], torch.from_numpy(disk(16, 16, 7)).float())
    assert fuser.computed == 1  # the second image has the same valid stack: a cache hit
    fuser(masks, valid)
    assert fuser.computed == 1
    flipped = masks.flip(-1).contiguous()  # an augmented copy is not served the stale result
    assert torch.equal(fuser(flipped, valid)[0], out[0].flip(-1))


def test_staple_threshold_is_applied_and_validated():
    # two raters, one a superset: STAPLE gives probability 0.5 on the ring between them
    stack = np.stack([disk(16, 16, 5), disk(16, 16, 9)])
    prob = staple_probability(stack)
    ring = (stack[1] == 1) & (stack[0] == 0)
    assert np.allclose(prob[ring], 0.5)
    masks, valid = torch.from_numpy(stack)[None], torch.ones(1, 2, dtype=torch.bool)
    assert np.array_equal(StapleFuser(0.5)(masks, valid)[0].bool().numpy(), stack[1].astype(bool))
    assert np.array_equal(StapleFuser(0.6)(masks, valid)[0].bool().numpy(), stack[0].astype(bool))
    with pytest.raises(ValueError, match="staple_threshold"):
        StapleFuser(0.0)
    with pytest.raises(ValueError, match="staple_max_iterations"):
        StapleFuser(max_iterations=0)


def test_staple_stops_on_structureless_masks():
    # ITK's default iteration limit is unlimited: EM never converges on pure noise
    noise = (np.random.default_rng(0).random((4, 64, 64)) > 0.7).astype(np.uint8)
    prob = staple_probability(noise, max_iterations=20)
    assert prob.shape == (64, 64) and np.isfinite(prob).all()


def test_staple_method_target_is_the_fused_label():
    method = StapleFusion(FusionConfig(encoder_name="tu-resnet10t", decoder_channels=(16, 16, 8, 8, 8)))
    stack = torch.from_numpy(np.stack([disk(16, 16, 7)] * 3))[None].repeat(2, 1, 1, 1)
    batch = MultiRaterBatch(torch.randn(2, 1, 32, 32), stack, torch.ones(2, 3, dtype=torch.bool))
    assert torch.equal(method.target(batch)[0, 0], stack[0, 0].float())
    model = method.build(DatasetInfo("d", 1, 3, ("a", "b", "c"), (32, 32)))
    assert torch.isfinite(method.training_step(model, batch, Stage("train", 1, 1e-3))["loss"])
