"""Batched multi-rater metrics on torch tensors (no loop over cases, samples, raters or pixels).

Inputs: ``samples [B,N,H,W]``, ``personalized [B,R,H,W]``, ``consensus [B,H,W]`` probabilities;
``raters [B,R,H,W]`` 0/1 masks; optional ``rater_valid [B,R]`` bool: an invalid rater is left out
of every mean and expectation. Binary predictions are ``p > threshold`` (0.5). Outputs are one
value per case ``[B]`` (per-rater metrics ``[B,R]``, NaN for invalid raters); a case with no
valid rater gets NaN. IoU/Dice empty-mask conventions: see ``pairwise``.

Each public function validates its inputs and builds a ``MetricContext``; the ``*_ctx`` form
takes a context (the suite shares one per batch so pairwise counts are computed once).
"""

from __future__ import annotations

import torch

from .context import SOFT_THRESHOLDS, THRESHOLD_ATOL, MetricContext
from .pairwise import dice_from_counts

Tensor = torch.Tensor


def _nan_where(mask: Tensor, x: Tensor) -> Tensor:
    return torch.where(mask, torch.full_like(x, float("nan")), x)


def _valid_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``x [B,R]`` over entries where ``valid [B,R]`` (0/1 float); NaN if none valid."""
    total = torch.where(valid > 0, x, torch.zeros_like(x)).sum(-1)
    n = valid.sum(-1)
    return _nan_where(n == 0, total / n.clamp_min(1))


# ---------------------------------------------------------------------------------------------
# GED
def ged_ctx(ctx: MetricContext) -> Tensor:
    v = ctx.valid
    n, nv = ctx.num_samples, ctx.n_valid
    e_sy = torch.einsum("bnr,br->b", 1 - ctx.iou_sy, v) / (n * nv.clamp_min(1))
    e_ss = (1 - ctx.iou_ss).mean((1, 2))
    e_yy = torch.einsum("bjk,bj,bk->b", 1 - ctx.iou_yy, v, v) / nv.clamp_min(1) ** 2
    return _nan_where(nv == 0, 2 * e_sy - e_ss - e_yy)


def ged(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
        convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Squared generalised energy distance per case ``[B]``, d(a,b) = 1 - IoU(a,b).

    GED^2 = 2 E[d(S,Y)] - E[d(S,S')] - E[d(Y,Y')], expectations over ALL pairs including
    i = i' (denominators N*R, N^2, R^2; R counts valid raters only), S = samples > threshold.
    ``"standard"``: two empty masks have IoU 1 (d = 0). ``"dpersona"``: IoU = |a∧b| /
    (|a∨b| + 1e-8), so two empty masks have d = 1, also on the diagonal (the D-Persona code).
    Both are >= 0 (up to ~1e-8): 1 - d is a positive definite (Tanimoto) kernel, so GED^2 is a
    squared MMD.
    """
    return ged_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                       convention=convention, threshold=threshold))


# ---------------------------------------------------------------------------------------------
# Dice_soft
def _soft_dice(pred: Tensor, target: Tensor, ctx: MetricContext) -> Tensor:
    """Mean over t in SOFT_THRESHOLDS of Dice(pred > t, target > t); pred/target ``[B,P]``.
    Loops over the five thresholds only; each step is one vectorised pass."""
    dt = ctx.dtype
    a = torch.empty(pred.shape, dtype=dt, device=pred.device)
    b = torch.empty(target.shape, dtype=dt, device=target.device)
    counts = []  # per threshold: |a|, |b|, |a ∧ b|, each [B]
    for t in SOFT_THRESHOLDS:
        torch.gt(pred, t + THRESHOLD_ATOL, out=a)
        torch.gt(target, t + THRESHOLD_ATOL, out=b)
        counts.append(torch.stack([a.sum(-1), b.sum(-1),
                                   torch.bmm(a.unsqueeze(1), b.unsqueeze(-1)).view(-1)]))
    size_a, size_b, inter = torch.stack(counts, -1)  # each [B,T]
    d = dice_from_counts(inter, size_a, size_b, ctx.convention, ctx.eps)
    return _nan_where(ctx.n_valid == 0, d.mean(-1))


def dice_soft_ctx(ctx: MetricContext) -> Tensor:
    return _soft_dice(ctx.soft_mean, torch.nan_to_num(ctx.rater_mean, nan=0.0), ctx)


