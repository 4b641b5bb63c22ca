"""Issue 11/15 metric semantics, each checked against an independent plain-numpy re-implementation
or a hand computation:

- ``convention="dpersona"`` equals the D-Persona evaluation formulas (REFERENCE.md "Metrics":
  GED with IoU = inter / (union + 1e-8) over all pairs, the Dice matrix with +1e-8, Dice_max,
  Dice_max_reverse, Hungarian Dice_match, Dice_soft with a strict "> t" on float32 means, the
  per-rater Dice fixed and matched) to 1e-6 on random cases, including means exactly at a
  threshold;
- NCC equals PHiSeg's ``variance_ncc_dist`` on the soft sample maps (eps = 1e-8);
- integer sample weights equal replicated samples; bad weights are refused;
- Dice_match cannot reward fewer samples; the GED estimator option.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mrseg_bench.metrics import (
    MetricSuite,
    dice_match,
    dice_max,
    dice_max_reverse,
    dice_soft,
    ged,
    hm_iou,
    ncc,
    per_rater_dice,
    per_rater_dice_matched,
    sample_diversity,
    sample_rater_dice,
)
from mrseg_bench.types import Prediction

THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


# ---- the D-Persona evaluation, re-implemented from its description (one case at a time) -------
def ref_ged(labels: np.ndarray, probs: np.ndarray) -> float:
    """labels [R,P] 0/1, probs [N,P]: 2 E d(S,Y) - E d(S,S') - E d(Y,Y'), all pairs incl.
    i = i', d = 1 - inter / (union + 1e-8), S = probs > 0.5."""
    y, s = labels.astype(bool), probs > 0.5

    def d(a, b):
        total = 0.0
        for u in a:
            for v in b:
                total += 1.0 - np.sum(u & v) / (np.sum(u | v) + 1e-8)
        return total / (len(a) * len(b))

    return 2 * d(s, y) - d(s, s) - d(y, y)


