"""Best-match and Hungarian-matched metrics between samples (or personalised outputs) and raters.

``dice_max`` and ``dice_max_reverse`` are vectorised; the Hungarian step runs
``scipy.optimize.linear_sum_assignment`` once per case on a small matrix (moved to the CPU once
for the whole batch). Invalid raters are removed from the matrix before matching.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .context import MetricContext
from .functional import _nan_where, _valid_mean
from .pairwise import dice_from_counts

Tensor = torch.Tensor


def _matched_mean(mat: np.ndarray) -> float:
    """Mean of the entries picked by the maximum-weight assignment on ``mat`` (rectangular ok:
    min(rows, cols) pairs)."""
    rows, cols = linear_sum_assignment(mat, maximize=True)
    return float(mat[rows, cols].mean())


def _matched_rater_mean(mat: np.ndarray) -> float:
    """Sum of the maximum-weight assignment on ``mat [R,N]`` divided by R: every rater counts,
    a rater left without a sample (N < R) scores 0."""
    rows, cols = linear_sum_assignment(mat, maximize=True)
    return float(mat[rows, cols].sum() / mat.shape[0])


def _per_case(values: list[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------------------------------------
def _sample_mean(m: Tensor, ctx: MetricContext) -> Tensor:
    """(Weighted) mean over the samples of ``m [B,R,N]`` -> ``[B,R]``."""
    if not ctx.weighted:
        return m.mean(-1)
    return torch.einsum("brn,bn->br", m, ctx.w.to(m.dtype))


def dice_max_ctx(ctx: MetricContext) -> Tensor:
    m = ctx.dice_ys  # [B,R,N]
    best = torch.where(ctx.rater_valid.unsqueeze(-1), m, torch.full_like(m, -math.inf)).amax(1)
    return _nan_where(ctx.n_valid == 0, _sample_mean(best.unsqueeze(1), ctx).squeeze(1))


def dice_max(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
             convention: str = "standard", threshold: float = 0.5,
             sample_weights: Tensor | None = None) -> Tensor:
    """Dice_max = mean_i max_j M[j,i] per case ``[B]``, M[j,i] = Dice(Y_j, S_i) over valid
    raters j (each sample scored by its closest rater); weighted: sum_i w_i max_j M[j,i].
    Empty masks: see ``dice_matrix``."""
    return dice_max_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                            convention=convention, threshold=threshold,
                                            sample_weights=sample_weights))


def sample_rater_dice_ctx(ctx: MetricContext) -> Tensor:
    return _nan_where(~ctx.rater_valid, _sample_mean(ctx.dice_ys, ctx))


def sample_rater_dice(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                      convention: str = "standard", threshold: float = 0.5,
                      sample_weights: Tensor | None = None) -> Tensor:
    """Per-rater Dice a NON-personalised sample achieves: ``[B,R]`` with entry r =
    mean_i M[r,i] = mean over samples i of Dice(Y_r, S_i) (weighted: sum_i w_i M[r,i]; NaN for
    invalid raters).

    It is what scoring each rater against a fixed (randomly chosen) sample gives in expectation,
    so ``per_rater_dice - sample_rater_dice`` is the gain of personalisation. Empty masks: see
    ``dice_matrix`` (both empty -> 1)."""
    return sample_rater_dice_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                                     convention=convention, threshold=threshold,
                                                     sample_weights=sample_weights))


def sample_rater_dice_mean_ctx(ctx: MetricContext) -> Tensor:
    return _valid_mean(_sample_mean(ctx.dice_ys, ctx), ctx.valid)


def sample_rater_dice_mean(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                           convention: str = "standard", threshold: float = 0.5,
                           sample_weights: Tensor | None = None) -> Tensor:
    """``[B]``: mean over valid raters of ``sample_rater_dice`` = mean over all (valid rater,
    sample) pairs of Dice(Y_j, S_i) (samples weighted by ``sample_weights``)."""
    return sample_rater_dice_mean_ctx(MetricContext.build(raters, samples=samples,
                                                          rater_valid=rater_valid,
                                                          convention=convention, threshold=threshold,
                                                          sample_weights=sample_weights))


def dice_max_reverse_ctx(ctx: MetricContext) -> Tensor:
    m = ctx.dice_ys
    if ctx.weighted:  # a sample without mass is not a sample
        m = torch.where(ctx.w.unsqueeze(1) > 0, m, torch.full_like(m, -math.inf))
    return _valid_mean(m.amax(-1), ctx.valid)


def dice_max_reverse(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                     convention: str = "standard", threshold: float = 0.5,
                     sample_weights: Tensor | None = None) -> Tensor:
    """Dice_max_reverse = mean over valid raters j of max_i M[j,i] per case ``[B]`` (each rater
    scored by its closest sample; with ``sample_weights`` the max runs over samples of weight
    > 0)."""
    return dice_max_reverse_ctx(MetricContext.build(raters, samples=samples,
                                                    rater_valid=rater_valid,
                                                    convention=convention, threshold=threshold,
                                                    sample_weights=sample_weights))


# ---------------------------------------------------------------------------------------------
def dice_match_ctx(ctx: MetricContext) -> Tensor:
    m = ctx.dice_ys.detach().to("cpu", torch.float64).numpy()
    valid = ctx.rater_valid.cpu().numpy()
    out = [_matched_rater_mean(m[b][valid[b]]) if valid[b].any() else math.nan
           for b in range(m.shape[0])]
    return _per_case(out, ctx.dice_ys)


def dice_match(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
               convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Dice_match per case ``[B]``: Hungarian assignment pi maximising sum_j M[j, pi(j)] (i.e.
    minimising 1 - M) between the R valid raters and the N samples, each sample used at most
    once; the value is (1/R) sum over the matched pairs of M, i.e. the mean over ALL valid
    raters, where a rater left without a sample scores 0.

    N >= R: every rater gets its own sample (the D-Persona code's Dice_match). N < R: only N
    raters can be matched and the other R - N score 0, so the metric cannot reward producing
    fewer samples: adding a sample never lowers it, and one sample equal to rater 1 of four
    different raters scores 1/4, not 1. (HM-IoU instead replicates the samples.) Sample
    weights are ignored (a one-to-one matching has no masses)."""
    return dice_match_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                              convention=convention, threshold=threshold))