def dice_soft(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
              convention: str = "standard") -> Tensor:
    """QUBIQ soft Dice per case ``[B]``: mean over t in {0.1,0.3,0.5,0.7,0.9} of
    Dice(mean_i S_i > t, mean_j Y_j > t), with the SOFT samples (not binarised) and the mean
    over valid raters. "> t" is tested as "> t + 1e-6" so a mean equal to t is not above it
    whatever the rounding. Both thresholded maps empty -> Dice 1 (either convention; the
    D-Persona code's +1e-8 under ``convention="dpersona"``).
    """
    return dice_soft_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                             convention=convention))


# ---------------------------------------------------------------------------------------------
# Diversity
def sample_diversity_ctx(ctx: MetricContext) -> Tensor:
    n = ctx.num_samples
    d = 1 - ctx.iou_ss
    off = d.sum((1, 2)) - d.diagonal(dim1=1, dim2=2).sum(-1)
    if n == 1:
        return torch.zeros_like(off)
    return off / (n * (n - 1))


def sample_diversity(samples: Tensor, raters: Tensor, convention: str = "standard",
                     threshold: float = 0.5) -> Tensor:
    """Mean pairwise distance between distinct samples per case ``[B]``:
    sum_{i != i'} (1 - IoU(S_i, S_i')) / (N (N-1)). N = 1 gives 0 (a single sample has no
    spread). Two empty samples: distance 0 ("standard") or 1 ("dpersona"). ``raters`` only
    fixes B, H, W (checked like every metric)."""
    return sample_diversity_ctx(MetricContext.build(raters, samples=samples,
                                                    convention=convention, threshold=threshold))


def rater_disagreement_ctx(ctx: MetricContext) -> Tensor:
    v, nv = ctx.valid, ctx.n_valid
    d = 1 - ctx.iou_yy
    pairs = torch.einsum("bjk,bj,bk->b", d, v, v) - torch.einsum(
        "bjj,bj->b", d, v)
    return _nan_where(nv < 2, pairs / (nv * (nv - 1)).clamp_min(1))


def rater_disagreement(raters: Tensor, rater_valid: Tensor | None = None,
                       convention: str = "standard") -> Tensor:
    """The data's own ambiguity per case ``[B]``: mean over pairs of distinct valid raters of
    1 - IoU(Y_j, Y_k). Fewer than 2 valid raters gives NaN (nothing to compare)."""
    return rater_disagreement_ctx(MetricContext.build(raters, rater_valid=rater_valid,
                                                      convention=convention))


# ---------------------------------------------------------------------------------------------
# Personalised outputs
def per_rater_dice_ctx(ctx: MetricContext) -> Tensor:
    if "per_rater_dice" not in ctx.memo:
        p, y = ctx.p, ctx.y
        inter = (p * y).sum(-1)
        d = dice_from_counts(inter, p.sum(-1), ctx.y_size, ctx.convention, ctx.eps)
        ctx.memo["per_rater_dice"] = _nan_where(~ctx.rater_valid, d)
    return ctx.memo["per_rater_dice"]


