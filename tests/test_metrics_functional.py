"""Hand-computed values for every metric, and edge cases (empty masks, N = 1, N < R, invalid
raters). Masks are 4x4; pixels are (row, col)."""

from __future__ import annotations

import math

import pytest
import torch

from mrseg_bench.metrics import (
    consensus_dice,
    consensus_dice_soft,
    dice_match,
    dice_matrix,
    dice_max,
    dice_max_reverse,
    dice_soft,
    ged,
    hm_iou,
    iou_matrix,
    ncc,
    per_rater_dice,
    per_rater_dice_matched,
    per_rater_dice_mean,
    rater_disagreement,
    sample_diversity,
)

SAMPLE_METRICS = (ged, dice_max, dice_max_reverse, dice_match, hm_iou, dice_soft)


def mask(*pixels: tuple[int, int], shape=(4, 4)) -> torch.Tensor:
    m = torch.zeros(shape)
    for p in pixels:
        m[p] = 1
    return m


def probs(*masks: torch.Tensor) -> torch.Tensor:
    """Stack masks as one case of probabilities: 0.9 inside, 0.1 outside -> [1,K,H,W]."""
    return (torch.stack(masks) * 0.8 + 0.1)[None]


def case(*masks: torch.Tensor) -> torch.Tensor:
    return torch.stack(masks)[None]


def close(t: torch.Tensor, expected, tol=1e-6) -> bool:
    exp = torch.as_tensor(expected, dtype=torch.float64)
    return torch.allclose(t.double().cpu(), exp.reshape(t.shape), atol=tol, rtol=0, equal_nan=True)


# Worked example of the brief.
Y1 = mask((0, 0), (0, 1), (1, 0), (1, 1))
Y2 = mask((0, 0), (0, 1), (0, 2), (0, 3))
EMPTY = mask()
FULL = torch.ones(4, 4)
RATERS = case(Y1, Y2, EMPTY, Y1)
SAMPLES = probs(Y1, EMPTY, EMPTY, FULL)


