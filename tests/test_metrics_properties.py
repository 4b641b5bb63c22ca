"""Property tests: the batched metrics against a plain per-case oracle (loops, brute-force
matching instead of the Hungarian solver), invariances, symmetries and bounds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mrseg_bench.metrics import (
    consensus_dice,
    consensus_dice_soft,
    dice_match,
    dice_max,
    dice_max_reverse,
    dice_soft,
    ged,
    hm_iou,
    ncc,
    per_rater_dice,
    per_rater_dice_matched,
    per_rater_dice_mean,
    rater_disagreement,
    sample_diversity,
)

LEVELS = np.array([0.05, 0.2, 0.45, 0.55, 0.8, 0.95])  # probabilities away from 0.5
SETTINGS = settings(max_examples=40, deadline=None)
CASE_METRICS = (ged, dice_max, dice_max_reverse, dice_match, hm_iou, dice_soft, ncc)


@st.composite
def inputs(draw, max_n=4, max_r=4, max_b=2, h=3, w=3):
    """(samples [B,N,H,W] float32 probs, raters [B,R,H,W] uint8, rater_valid [B,R] bool)."""
    b = draw(st.integers(1, max_b))
    n = draw(st.integers(1, max_n))
    r = draw(st.integers(1, max_r))
    idx = draw(arrays(np.int8, (b, n, h, w), elements=st.integers(0, len(LEVELS) - 1)))
    ys = draw(arrays(np.bool_, (b, r, h, w)))
    valid = draw(arrays(np.bool_, (b, r)))
    valid[:, 0] = True  # at least one valid rater (the no-valid-rater case is a unit test)
    return (torch.from_numpy(LEVELS[idx].astype(np.float32)), torch.from_numpy(ys.astype(np.uint8)),
            torch.from_numpy(valid))


# ---- oracle: one case at a time, straight from the definitions ---------------------------------
def _iou(a, b, conv):
    inter, union = np.sum(a & b), np.sum(a | b)
    if conv == "dpersona":
        return inter / (union + 1e-8)
    return 1.0 if union == 0 else inter / union


def _dice(a, b, conv="standard"):
    inter, tot = np.sum(a & b), np.sum(a) + np.sum(b)
    if conv == "dpersona":
        return (2 * inter + 1e-8) / (tot + 1e-8)
    return 1.0 if tot == 0 else 2 * inter / tot


def _best_assignment_sum(mat):
    """Brute force: the best total of a one-to-one pairing of the smaller side into the larger."""
    rows, cols = mat.shape
    if rows <= cols:
        best = max(sum(mat[i, p[i]] for i in range(rows))
                   for p in itertools.permutations(range(cols), rows))
    else:
        best = max(sum(mat[p[j], j] for j in range(cols))
                   for p in itertools.permutations(range(rows), cols))
    return best


def _best_assignment_mean(mat):
    """Mean over the min(rows, cols) pairs of the best one-to-one pairing."""
    return _best_assignment_sum(mat) / min(mat.shape)


def oracle(samples, raters, conv="standard"):
    """Per-case metrics for one case: samples [N,H,W] probs, raters [R,H,W] (valid only)."""
    s = [x > 0.5 for x in samples]
    y = [x.astype(bool) for x in raters]
    n, r = len(s), len(y)
    d = lambda a, b: 1 - _iou(a, b, conv)  # noqa: E731
    out = {}
    out["ged"] = (2 * np.mean([[d(a, b) for b in y] for a in s])
                  - np.mean([[d(a, b) for b in s] for a in s])
                  - np.mean([[d(a, b) for b in y] for a in y]))
    m = np.array([[_dice(yj, si, conv) for si in s] for yj in y])  # [R,N]
    out["dice_max"] = m.max(0).mean()
    out["dice_max_reverse"] = m.max(1).mean()
    out["dice_match"] = _best_assignment_sum(m) / r  # every rater counts; unmatched ones score 0
    iou = np.array([[_iou(si, yj, conv) for yj in y] for si in s])
    size = math.lcm(n, r)
    out["hm_iou"] = _best_assignment_mean(np.tile(iou, (size // n, size // r))) if size <= 6 \
        else None
    if conv == "dpersona":  # the reference: strict "> t" on the float32 means
        smean = samples.astype(np.float32).sum(0, dtype=np.float32) / np.float32(n)
        ymean = raters.astype(np.float32).sum(0, dtype=np.float32) / np.float32(r)
        ts = [(np.float32(t), np.float32(t)) for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
    else:
        smean, ymean = np.mean(samples.astype(np.float64), 0), np.mean(raters.astype(np.float64), 0)
        ts = [(t + 1e-6, t + 1e-6) for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
    out["dice_soft"] = np.mean([_dice(smean > a, ymean > b, conv) for a, b in ts])
    out["ncc"] = _phiseg_ncc(samples.astype(np.float64), raters.astype(np.float64))  # soft maps
    out["sample_diversity"] = 0.0 if n == 1 else np.mean(
        [d(s[i], s[k]) for i in range(n) for k in range(n) if i != k])
    out["rater_disagreement"] = math.nan if r == 1 else np.mean(
        [d(y[i], y[k]) for i in range(r) for k in range(r) if i != k])
    return out


def _constant(x):
    """``ncc``'s constant-map test: variance <= 1e-12 * max(1, mean square), so float32 rounding
    (binary entropies of 0.8f and 0.2f differ by ~1e-8) counts as constant."""
    return x.var() <= 1e-12 * max(1.0, np.mean(x * x))


def _phiseg_ncc(s, y, eps=1e-8):
    """PHiSeg's variance_ncc_dist with two-class one-hot maps, constant maps -> 0."""
    def xent(p, t):  # p, t: [H,W] foreground probabilities; sum over the two classes
        return -(t * np.log(p + eps) + (1 - t) * np.log(1 - p + eps))

    mean = s.mean(0)
    e_ss = np.mean([xent(si, mean) for si in s], 0)
    vals = []
    for yj in y:
        e_sy = np.mean([xent(si, yj) for si in s], 0)
        a, v = e_ss.ravel(), e_sy.ravel()
        if _constant(a) or _constant(v):
            vals.append(0.0)
            continue
        vals.append(np.sum((a - a.mean()) / (a.std() * a.size) * (v - v.mean()) / v.std()))
    return float(np.mean(vals))