# ---------------------------------------------------------------------------------------------
def _replicated_matched_mean(mat: np.ndarray) -> float:
    """Hungarian mean on ``mat [N,R]`` after tiling both sides to L = lcm(N, R) entries."""
    n, r = mat.shape
    size = math.lcm(n, r)
    return _matched_mean(np.tile(mat, (size // n, size // r)))


def hm_iou_ctx(ctx: MetricContext) -> Tensor:
    m = ctx.iou_sy.detach().to("cpu", torch.float64).numpy()  # [B,N,R]
    valid = ctx.rater_valid.cpu().numpy()
    match = _matched_mean if ctx.hm_iou_matching == "best_of_n" else _replicated_matched_mean
    out = [match(m[b][:, valid[b]]) if valid[b].any() else math.nan for b in range(m.shape[0])]
    return _per_case(out, ctx.iou_sy)


def hm_iou(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
           convention: str = "standard", threshold: float = 0.5, matching: str | None = None) -> Tensor:
    """Hungarian-matched IoU per case ``[B]`` (Kohl et al. 2019, MoSE): the N samples and the R
    valid raters are each replicated to L = lcm(N, R) copies (when one count divides the other
    this replicates the smaller set only), matched one-to-one maximising total IoU, and the L
    matched IoUs averaged. Two empty masks: IoU 1 ("standard") or 0 ("dpersona").
    ``matching`` (default: the convention's): ``"replicate"`` as above; ``"best_of_n"`` (the
    Flow-SSN code, ``convention="flowssn"``): the N x R IoU matrix matched directly, the mean over
    the min(N, R) matched pairs, so with N > R only the R best-matched samples count."""
    return hm_iou_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                          convention=convention, threshold=threshold,
                                          hm_iou_matching=matching))


# ---------------------------------------------------------------------------------------------
def per_rater_dice_matched_ctx(ctx: MetricContext) -> Tensor:
    p, y = ctx.p, ctx.y
    inter = torch.bmm(y, p.transpose(1, 2))  # [B,R(raters),R(outputs)]
    d = dice_from_counts(inter, ctx.y_size.unsqueeze(-1), p.sum(-1).unsqueeze(-2),
                         ctx.convention, ctx.eps)
    mats = d.detach().to("cpu", torch.float64).numpy()
    valid = ctx.rater_valid.cpu().numpy()
    out = np.full(valid.shape, np.nan)
    for b in range(mats.shape[0]):
        idx = np.flatnonzero(valid[b])
        if idx.size:
            sub = mats[b][np.ix_(idx, idx)]
            rows, cols = linear_sum_assignment(sub, maximize=True)
            out[b, idx[rows]] = sub[rows, cols]
    return torch.as_tensor(out, dtype=d.dtype, device=d.device)


def per_rater_dice_matched(personalized: Tensor, raters: Tensor,
                           rater_valid: Tensor | None = None, convention: str = "standard",
                           threshold: float = 0.5) -> Tensor:
    """Hungarian-matched per-rater Dice ``[B,R]`` (the D-Persona protocol): outputs and raters
    of the valid indices are matched one-to-one maximising total Dice(Y_j, P_k); entry j is
    Dice(Y_j, P_pi(j)); NaN for invalid raters. Its mean over raters equals ``dice_match`` with
    the personalised outputs as samples. Reported beside the fixed-pairing ``per_rater_dice``."""
    return per_rater_dice_matched_ctx(MetricContext.build(raters, personalized=personalized,
                                                          rater_valid=rater_valid,
                                                          convention=convention,
                                                          threshold=threshold))
