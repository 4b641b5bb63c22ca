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


def _per_case(values: list[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------------------------------------
def dice_max_ctx(ctx: MetricContext) -> Tensor:
    m = ctx.dice_ys  # [B,R,N]
    best = torch.where(ctx.rater_valid.unsqueeze(-1), m, torch.full_like(m, -math.inf)).amax(1)
    return _nan_where(ctx.n_valid == 0, best.mean(-1))


def dice_max(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
             convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Dice_max = mean_i max_j M[j,i] per case ``[B]``, M[j,i] = Dice(Y_j, S_i) over valid
    raters j (each sample scored by its closest rater). Empty masks: see ``dice_matrix``."""
    return dice_max_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                            convention=convention, threshold=threshold))


def sample_rater_dice_ctx(ctx: MetricContext) -> Tensor:
    m = ctx.dice_ys  # [B,R,N]
    return _nan_where(~ctx.rater_valid, m.mean(-1))


def sample_rater_dice(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                      convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Per-rater Dice a NON-personalised sample achieves: ``[B,R]`` with entry r =
    mean_i M[r,i] = mean over samples i of Dice(Y_r, S_i) (NaN for invalid raters).

    It is what scoring each rater against a fixed (randomly chosen) sample gives in expectation,
    so ``per_rater_dice - sample_rater_dice`` is the gain of personalisation. Empty masks: see
    ``dice_matrix`` (both empty -> 1)."""
    return sample_rater_dice_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                                     convention=convention, threshold=threshold))


def sample_rater_dice_mean_ctx(ctx: MetricContext) -> Tensor:
    return _valid_mean(ctx.dice_ys.mean(-1), ctx.valid)


def sample_rater_dice_mean(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                           convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """``[B]``: mean over valid raters of ``sample_rater_dice`` = mean over all (valid rater,
    sample) pairs of Dice(Y_j, S_i)."""
    return sample_rater_dice_mean_ctx(MetricContext.build(raters, samples=samples,
                                                          rater_valid=rater_valid,
                                                          convention=convention, threshold=threshold))


def dice_max_reverse_ctx(ctx: MetricContext) -> Tensor:
    return _valid_mean(ctx.dice_ys.amax(-1), ctx.valid)


def dice_max_reverse(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                     convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Dice_max_reverse = mean over valid raters j of max_i M[j,i] per case ``[B]`` (each rater
    scored by its closest sample)."""
    return dice_max_reverse_ctx(MetricContext.build(raters, samples=samples,
                                                    rater_valid=rater_valid,
                                                    convention=convention, threshold=threshold))


# ---------------------------------------------------------------------------------------------
def dice_match_ctx(ctx: MetricContext) -> Tensor:
    m = ctx.dice_ys.detach().to("cpu", torch.float64).numpy()
    valid = ctx.rater_valid.cpu().numpy()
    out = [_matched_mean(m[b][valid[b]]) if valid[b].any() else math.nan
           for b in range(m.shape[0])]
    return _per_case(out, ctx.dice_ys)


def dice_match(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
               convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Dice_match per case ``[B]``: Hungarian assignment pi maximising sum_j M[j, pi(j)] (i.e.
    minimising 1 - M) between valid raters and samples, each used at most once; the value is
    the mean of M over the min(R, N) matched pairs. N >= R: mean over all raters; N < R: only N
    raters get a sample and the mean is over those N pairs (unmatched raters are not scored)."""
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
    out = [_replicated_matched_mean(m[b][:, valid[b]]) if valid[b].any() else math.nan
           for b in range(m.shape[0])]
    return _per_case(out, ctx.iou_sy)


def hm_iou(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
           convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Hungarian-matched IoU per case ``[B]`` (Kohl et al. 2019, MoSE): the N samples and the R
    valid raters are each replicated to L = lcm(N, R) copies (when one count divides the other
    this replicates the smaller set only), matched one-to-one maximising total IoU, and the L
    matched IoUs averaged. Two empty masks: IoU 1 ("standard") or 0 ("dpersona")."""
    return hm_iou_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                          convention=convention, threshold=threshold))


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