def _assert_close(got, want, tol=1e-5, what=""):
    assert math.isclose(got, want, abs_tol=tol) or (math.isnan(got) and math.isnan(want)), \
        f"{what}: got {got}, want {want}"


# ---- tests -------------------------------------------------------------------------------------
# found by hypothesis: one sample of 0.8/0.2 pixels (same binary entropy up to float32 rounding)
_FLAT_ENTROPY = (torch.tensor([[[[0.8, 0.2, 0.2], [0.2, 0.2, 0.2], [0.2, 0.2, 0.2]]]]),
                 torch.zeros(1, 1, 3, 3, dtype=torch.uint8), torch.tensor([[True]]))


@SETTINGS
@given(inputs(max_n=3, max_r=3), st.sampled_from(["standard", "dpersona"]))
@example(_FLAT_ENTROPY, "standard")
def test_matches_oracle(data, conv):
    s, y, v = data
    funcs = {f.__name__: f for f in CASE_METRICS}
    got = {name: f(s, y, v) if name == "ncc" else f(s, y, v, convention=conv)
           for name, f in funcs.items()}
    got["sample_diversity"] = sample_diversity(s, y, convention=conv)
    got["rater_disagreement"] = rater_disagreement(y, v, convention=conv)
    for b in range(s.shape[0]):
        want = oracle(s[b].numpy(), y[b][v[b]].numpy(), conv)
        for name, value in want.items():
            if value is not None:
                _assert_close(got[name][b].item(), float(value), what=f"{name} case {b} {conv}")


@SETTINGS
@given(inputs(max_n=4, max_r=4), st.sampled_from(["standard", "dpersona"]))
def test_personalised_and_consensus_match_oracle(data, conv):
    s, y, v = data
    r = y.shape[1]
    pers = s.repeat(1, r, 1, 1)[:, :r]  # R personalised probability maps
    cons = s[:, 0]
    got = {
        "per_rater_dice": per_rater_dice(pers, y, v, convention=conv),
        "per_rater_dice_mean": per_rater_dice_mean(pers, y, v, convention=conv),
        "per_rater_dice_matched": per_rater_dice_matched(pers, y, v, convention=conv),
        "consensus_dice": consensus_dice(cons, y, v, convention=conv),
        "consensus_dice_soft": consensus_dice_soft(cons, y, v, convention=conv),
    }
    for b in range(s.shape[0]):
        idx = [j for j in range(r) if v[b, j]]
        pb = [pers[b, j].numpy() > 0.5 for j in range(r)]
        yb = [y[b, j].numpy().astype(bool) for j in range(r)]
        fixed = [_dice(pb[j], yb[j], conv) for j in idx]
        for k, j in enumerate(idx):
            _assert_close(got["per_rater_dice"][b, j].item(), fixed[k], what="per_rater_dice")
        _assert_close(got["per_rater_dice_mean"][b].item(), float(np.mean(fixed)), what="mean")
        # matched: brute force over permutations of the valid outputs; compare the mean
        m = np.array([[_dice(pb[k], yb[j], conv) for k in idx] for j in idx])
        want = _best_assignment_mean(m)
        _assert_close(float(np.nanmean(got["per_rater_dice_matched"][b].numpy())), want,
                      what="per_rater_dice_matched")
        assert all(math.isnan(got["per_rater_dice_matched"][b, j].item())
                   for j in range(r) if not v[b, j])
        count = np.sum([yb[j] for j in idx], 0)
        majority = 2 * count >= len(idx)  # mean of valid raters >= 0.5
        _assert_close(got["consensus_dice"][b].item(),
                      _dice(cons[b].numpy() > 0.5, majority, conv), what="consensus_dice")
        mean = count / len(idx)
        c = cons[b].numpy().astype(np.float64)
        soft = np.mean([_dice(c > t + 1e-6, mean > t + 1e-6, conv)
                        for t in (0.1, 0.3, 0.5, 0.7, 0.9)])
        _assert_close(got["consensus_dice_soft"][b].item(), soft, what="consensus_dice_soft")