class TestWorkedExample:
    """Hand derivation (standard IoU; S = samples > 0.5 = {Y1, 0, 0, all}):
    d(S,Y) rows S1..S4 over Y1..Y4: [0, 2/3, 1, 0], [1, 1, 0, 1], [1, 1, 0, 1], [3/4, 3/4, 1, 3/4]
    -> sum 131/12, E = 131/192. d(S,S') off-diagonal pairs {1,1,3/4,0,1,1} twice = 19/2 -> /16.
    d(Y,Y') pairs {2/3,1,0,1,2/3,1} twice = 26/3 -> /16. GED = 131/96 - 19/32 - 13/24 = 11/48.
    dpersona: empty-empty distances become 1 (S2/S3 vs Y3: +2; S2-S3 pair and S2, S3 diagonal:
    +4; Y3 diagonal: +1): 2*155/192 - 27/32 - 29/48 = 1/6.
    Dice M[j,i]: Y1: [1, 0, 0, .4], Y2: [.5, 0, 0, .4], Y3: [0, 1, 1, 0], Y4 = Y1 ->
    Dice_max = (1+1+1+.4)/4 = .85, reverse = (1+.5+1+1)/4 = .875,
    match: Y1-S1, Y3-S2, {Y2,Y4}-{S3,S4}: (1+1+.4+0)/4 = .6.
    Dice_soft: mean sample = .5 on the Y1 block, .3 elsewhere; mean rater = .75 at (0,0),(0,1),
    .5 at (1,0),(1,1), .25 at (0,2),(0,3). t=.1: 16 vs 6 px -> 12/22; t=.3: 4 vs 4 (same) -> 1;
    t=.5: 0 vs 2 -> 0; t=.7: 0 vs 2 -> 0; t=.9: both empty -> 1. Mean = (6/11 + 2)/5 = 28/55.
    HM-IoU (N = R = 4): IoU rows [1,1/3,0,1], [0,0,1,0], [0,0,1,0], [1/4,1/4,0,1/4]: best
    matching 1 + 1 + 0 + 1/4 -> 9/16."""

    def test_ged_standard(self):
        assert close(ged(SAMPLES, RATERS), 11 / 48)
        assert abs(11 / 48 - 0.229167) < 1e-6

    def test_ged_dpersona(self):
        assert close(ged(SAMPLES, RATERS, convention="dpersona"), 1 / 6)

    def test_dice_family(self):
        assert close(dice_max(SAMPLES, RATERS), 0.85)
        assert close(dice_max_reverse(SAMPLES, RATERS), 0.875)
        assert close(dice_match(SAMPLES, RATERS), 0.60)
        for conv in ("standard", "dpersona"):
            assert close(dice_max(SAMPLES, RATERS, convention=conv), 0.85)
            assert close(dice_match(SAMPLES, RATERS, convention=conv), 0.60)

    def test_dice_soft(self):
        assert close(dice_soft(SAMPLES, RATERS), 28 / 55)
        assert close(dice_soft(SAMPLES, RATERS, convention="dpersona"), 0.509091, tol=1e-6)

    def test_hm_iou_and_spread(self):
        assert close(hm_iou(SAMPLES, RATERS), 9 / 16)
        assert close(sample_diversity(SAMPLES, RATERS), (19 / 2) / 12)
        assert close(rater_disagreement(RATERS), (26 / 3) / 12)

    def test_dice_matrix_values(self):
        m = dice_matrix(RATERS, SAMPLES)
        expected = [[1, 0, 0, .4], [.5, 0, 0, .4], [0, 1, 1, 0], [1, 0, 0, .4]]
        assert close(m, [expected])
        # the reference's +1e-8: an empty sample against a 4-pixel rater is 1e-8 / 4, not 0
        md = dice_matrix(RATERS, SAMPLES, convention="dpersona")
        assert md[0, 0, 1].item() == pytest.approx(1e-8 / 4, rel=1e-3)
        assert md[0, 2, 1].item() == 1.0

    def test_iou_matrix_conventions(self):
        s = (SAMPLES > 0.5).float()
        assert close(iou_matrix(s, RATERS)[0, 1], [0, 0, 1, 0])
        assert close(iou_matrix(s, RATERS, convention="dpersona")[0, 1], [0, 0, 0, 0])
        assert close(iou_matrix(s, RATERS)[0, 0], [1, 1 / 3, 0, 1])


A = mask((0, 0), (0, 1))
B = mask((3, 2), (3, 3))


