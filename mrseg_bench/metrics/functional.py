"""Batched multi-rater metrics on torch tensors (no loop over cases, samples, raters or pixels).

Inputs: ``samples [B,N,H,W]``, ``personalized [B,R,H,W]``, ``consensus [B,H,W]`` probabilities;
``raters [B,R,H,W]`` 0/1 masks; optional ``rater_valid [B,R]`` bool: an invalid rater is left out
of every mean and expectation. Binary predictions are ``p > threshold`` (0.5). Outputs are one
value per case ``[B]`` (per-rater metrics ``[B,R]``, NaN for invalid raters); a case with no
valid rater gets NaN. IoU/Dice empty-mask conventions: see ``pairwise``.

Each public function validates its inputs and builds a ``MetricContext``; the ``*_ctx`` form
takes a context (the suite shares one per batch so pairwise counts are computed once).

Reduction (one, for every function): none over cases -- a value per case ``[B]`` (or ``[B,R]``);
the report averages over cases, then over seeds. ``sample_weights [B,N]`` (optional, rows sum
to 1; MoSE's gates): every diversity metric that takes an expectation over samples uses the
weighted one (GED, Dice_soft, Dice_max, sample_rater_dice, sample diversity, NCC); Dice_max_reverse
takes its max over samples with weight > 0; the one-to-one matchings (Dice_match, HM-IoU) use
every sample once and ignore the weights (a matching has no masses). With integer weights
c_i / sum c, GED ("all_pairs"), Dice_soft, Dice_max, Dice_max_reverse, sample_rater_dice and NCC
equal their unweighted values on the samples replicated c_i times; distinct-pair quantities
(sample diversity, GED "distinct") do not, since replicas add zero-distance pairs.
"""

from __future__ import annotations

import torch

from .context import THRESHOLD_ATOL, MetricContext
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
# Weighted pair expectations
def pair_expectation(d: Tensor, wa: Tensor, wb: Tensor, estimator: str) -> Tensor:
    """E[d(A, A')] for ``d [B,K,K]`` under weights ``wa``/``wb`` ``[B,K]`` (the same weights,
    0 for an invalid member): ``"all_pairs"`` = sum_{k,k'} w_k w_k' d_kk' / (sum w)^2;
    ``"distinct"`` = sum_{k != k'} w_k w_k' d_kk' / ((sum w)^2 - sum_k w_k^2) (uniform weights:
    the mean over the K (K - 1) ordered pairs of distinct members; 0 when no such pair has mass,
    e.g. a single member)."""
    full = torch.einsum("bi,bij,bj->b", wa, d, wb)
    total = wa.sum(-1) * wb.sum(-1)
    if estimator == "all_pairs":
        return full / total.clamp_min(1e-30)
    diag_w = (wa * wb).sum(-1)
    off = full - torch.einsum("bi,bii,bi->b", wa, d, wb)
    denom = total - diag_w
    return torch.where(denom > 1e-12, off / denom.clamp_min(1e-30), torch.zeros_like(off))


# ---------------------------------------------------------------------------------------------
# GED
def ged_ctx(ctx: MetricContext) -> Tensor:
    v, w, nv = ctx.valid, ctx.w, ctx.n_valid
    e_sy = torch.einsum("bn,bnr,br->b", w, 1 - ctx.iou_sy, v) / nv.clamp_min(1)
    e_ss = pair_expectation(1 - ctx.iou_ss, w, w, ctx.ged_estimator)
    e_yy = pair_expectation(1 - ctx.iou_yy, v, v, ctx.ged_estimator)
    squared = 2 * e_sy - e_ss - e_yy
    value = squared.clamp_min(0).sqrt() if ctx.ged_form == "root" else squared
    return _nan_where(nv == 0, value)


def ged(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
        convention: str = "standard", threshold: float = 0.5,
        sample_weights: Tensor | None = None, estimator: str = "all_pairs",
        form: str | None = None) -> Tensor:
    """Squared generalised energy distance per case ``[B]``, d(a,b) = 1 - IoU(a,b).

    GED^2 = 2 E[d(S,Y)] - E[d(S,S')] - E[d(Y,Y')], S = samples > threshold, Y the valid raters.
    ``estimator`` (named, reported in every table caption):
    - ``"all_pairs"`` (default; Kohl, PHiSeg and the D-Persona code): expectations over ALL
      pairs including i = i' (denominators N*R, N^2, R^2). Its value depends on N: the
      diagonal terms d(S_i,S_i) = 0 weigh 1/N, so fewer samples give a larger GED.
    - ``"distinct"``: E[d(S,S')] and E[d(Y,Y')] over distinct pairs only (N(N-1), R(R-1));
      a single sample (or rater) contributes 0.
    ``sample_weights [B,N]``: weighted expectations, E[d(S,Y)] = sum_i w_i mean_j d(S_i,Y_j),
    E[d(S,S')] = sum_{i,i'} w_i w_i' d(S_i,S_i') ("distinct": over i != i', divided by
    1 - sum_i w_i^2). With integer weights c_i / sum c, "all_pairs" equals GED on the samples
    replicated c_i times.
    ``"standard"``: two empty masks have IoU 1 (d = 0). ``"dpersona"``: IoU = |a∧b| /
    (|a∨b| + 1e-8), so two empty masks have d = 1, also on the diagonal (the D-Persona code).
    "all_pairs" GED^2 >= 0 (up to ~1e-8): 1 - d is a positive definite (Tanimoto) kernel, so
    it is a squared MMD.
    ``form`` (default: the convention's, ``"squared"`` for every named convention): ``"root"``
    returns sqrt(max(GED^2, 0)), GED proper. ``convention`` may name a paper convention
    (``conventions.CONVENTION_SPECS``); its overlap rule applies.
    """
    return ged_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                       convention=convention, threshold=threshold,
                                       sample_weights=sample_weights, ged_estimator=estimator,
                                       ged_form=form))