@SETTINGS
@given(inputs(), st.randoms(use_true_random=False))
def test_invariant_to_permuting_samples_and_raters(data, rnd):
    s, y, v = data
    ps = list(range(s.shape[1]))
    pr = list(range(y.shape[1]))
    rnd.shuffle(ps)
    rnd.shuffle(pr)
    for f in CASE_METRICS:
        a = f(s, y, v)
        b = f(s[:, ps], y[:, pr], v[:, pr])
        assert torch.allclose(a, b, atol=1e-5, equal_nan=True), f.__name__
    a = rater_disagreement(y, v)
    assert torch.allclose(a, rater_disagreement(y[:, pr], v[:, pr]), atol=1e-6, equal_nan=True)
    a = sample_diversity(s, y)
    assert torch.allclose(a, sample_diversity(s[:, ps], y), atol=1e-6)


@SETTINGS
@given(inputs(max_b=3))
def test_batch_equals_per_case(data):
    s, y, v = data
    for f in CASE_METRICS:
        whole = f(s, y, v)
        parts = torch.cat([f(s[b:b + 1], y[b:b + 1], v[b:b + 1]) for b in range(s.shape[0])])
        assert torch.allclose(whole, parts, atol=1e-6, equal_nan=True), f.__name__
    pers = s[:, :1].expand(-1, y.shape[1], -1, -1)
    for f in (per_rater_dice, per_rater_dice_matched):
        whole = f(pers, y, v)
        parts = torch.cat([f(pers[b:b + 1], y[b:b + 1], v[b:b + 1]) for b in range(s.shape[0])])
        assert torch.allclose(whole, parts, atol=1e-6, equal_nan=True), f.__name__


@SETTINGS
@given(inputs(), st.sampled_from(["standard", "dpersona"]))
def test_symmetries(data, conv):
    """Swapping the roles of (binary) samples and raters."""
    s, y, _ = data
    sb = (s > 0.5).float()
    yf = y.float()
    swap = lambda f: f(yf, sb, convention=conv)  # noqa: E731  samples := raters
    assert torch.allclose(ged(sb, y, convention=conv), swap(ged), atol=1e-5)
    assert torch.allclose(hm_iou(sb, y, convention=conv), swap(hm_iou), atol=1e-6)
    assert torch.allclose(dice_max(sb, y, convention=conv), swap(dice_max_reverse), atol=1e-6)
    if s.shape[1] == y.shape[1]:
        assert torch.allclose(dice_match(sb, y, convention=conv), swap(dice_match), atol=1e-6)


@SETTINGS
@given(inputs(), st.sampled_from(["standard", "dpersona"]))
def test_bounds_and_orderings(data, conv):
    s, y, v = data
    g = ged(s, y, v, convention=conv)
    assert bool((g >= -1e-6).all()), g  # a squared MMD: 1 - d is a Tanimoto (p.d.) kernel
    for f in (dice_max, dice_max_reverse, dice_match, hm_iou, dice_soft):
        x = f(s, y, v, convention=conv)
        assert bool(((x >= -1e-7) & (x <= 1 + 1e-6)).all()), f.__name__
    assert bool((ncc(s, y, v).abs() <= 1 + 1e-5).all())
    if s.shape[1] >= int(v.sum(1).max()):  # every valid rater is matched
        assert bool((dice_match(s, y, v, convention=conv)
                     <= dice_max_reverse(s, y, v, convention=conv) + 1e-6).all())


@SETTINGS
@given(inputs())
def test_ged_zero_when_samples_equal_raters(data):
    _, y, _ = data
    assert torch.allclose(ged(y.float(), y), torch.zeros(y.shape[0]), atol=1e-6)
    assert torch.allclose(hm_iou(y.float(), y), torch.ones(y.shape[0]), atol=1e-6)
    assert torch.allclose(per_rater_dice(y.float(), y), torch.ones(y.shape[:2]), atol=1e-6)