class TestHandCases:
    def test_ged_disjoint_and_identical(self):
        assert close(ged(probs(A), case(B)), 2.0)  # 2*1 - 0 - 0
        assert close(ged(probs(A, B), case(A, B)), 0.0)
        # N = 1, R = 2: 2 * (0 + 1)/2 - 0 - (0+1+1+0)/4 = 0.5
        assert close(ged(probs(A), case(A, B)), 0.5)

    def test_dice_n_less_than_r(self):
        s, y = probs(A), case(A, B)  # N = 1 < R = 2
        assert close(dice_max(s, y), 1.0)
        assert close(dice_max_reverse(s, y), 0.5)
        assert close(dice_match(s, y), 0.5)  # rater 2 has no sample: scores 0 (issue 11)
        assert close(hm_iou(s, y), 0.5)  # {A, A} vs {A, B}

    def test_hm_iou_lcm_replication(self):
        # N = 3, R = 2 -> 6 copies each: S = {A,A,B} x2, Y = {A,B} x3: 3 A-A, 2 B-B, 1 A-B
        assert close(hm_iou(probs(A, A, B), case(A, B)), 5 / 6)
        assert close(hm_iou(probs(A, A, B), case(A, B), convention="dpersona"), 5 / 6, tol=1e-6)

    def test_dice_soft_hand(self):
        # one sample at 0.6 on A; raters A and {(0,0)}: rater mean 1 at (0,0), .5 at (0,1)
        s = (A * 0.6)[None, None]
        y = case(A, mask((0, 0)))
        # t=.1, .3: A vs A -> 1; t=.5: A vs {(0,0)} -> 2/3; t=.7, .9: empty vs {(0,0)} -> 0
        assert close(dice_soft(s, y), (1 + 1 + 2 / 3) / 5)

    def test_dice_soft_uses_soft_samples(self):
        # two samples 0.4 and 0.4 on A: binarised they are empty, soft mean .4 > .1 and .3
        s = torch.stack([A * 0.4, A * 0.4])[None]
        assert close(dice_soft(s, case(A)), 2 / 5)

    def test_diversity(self):
        # S = {A, B, A}: off-diagonal distances: A-B 1 (x4), A-A 0 (x2) -> 4/6
        assert close(sample_diversity(probs(A, B, A), case(A)), 4 / 6)
        assert close(rater_disagreement(case(A, A, B)), 4 / 6)

    def test_per_rater(self):
        pers = probs(B, A)  # output 0 = B, output 1 = A
        y = case(A, B)
        assert close(per_rater_dice(pers, y), [[0.0, 0.0]])
        assert close(per_rater_dice_mean(pers, y), [0.0])
        assert close(per_rater_dice_matched(pers, y), [[1.0, 1.0]])
        # a partial overlap: output {(0,0)} vs rater A -> 2*1/(1+2)
        pers2 = probs(mask((0, 0)), B)
        assert close(per_rater_dice(pers2, y), [[2 / 3, 1.0]])
        assert close(per_rater_dice_mean(pers2, y), [(2 / 3 + 1) / 2])

    def test_per_rater_invalid_is_nan(self):
        pers, y = probs(A, A), case(A, B)
        valid = torch.tensor([[True, False]])
        assert close(per_rater_dice(pers, y, valid), [[1.0, math.nan]])
        assert close(per_rater_dice_mean(pers, y, valid), [1.0])
        # matched among valid indices only: rater 0 with output 0
        assert close(per_rater_dice_matched(pers, y, valid), [[1.0, math.nan]])

    def test_consensus_majority_ties(self):
        a, b, c = mask((0, 0)), mask((1, 1)), mask((2, 2))
        y = case(a + b, a, c, b)  # counts: a 2, b 2, c 1 of 4 -> majority {a, b} (ties count)
        cons = ((a + b) * 0.7)[None]
        assert close(consensus_dice(cons, y), 1.0)
        valid = torch.tensor([[True, True, True, False]])  # counts a 2, b 1 of 3 -> {a}
        assert close(consensus_dice(cons, y, valid), 2 / 3)

    def test_consensus_soft(self):
        a, b = mask((0, 0)), mask((1, 1))
        y = case(a + b, a)  # mean: a 1, b .5
        cons = (a * 0.6 + b * 0.2)[None]
        # t=.1: {a,b} vs {a,b} 1; t=.3: {a} vs {a,b} 2/3; t=.5: {a} vs {a} 1; t=.7,.9: 0 vs {a}
        assert close(consensus_dice_soft(cons, y), (1 + 2 / 3 + 1) / 5)

    def test_ncc_hand_binary(self):
        # maps="binary": 1x3 image; S1 = [1,1,0], S2 = [1,0,0]: mean m = [1, .5, 0]; U ∝ [0, 1, 0]
        s = torch.tensor([[[[0.9, 0.9, 0.1]], [[0.9, 0.1, 0.1]]]])
        y_match = torch.tensor([[[[1.0, 0.0, 0.0]]]])  # error map ∝ [0, 1, 0] -> NCC 1
        y_anti = torch.tensor([[[[0.0, 0.0, 1.0]]]])  # error map ∝ [2, 1, 2] -> NCC -1
        assert close(ncc(s, y_match, maps="binary"), 1.0, tol=1e-5)
        assert close(ncc(s, y_anti, maps="binary"), -1.0, tol=1e-5)
        both = torch.cat([y_match, y_anti], 1)
        assert close(ncc(s, both, maps="binary"), 0.0, tol=1e-5)
        assert close(ncc(s, both, torch.tensor([[True, False]]), maps="binary"), 1.0, tol=1e-5)

    def test_ncc_hand_soft(self):
        # maps="soft" (PHiSeg): one sample, 1x3 image, p = [.5, .25, .5]; m = p, so
        # E_ss = H(p) (binary entropy, eps ~ 0): [ln2, H(.25), ln2] with H(.25) = .5623;
        # Y = [1, 0, 0]: E_sy = [-ln .5, -ln .75, -ln .5] = [ln2, .2877, ln2].
        # Both maps are "high, low, high" with 2 equal ends: Pearson's r of two 3-pixel maps
        # with that shape is exactly 1.
        s = torch.tensor([[[[0.5, 0.25, 0.5]]]])
        y = torch.tensor([[[[1.0, 0.0, 0.0]]]])
        assert close(ncc(s, y), 1.0, tol=1e-6)
        # Y = [0, 0, 1] gives the same E_sy (ln2 at both .5 pixels): also 1; binary maps
        # (p > .5: all 0) give constant maps -> 0 by convention
        assert close(ncc(s, torch.tensor([[[[0.0, 0.0, 1.0]]]])), 1.0, tol=1e-6)
        assert close(ncc(s, y, maps="binary"), 0.0)
        # two samples [.9,.1,.5], [.1,.9,.5]: m = [.5,.5,.5]; E_ss = -(.5 ln .9 + .5 ln .1) at
        # pixels 0, 1 (=1.2040) and ln 2 = .6931 at pixel 2. Y = [1, 0, 0]: E_sy =
        # [-(ln .9 + ln .1)/2... per pixel: mean_i -ln(q_i) at 1s, -ln(1 - q_i) at 0s]
        # = [1.2040, 1.2040, .6931]: proportional -> r = 1.
        s2 = torch.tensor([[[[0.9, 0.1, 0.5]], [[0.1, 0.9, 0.5]]]])
        assert close(ncc(s2, y), 1.0, tol=1e-6)

    def test_ncc_constant_map_is_zero(self):
        s = probs(A, A)  # identical samples: the binary uncertainty map is constant
        assert close(ncc(s, case(A, B), maps="binary"), 0.0)
        half = torch.full((1, 2, 4, 4), 0.5)  # soft: every pixel has entropy ln 2
        assert close(ncc(half, case(A, B)), 0.0)