def per_rater_dice(personalized: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                   convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Fixed pairing ``[B,R]``: Dice(personalized_r > threshold, Y_r) for each rater r; NaN for
    invalid raters. Both empty -> 1 (module conventions)."""
    return per_rater_dice_ctx(MetricContext.build(raters, personalized=personalized,
                                                  rater_valid=rater_valid,
                                                  convention=convention, threshold=threshold))


def per_rater_dice_mean_ctx(ctx: MetricContext) -> Tensor:
    return _valid_mean(per_rater_dice_ctx(ctx), ctx.valid)


def per_rater_dice_mean(personalized: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                        convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Mean over valid raters of ``per_rater_dice`` ``[B]`` (NaN if no valid rater)."""
    return per_rater_dice_mean_ctx(MetricContext.build(raters, personalized=personalized,
                                                       rater_valid=rater_valid,
                                                       convention=convention, threshold=threshold))


# ---------------------------------------------------------------------------------------------
# Consensus
def consensus_dice_ctx(ctx: MetricContext) -> Tensor:
    c = ctx.consensus_flat > ctx.threshold
    majority = 2 * ctx.rater_count >= ctx.n_valid.unsqueeze(-1)  # mean >= 0.5, exact
    dt = ctx.dtype
    inter = (c & majority).sum(-1, dtype=dt)
    d = dice_from_counts(inter, c.sum(-1, dtype=dt), majority.sum(-1, dtype=dt),
                         ctx.convention, ctx.eps)
    return _nan_where(ctx.n_valid == 0, d)


def consensus_dice(consensus: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                   convention: str = "standard", threshold: float = 0.5) -> Tensor:
    """Dice(consensus > threshold, majority vote) per case ``[B]``. Majority vote: mean of the
    valid raters >= 0.5, so a tie (half the raters, e.g. 2 of 4) counts as foreground."""
    return consensus_dice_ctx(MetricContext.build(raters, consensus=consensus,
                                                  rater_valid=rater_valid,
                                                  convention=convention, threshold=threshold))


def consensus_dice_soft_ctx(ctx: MetricContext) -> Tensor:
    return _soft_dice(ctx.consensus_flat, torch.nan_to_num(ctx.rater_mean, nan=0.0), ctx)


def consensus_dice_soft(consensus: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
                        convention: str = "standard") -> Tensor:
    """Dice_soft of the consensus probability map: mean over t in {0.1,...,0.9} of
    Dice(consensus > t, mean_j Y_j > t) per case ``[B]`` (same tie rule as ``dice_soft``)."""
    return consensus_dice_soft_ctx(MetricContext.build(raters, consensus=consensus,
                                                       rater_valid=rater_valid,
                                                       convention=convention))


# ---------------------------------------------------------------------------------------------
# NCC (PHiSeg)
NCC_EPS = 1e-8  # PHiSeg's log(p + eps); it cancels out of the closed form below


def _pearson(u: Tensor, e: Tensor) -> Tensor:
    """Pearson's r between ``u [B,P]`` and each map of ``e [B,R,P]`` (population std); 0 where
    either map is constant. ``e`` is overwritten (centred in place)."""
    n = u.shape[-1]
    uc = u - u.mean(-1, keepdim=True)
    const = (u.amax(-1) == u.amin(-1)).unsqueeze(-1) | (e.amax(-1) == e.amin(-1))
    e -= e.mean(-1, keepdim=True)
    cov = torch.bmm(e, uc.unsqueeze(-1)).squeeze(-1) / n
    denom = torch.sqrt((uc * uc).mean(-1, keepdim=True)) * torch.linalg.vector_norm(e, dim=-1) \
        / n**0.5
    return torch.where(const, torch.zeros_like(cov), cov / torch.where(const, 1, denom))


def ncc_ctx(ctx: MetricContext) -> Tensor:
    m = ctx.sample_count / ctx.num_samples  # [B,P] fraction of samples marking each pixel
    u = m * (1 - m)  # uncertainty map, up to an affine map
    e = (ctx.y - m.unsqueeze(1)).abs_()  # [B,R,P] error maps, up to an affine map
    return _valid_mean(_pearson(u, e), ctx.valid)


def ncc(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
        threshold: float = 0.5) -> Tensor:
    """PHiSeg's NCC per case ``[B]``: mean over valid raters j of NCC(U, E_j).

    With binary samples S_i = p_i > threshold, eps = 1e-8 and the pixelwise binary
    cross-entropy xent(s, t) = -(t log(s + eps) + (1 - t) log(1 - s + eps)):
    uncertainty map U = mean_i xent(S_i, m) with m = mean_i S_i (PHiSeg's E_ss), error map
    E_j = mean_i xent(S_i, Y_j) (PHiSeg's E_sy). NCC(a, b) = mean((a - mean a)(b - mean b)) /
    (std a * std b), population std (Pearson's r, as PHiSeg's zero-normalised correlate).
    Because the S_i are 0/1, with delta = log(1 + eps) - log(eps) > 0:
    U = 2 delta m(1 - m) - log(1 + eps) and E_j = delta |Y_j - m| - log(1 + eps), so exactly
    NCC(U, E_j) = NCC(m(1 - m), |Y_j - m|), which is what is computed.
    Constant-map convention: if U or E_j is constant over the image, NCC(U, E_j) = 0 (PHiSeg
    would give NaN). Not affected by ``convention``.
    """
    return ncc_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                       threshold=threshold))