def ref_dice_matrix(labels: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """M[i, j] = (2 |Y_i ∧ S_j| + 1e-8) / (|Y_i| + |S_j| + 1e-8), in float32 like the code."""
    m = np.zeros((len(labels), len(masks)))
    for i, y in enumerate(labels.astype(np.float32)):
        for j, s in enumerate(masks.astype(np.float32)):
            inter = np.float32((y * s).sum())
            m[i, j] = (np.float32(2) * inter + np.float32(1e-8)) / (y.sum() + s.sum() + np.float32(1e-8))
    return m


def ref_dice_at_all(labels: np.ndarray, probs: np.ndarray) -> dict[str, object]:
    m = ref_dice_matrix(labels, (probs > 0.5).astype(np.float32))
    rows, cols = linear_sum_assignment(1 - m)
    assert list(rows) == list(range(len(labels)))  # the code's indexing needs N >= R
    matched = [m[i, cols[i]] for i in range(len(labels))]
    return {"dice_max": m.max(0).mean(), "dice_max_reverse": m.max(1).mean(),
            "dice_match": float(np.mean(matched)), "each_matched": matched,
            "each_fixed": [m[i, i] for i in range(len(labels))]}


def ref_dice_soft(labels: np.ndarray, probs: np.ndarray) -> float:
    """Strict '>' on the float32 means (mean of the soft samples, mean of the raters)."""
    pred_mean = probs.astype(np.float32).mean(0)
    label_mean = labels.astype(np.float32).mean(0)
    out = []
    for t in THRESHOLDS:
        a = (pred_mean > np.float32(t)).astype(np.float32)
        b = (label_mean > np.float32(t)).astype(np.float32)
        out.append((2 * (a * b).sum() + 1e-8) / (a.sum() + b.sum() + 1e-8))
    return float(np.mean(out))


def ref_phiseg_ncc(samples: np.ndarray, labels: np.ndarray, eps: float = 1e-8) -> float:
    """PHiSeg variance_ncc_dist with two-class maps [1 - p, p] (softmax samples, one-hot raters)."""
    def xent(p, t):  # sum over the two classes of -t_c log(p_c + eps)
        return -(t * np.log(p + eps) + (1 - t) * np.log(1 - p + eps))

    def zncc(a, v):
        a, v = a.ravel(), v.ravel()
        a = (a - a.mean()) / (a.std() * a.size)
        v = (v - v.mean()) / v.std()
        return float(np.correlate(a, v)[0])

    mean = samples.mean(0)
    e_ss = np.mean([xent(s, mean) for s in samples], 0)
    return float(np.mean([zncc(e_ss, np.mean([xent(s, y) for s in samples], 0)) for y in labels]))


# ---- random cases -----------------------------------------------------------------------------
def random_cases(seed: int, b: int = 6, h: int = 12, w: int = 12):
    """B cases with R raters and N >= R samples: blobs for raters, noisy soft samples; half the
    cases use samples in {0, 1} with N = 10 so that soft means hit 0.1, 0.3, ... exactly, and
    R = 10 raters for one case so that rater means do too."""
    g = np.random.default_rng(seed)
    out = []
    for k in range(b):
        r = 10 if k == 0 else int(g.integers(2, 6))
        n = 10 if k % 2 == 0 else int(g.integers(r, 11))
        base = g.random((h, w))
        raters = (base[None] + 0.35 * g.standard_normal((r, h, w)) > 0.5).astype(np.uint8)
        soft = np.clip(base[None] + 0.3 * g.standard_normal((n, h, w)), 0, 1).astype(np.float32)
        if k % 2 == 0:
            soft = (soft > 0.5).astype(np.float32)
        out.append((raters, soft))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dpersona_convention_equals_the_reference_formulas(seed):
    worst = 0.0
    for raters, soft in random_cases(seed):
        y, s = torch.from_numpy(raters)[None], torch.from_numpy(soft)[None]
        flat_y, flat_s = raters.reshape(len(raters), -1), soft.reshape(len(soft), -1)
        want = ref_dice_at_all(flat_y, flat_s)
        want["ged"] = ref_ged(flat_y, flat_s)
        want["dice_soft"] = ref_dice_soft(raters, soft)
        got = {
            "ged": ged(s, y, convention="dpersona").item(),
            "dice_soft": dice_soft(s, y, convention="dpersona").item(),
            "dice_max": dice_max(s, y, convention="dpersona").item(),
            "dice_max_reverse": dice_max_reverse(s, y, convention="dpersona").item(),
            "dice_match": dice_match(s, y, convention="dpersona").item(),
        }
        for name, value in got.items():
            worst = max(worst, abs(value - want[name]))
            assert value == pytest.approx(want[name], abs=1e-6), name
        # personalised outputs: the first R samples as the R heads
        pers = s[:, : len(raters)]
        ref_p = ref_dice_at_all(flat_y, flat_s[: len(raters)])
        fixed = per_rater_dice(pers, y, convention="dpersona")[0].numpy()
        matched = per_rater_dice_matched(pers, y, convention="dpersona")[0].numpy()
        np.testing.assert_allclose(fixed, ref_p["each_fixed"], atol=1e-6)
        np.testing.assert_allclose(matched, ref_p["each_matched"], atol=1e-6)
    print(f"max |ours - reference| (dpersona, seed {seed}): {worst:.2e}")


def test_dpersona_dice_soft_is_strict_and_standard_keeps_its_tolerance():
    # raters: 1 of 10 marks the pixel -> mean exactly 0.1 (float32), not above 0.1 either way;
    # samples: 1 of 10 samples at 1.0 -> mean 0.1 as well. Both conventions agree here ...
    y = torch.zeros(1, 10, 1, 2, dtype=torch.uint8)
    y[0, 0, 0, 0] = 1
    s = torch.zeros(1, 10, 1, 2)
    s[0, 0, 0, 0] = 1.0
    assert dice_soft(s, y).item() == pytest.approx(1.0)
    assert dice_soft(s, y, convention="dpersona").item() == pytest.approx(1.0)
    # ... but a soft mean a hair above t (0.1 + 5e-7) is above t only under the strict test
    s2 = torch.zeros(1, 1, 1, 2)
    s2[0, 0, 0, 0] = 0.1 + 5e-7
    y1 = torch.zeros(1, 1, 1, 2, dtype=torch.uint8)
    # standard: not above 0.1 + 1e-6 -> empty vs empty at every t -> 1
    assert dice_soft(s2, y1).item() == pytest.approx(1.0)
    # dpersona: above 0.1 -> t = 0.1 scores ~0 (1e-8 / (1 + 1e-8)), the others 1 -> 4/5
    assert dice_soft(s2, y1, convention="dpersona").item() == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_ncc_soft_equals_phiseg(seed):
    worst = 0.0
    for raters, soft in random_cases(seed):
        g = np.random.default_rng(seed + 7)
        soft = np.clip(soft * 0.8 + 0.2 * g.random(soft.shape), 0, 1).astype(np.float32)  # soft
        got = ncc(torch.from_numpy(soft)[None], torch.from_numpy(raters)[None]).item()
        want = ref_phiseg_ncc(soft.astype(np.float64), raters.astype(np.float64))
        worst = max(worst, abs(got - want))
        assert got == pytest.approx(want, abs=1e-6)
        binary = ncc(torch.from_numpy(soft)[None], torch.from_numpy(raters)[None], maps="binary").item()
        want_b = ref_phiseg_ncc((soft > 0.5).astype(np.float64), raters.astype(np.float64))
        assert binary == pytest.approx(want_b, abs=1e-6)
    print(f"max |ncc - PHiSeg| (seed {seed}): {worst:.2e}")


# ---- sample weights ---------------------------------------------------------------------------
WEIGHTED = {
    "ged": lambda s, y, w: ged(s, y, sample_weights=w),
    "ged_dpersona": lambda s, y, w: ged(s, y, convention="dpersona", sample_weights=w),
    "dice_soft": lambda s, y, w: dice_soft(s, y, sample_weights=w),
    "dice_max": lambda s, y, w: dice_max(s, y, sample_weights=w),
    "dice_max_reverse": lambda s, y, w: dice_max_reverse(s, y, sample_weights=w),
    "sample_rater_dice": lambda s, y, w: sample_rater_dice(s, y, sample_weights=w),
    "ncc": lambda s, y, w: ncc(s, y, sample_weights=w),
    "ncc_binary": lambda s, y, w: ncc(s, y, sample_weights=w, maps="binary"),
}


def test_integer_weights_equal_replicated_samples():
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(2, 3, 10, 10, generator=g) > 0.5).to(torch.uint8)
    s = torch.rand(2, 3, 10, 10, generator=g)
    counts = torch.tensor([[1, 2, 3], [4, 1, 1]])
    w = counts.float() / counts.sum(-1, keepdim=True)
    for b in range(2):
        rep = s[b:b + 1].repeat_interleave(counts[b], dim=1)  # sample i repeated c_i times
        for name, f in WEIGHTED.items():
            weighted = f(s[b:b + 1], y[b:b + 1], w[b:b + 1])
            assert torch.allclose(weighted, f(rep, y[b:b + 1], None), atol=1e-5), name