class TestEdgeCases:
    def test_all_empty(self):
        s, y = probs(EMPTY, EMPTY), case(EMPTY, EMPTY, EMPTY)
        assert close(ged(s, y), 0.0)
        assert close(ged(s, y, convention="dpersona"), 0.0)  # 2*1 - 1 - 1
        for f in (dice_max, dice_max_reverse, dice_soft):
            assert close(f(s, y), 1.0), f.__name__
        assert close(dice_match(s, y), 2 / 3)  # N = 2 < R = 3: the third rater scores 0
        assert close(hm_iou(s, y), 1.0)
        assert close(hm_iou(s, y, convention="dpersona"), 0.0)
        assert close(sample_diversity(s, y), 0.0)
        assert close(sample_diversity(s, y, convention="dpersona"), 1.0)
        assert close(rater_disagreement(y), 0.0)
        assert close(ncc(s, y), 0.0)
        assert close(per_rater_dice(probs(EMPTY, EMPTY, EMPTY), y), [[1.0, 1.0, 1.0]])
        assert close(consensus_dice(EMPTY[None], y), 1.0)

    def test_one_rater(self):
        s, y = probs(A, B), case(A)
        assert close(ged(s, y), 2 * 0.5 - 0.5 - 0)  # E d(S,Y) = 1/2, E d(S,S') = 2/4
        assert close(rater_disagreement(y), math.nan)  # nothing to compare
        assert close(dice_match(s, y), 1.0)

    def test_identical_raters(self):
        y = case(A, A, A)
        assert close(rater_disagreement(y), 0.0)
        assert close(ged(probs(A), y), 0.0)
        assert close(dice_soft(A[None, None], y), 1.0)
        # soft 0.9 inside is not above t = 0.9: that threshold scores 0 -> 4/5
        assert close(dice_soft(probs(A), y), 0.8)

    def test_single_sample(self):
        s = probs(A)
        assert close(sample_diversity(s, case(A)), 0.0)
        assert close(ged(s, case(A, B)), 0.5)

    def test_invalid_raters_excluded(self):
        y = case(A, B, EMPTY)
        valid = torch.tensor([[True, False, True]])
        y_kept = case(A, EMPTY)
        s = probs(A, EMPTY, B)
        for f in SAMPLE_METRICS + (ncc,):
            assert close(f(s, y, valid), f(s, y_kept)), f.__name__
        assert close(rater_disagreement(y, valid), rater_disagreement(y_kept))

    def test_no_valid_rater_is_nan(self):
        s, y = probs(A), case(A, B)
        none = torch.zeros(1, 2, dtype=torch.bool)
        for f in SAMPLE_METRICS + (ncc,):
            assert math.isnan(f(s, y, none).item()), f.__name__
        assert math.isnan(consensus_dice(A[None], y, none).item())
        assert math.isnan(per_rater_dice_mean(probs(A, B), y, none).item())

    def test_threshold_is_strict(self):
        s = (A * 0.5)[None, None]  # exactly 0.5 is not foreground
        assert close(dice_max(s, case(A)), 0.0)
        assert close(dice_max(s, case(EMPTY)), 1.0)

    def test_rater_dtypes(self):
        s = probs(A, B)
        ref = ged(s, case(A, B))
        for dt in (torch.uint8, torch.bool, torch.float64, torch.int64):
            assert close(ged(s, case(A, B).to(dt)), ref.item()), dt

    def test_batch_shapes(self):
        s = torch.cat([SAMPLES, probs(A, B, A, B)])
        y = torch.cat([RATERS, case(A, B, A, B)])
        out = ged(s, y)
        assert out.shape == (2,)
        assert close(out, [11 / 48, 0.0])
        assert per_rater_dice(s, y).shape == (2, 4)