# ---------------------------------------------------------------------------------------------
# Dice_soft
def _soft_dice(pred: Tensor, target: Tensor, ctx: MetricContext) -> Tensor:
    """Mean over t in ``ctx.soft_thresholds`` of Dice(pred > t, target > t); pred/target ``[B,P]``.
    Loops over the thresholds only; each step is one vectorised pass. "> t" is strict
    under ``convention="dpersona"`` (the reference code) and "> t + 1e-6" otherwise."""
    dt = ctx.dtype
    a = torch.empty(pred.shape, dtype=dt, device=pred.device)
    b = torch.empty(target.shape, dtype=dt, device=target.device)
    atol = 0.0 if ctx.convention == "dpersona" else THRESHOLD_ATOL
    counts = []  # per threshold: |a|, |b|, |a ∧ b|, each [B]
    for t in ctx.soft_thresholds:
        torch.gt(pred, t + atol, out=a)
        torch.gt(target, t + atol, out=b)
        counts.append(torch.stack([a.sum(-1), b.sum(-1),
                                   torch.bmm(a.unsqueeze(1), b.unsqueeze(-1)).view(-1)]))
    size_a, size_b, inter = torch.stack(counts, -1)  # each [B,T]
    d = dice_from_counts(inter, size_a, size_b, ctx.convention, ctx.eps)
    return _nan_where(ctx.n_valid == 0, d.mean(-1))


def dice_soft_ctx(ctx: MetricContext) -> Tensor:
    return _soft_dice(ctx.soft_mean, torch.nan_to_num(ctx.rater_mean, nan=0.0), ctx)


def dice_soft(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
              convention: str = "standard", sample_weights: Tensor | None = None,
              thresholds: tuple[float, ...] | None = None) -> Tensor:
    """QUBIQ soft Dice per case ``[B]``: mean over t in {0.1,0.3,0.5,0.7,0.9} of
    Dice(mean_i S_i > t, mean_j Y_j > t), with the SOFT samples (not binarised) and the mean
    over valid raters; ``sample_weights``: the weighted mean sum_i w_i S_i.
    ``"standard"``: "> t" is tested as "> t + 1e-6" so a mean equal to t is not above it
    whatever the float rounding. ``"dpersona"``: strict "> t" on the float32 means, exactly as
    the D-Persona code. Both thresholded maps empty -> Dice 1 (either convention; the D-Persona
    code's +1e-8 under ``convention="dpersona"``).
    ``thresholds`` (default: the convention's; ``(0.5,)`` under ``"flowssn"``): the set averaged
    over; a single threshold gives Dice(mean_i S_i > t, mean_j Y_j > t).
    """
    return dice_soft_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                             convention=convention, sample_weights=sample_weights,
                                             soft_thresholds=thresholds))


# ---------------------------------------------------------------------------------------------
# Diversity
def sample_diversity_ctx(ctx: MetricContext) -> Tensor:
    return pair_expectation(1 - ctx.iou_ss, ctx.w, ctx.w, "distinct")


def sample_diversity(samples: Tensor, raters: Tensor, convention: str = "standard",
                     threshold: float = 0.5, sample_weights: Tensor | None = None) -> Tensor:
    """Mean pairwise distance between distinct samples per case ``[B]``:
    sum_{i != i'} (1 - IoU(S_i, S_i')) / (N (N-1)); weighted: sum_{i != i'} w_i w_i' d /
    (1 - sum_i w_i^2). N = 1 gives 0 (a single sample has no spread). Two empty samples:
    distance 0 ("standard") or 1 ("dpersona"). ``raters`` only fixes B, H, W."""
    return sample_diversity_ctx(MetricContext.build(raters, samples=samples,
                                                    convention=convention, threshold=threshold,
                                                    sample_weights=sample_weights))


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
def _is_constant(x: Tensor) -> Tensor:
    """Maps constant over the last dim up to rounding (range <= 64 ulp of their magnitude)."""
    hi, lo = x.amax(-1), x.amin(-1)
    scale = torch.maximum(hi.abs(), lo.abs()).clamp_min(1.0)
    return (hi - lo) <= 64 * torch.finfo(x.dtype).eps * scale