def test_uniform_weights_change_nothing_and_the_suite_passes_them():
    g = torch.Generator().manual_seed(4)
    y = (torch.rand(2, 3, 8, 8, generator=g) > 0.5).to(torch.uint8)
    s = torch.rand(2, 4, 8, 8, generator=g)
    uniform = torch.full((2, 4), 0.25)
    for name, f in WEIGHTED.items():
        assert torch.allclose(f(s, y, uniform), f(s, y, None), atol=1e-6), name
    assert torch.allclose(sample_diversity(s, y, sample_weights=uniform), sample_diversity(s, y), atol=1e-6)
    suite = MetricSuite(["ged", "dice_soft"])
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    out = suite.compute(Prediction(samples=s, sample_weights=w), y)
    assert torch.allclose(out["ged"], ged(s, y, sample_weights=w))
    assert not torch.allclose(out["ged"], ged(s, y))


def test_weighted_sample_diversity_by_hand():
    # 3 samples: a, a, b with IoU(a, b) = 0 (disjoint): d(a,a) = 0, d(a,b) = 1.
    # weights (.5, .25, .25): sum_{i != i'} w w' d = 2 (.5*.25 + .25*.25) = .375; 1 - sum w^2 = .625
    a, b = torch.zeros(4, 4), torch.zeros(4, 4)
    a[0, 0], b[3, 3] = 0.9, 0.9
    s = torch.stack([a, a, b])[None]
    y = (torch.stack([a, b]) > 0.5).to(torch.uint8)[None]
    w = torch.tensor([[0.5, 0.25, 0.25]])
    assert sample_diversity(s, y, sample_weights=w).item() == pytest.approx(0.375 / 0.625)
    # GED all pairs: E d(S,Y) = .5 (each sample matches one of the two raters); E d(S,S') =
    # sum w w' d = .375; E d(Y,Y') = 2/4 -> 2 * .5 - .375 - .5
    assert ged(s, y, sample_weights=w).item() == pytest.approx(1 - 0.375 - 0.5)