def test_sample_rater_dice_worked_example():
    """M[j,i] rows (Y1..Y4) = [1,0,0,.4], [.5,0,0,.4], [0,1,1,0], [1,0,0,.4] (Y3 empty: both-empty
    Dice is 1) -> row means .35, .225, .5, .35; their mean 1.425/4 = .35625."""
    from mrseg_bench.metrics import sample_rater_dice, sample_rater_dice_mean

    assert close(sample_rater_dice(SAMPLES, RATERS), [[0.35, 0.225, 0.5, 0.35]])
    assert close(sample_rater_dice_mean(SAMPLES, RATERS), [0.35625])


def test_sample_rater_dice_invalid_rater_is_nan_and_left_out_of_the_mean():
    from mrseg_bench.metrics import sample_rater_dice, sample_rater_dice_mean

    valid = torch.tensor([[True, True, False, True]])
    assert close(sample_rater_dice(SAMPLES, RATERS, valid), [[0.35, 0.225, math.nan, 0.35]])
    assert close(sample_rater_dice_mean(SAMPLES, RATERS, valid), [(0.35 + 0.225 + 0.35) / 3])


def test_personalised_outputs_beat_a_fixed_sample_when_they_match_their_rater():
    """Outputs equal to their raters: per-rater Dice 1 everywhere; the same outputs used as
    non-personalised samples score the row means of the Dice matrix instead."""
    from mrseg_bench.metrics import sample_rater_dice_mean

    outputs = probs(Y1, Y2, EMPTY, Y1)
    assert close(per_rater_dice_mean(outputs, RATERS), [1.0])
    # M rows: Y1 vs (Y1,Y2,0,Y1) = [1,.5,0,1]; Y2: [.5,1,0,.5]; Y3: [0,0,1,0]; Y4 = Y1
    assert close(sample_rater_dice_mean(outputs, RATERS), [(2.5 / 4 + 2 / 4 + 1 / 4 + 2.5 / 4) / 4])