def _pearson(u: Tensor, e: Tensor) -> Tensor:
    """Pearson's r between ``u [B,P]`` and each map of ``e [B,R,P]`` (population std); 0 where
    either map is constant (up to rounding). ``e`` is overwritten (centred in place)."""
    n = u.shape[-1]
    uc = u - u.mean(-1, keepdim=True)
    const = _is_constant(u).unsqueeze(-1) | _is_constant(e)
    e -= e.mean(-1, keepdim=True)
    cov = torch.bmm(e, uc.unsqueeze(-1)).squeeze(-1) / n
    denom = torch.sqrt((uc * uc).mean(-1, keepdim=True)) * torch.linalg.vector_norm(e, dim=-1) \
        / n**0.5
    return torch.where(const, torch.zeros_like(cov), cov / torch.where(const, 1, denom))


def ncc_ctx(ctx: MetricContext) -> Tensor:
    maps = ctx.ncc_maps_pass
    m, log_p, log_q = maps["m"], maps["log_p"], maps["log_q"]
    u = -(m * log_p + (1 - m) * log_q)  # E_ss [B,P]
    # E_sy_j = c + Y_j * d with c = -log_q, d = log_q - log_p (Y_j is 0/1), so Pearson's r of
    # (E_ss, E_sy_j) needs only [B,P] maps and one product with the rater masks:
    # cov = mean(uc * (cc + Y d)), var_e = mean((cc + Y d)^2) - mean(Y d)^2 with uc, cc centred.
    n = u.shape[-1]
    uc = u - u.mean(-1, keepdim=True)
    c = -log_q
    cc = c - c.mean(-1, keepdim=True)
    d = log_q - log_p
    y = ctx.y.to(u.dtype)  # [B,R,P]
    mom = torch.bmm(y, torch.stack([d, d * d, d * uc, d * cc], -1)) / n  # [B,R,4]
    m_yd, m_yd2, m_ydu, m_ydc = mom.unbind(-1)
    cov = (uc * cc).mean(-1, keepdim=True) + m_ydu
    var_e = ((cc * cc).mean(-1, keepdim=True) + 2 * m_ydc + m_yd2 - m_yd * m_yd).clamp_min(0)
    var_u = (uc * uc).mean(-1, keepdim=True)
    scale_e = ((c * c).mean(-1, keepdim=True) + m_yd2).clamp_min(1.0)
    const = (var_u <= 1e-12 * (u * u).mean(-1, keepdim=True).clamp_min(1.0)) | (var_e <= 1e-12 * scale_e)
    r = torch.where(const, torch.zeros_like(cov), cov / torch.sqrt(torch.where(const, 1, var_u * var_e)))
    return _valid_mean(r.to(ctx.dtype), ctx.valid)


def ncc(samples: Tensor, raters: Tensor, rater_valid: Tensor | None = None,
        threshold: float = 0.5, sample_weights: Tensor | None = None,
        maps: str = "soft") -> Tensor:
    """PHiSeg's NCC per case ``[B]`` (Baumgartner et al. 2019, ``variance_ncc_dist``): mean over
    valid raters j of NCC(E_ss, E_sy_j).

    With q_i the sample maps, eps = 1e-8 and the pixelwise binary cross-entropy
    xent(q, t) = -(t log(q + eps) + (1 - t) log(1 - q + eps)):
    E_ss = mean_i xent(q_i, m) with m = mean_i q_i (the uncertainty map), E_sy_j = mean_i
    xent(q_i, Y_j) (rater j's error map); NCC(a, b) = mean((a - mean a)(b - mean b)) /
    (std a * std b), population std (Pearson's r, PHiSeg's zero-normalised correlate).
    ``maps="soft"`` (default, as published: PHiSeg feeds the softmax sample maps): q_i = p_i.
    ``maps="binary"``: q_i = p_i > threshold (this toolkit's earlier NCC; differs by up to ~0.5).
    ``sample_weights``: every mean over i is the weighted mean sum_i w_i (.).
    Constant-map convention: if E_ss or E_sy_j is constant over the image (variance <= 1e-12 x
    max(1, its mean square), so float rounding counts as constant), NCC = 0 (PHiSeg would give NaN). Computed in float64 (float32 on MPS). Not affected by ``convention``.
    """
    return ncc_ctx(MetricContext.build(raters, samples=samples, rater_valid=rater_valid,
                                       threshold=threshold, sample_weights=sample_weights,
                                       ncc_maps=maps))