@pytest.mark.parametrize("weights, match", [
    (torch.tensor([[0.5, 0.6]]), "sum to 1"),
    (torch.tensor([[1.5, -0.5]]), "non-negative"),
    (torch.tensor([[0.5, 0.5, 0.0]]), r"\[B,N\]"),
    (torch.tensor([[1, 0]]), "float"),
    (torch.tensor([[float("nan"), 1.0]]), "NaN"),
])
def test_bad_weights_are_refused(weights, match):
    s = torch.rand(1, 2, 4, 4)
    y = torch.zeros(1, 2, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=match):
        ged(s, y, sample_weights=weights)


def test_weights_without_samples_are_refused():
    from mrseg_bench.metrics import MetricContext

    with pytest.raises(ValueError, match="without samples"):
        MetricContext.build(torch.zeros(1, 2, 4, 4), sample_weights=torch.ones(1, 1))


# ---- Dice_match with fewer samples than raters -------------------------------------------------
def test_dice_match_does_not_reward_fewer_samples():
    # four different raters (disjoint quarters); one sample equal to rater 1
    y = torch.zeros(1, 4, 4, 4, dtype=torch.uint8)
    for k in range(4):
        y[0, k, k] = 1  # rater k marks row k
    one = y[:, :1].float() * 0.9 + 0.05  # the sample: rater 1's mask
    assert dice_match(one, y).item() == pytest.approx(0.25)  # not 1.0: three raters score 0
    assert dice_match(one, y, convention="dpersona").item() == pytest.approx(0.25, abs=1e-6)
    # the full set of four raters as samples scores 1; every subset scores k/4
    full = y.float() * 0.9 + 0.05
    for k in range(1, 5):
        assert dice_match(full[:, :k], y).item() == pytest.approx(k / 4)
    # hm_iou replicates the one sample to the four raters: IoU 1, 0, 0, 0 -> 1/4 too
    assert hm_iou(one, y).item() == pytest.approx(0.25)


# ---- GED estimator -------------------------------------------------------------------------------
def test_ged_estimators_by_hand():
    # samples: a, b (disjoint, non-empty); raters: a, a. d(a,b) = 1, d(a,a) = 0.
    a, b = torch.zeros(4, 4), torch.zeros(4, 4)
    a[0, :2], b[3, :2] = 0.9, 0.9
    s = torch.stack([a, b])[None]
    y = (torch.stack([a, a]) > 0.5).to(torch.uint8)[None]
    # all pairs: E d(S,Y) = 1/2, E d(S,S') = 2/4, E d(Y,Y') = 0 -> 1 - 1/2 = 1/2
    assert ged(s, y).item() == pytest.approx(0.5)
    # distinct: E d(S,S') = 1 -> 1 - 1 - 0 = 0
    assert ged(s, y, estimator="distinct").item() == pytest.approx(0.0)
    # one sample equal to the raters: all pairs 0; a single sample has no distinct pair -> 0
    assert ged(a[None, None], y, estimator="distinct").item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="ged_estimator"):
        ged(s, y, estimator="unbiased")
    suite = MetricSuite(["ged"], ged_estimator="distinct")
    assert suite.compute(Prediction(samples=s), y)["ged"].item() == pytest.approx(0.0)
    assert not math.isnan(ged(s, y, estimator="distinct").item())
