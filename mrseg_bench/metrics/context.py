"""``MetricContext``: validated inputs plus the intermediate tensors metrics share.

The suite builds one context per batch, so binarised samples and the pairwise count matrices
(samples x raters, samples x samples, raters x raters) are computed once and reused by every
metric. Each cached tensor is computed on first use only.

Shapes: ``B`` cases, ``N`` samples, ``R`` raters, ``P = H*W`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

from .conventions import (
    GED_FORMS,
    HM_IOU_MATCHINGS,
    SOFT_THRESHOLDS,
    check_choice,
    check_thresholds,
    resolve_convention,
)
from .pairwise import (
    EPS,
    count_dtype,
    dice_from_counts,
    flatten_masks,
    intersections,
    iou_from_counts,
)
from .validation import validate_inputs, validate_weights

Tensor = torch.Tensor

# Dice_soft thresholds (QUBIQ): a mean map m is "above t" when m > t + THRESHOLD_ATOL, so a mean
# that equals t exactly (e.g. the mean of 0.9, 0.1, 0.1, 0.1 is 0.3) counts as not above t
# whatever the float rounding of the mean.
# (SOFT_THRESHOLDS, the default set, lives in conventions.py)
THRESHOLD_ATOL = 1e-6  # "standard" only; convention="dpersona" tests a strict "> t" (its code)
GED_ESTIMATORS: tuple[str, ...] = ("all_pairs", "distinct")
NCC_MAPS: tuple[str, ...] = ("soft", "binary")
NCC_EPS = 1e-8  # PHiSeg's cross-entropy log(p + eps)
BLOCK_ELEMENTS = 2**22  # binarised samples handled per block on CPU (16 MB of float32)


def check_option(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _require(name: str, t: Tensor | None) -> Tensor:
    if t is None:
        raise ValueError(f"this metric needs {name}, which was not given")
    return t


@dataclass(eq=False)
class MetricContext:
    """Inputs of one batch (already validated) and lazily cached shared tensors."""

    raters: Tensor  # [B,R,H,W] 0/1
    rater_valid: Tensor  # [B,R] bool
    samples: Tensor | None = None  # [B,N,H,W] probabilities
    personalized: Tensor | None = None  # [B,R,H,W] probabilities
    consensus: Tensor | None = None  # [B,H,W] probabilities
    convention: str = "standard"
    threshold: float = 0.5
    eps: float = EPS
    memo: dict = field(default_factory=dict, repr=False)  # results shared between metrics
    sample_weights: Tensor | None = None  # [B,N], rows sum to 1; None: equally likely samples
    ged_estimator: str = "all_pairs"  # GED / sample expectations with or without i = i' pairs
    ncc_maps: str = "soft"  # NCC from the soft sample maps (PHiSeg) or the binarised samples
    ged_form: str = "squared"  # GED^2 or its square root (conventions.py)
    hm_iou_matching: str = "replicate"  # HM-IoU: lcm replication or best-of-N matching
    soft_thresholds: tuple[float, ...] = SOFT_THRESHOLDS  # Dice_soft thresholds
    convention_name: str = "standard"  # the paper convention; ``convention`` is its overlap rule

    @classmethod
    def build(
        cls,
        raters: Tensor,
        samples: Tensor | None = None,
        rater_valid: Tensor | None = None,
        personalized: Tensor | None = None,
        consensus: Tensor | None = None,
        convention: str = "standard",
        threshold: float = 0.5,
        sample_weights: Tensor | None = None,
        ged_estimator: str = "all_pairs",
        ncc_maps: str = "soft",
        ged_form: str | None = None,
        hm_iou_matching: str | None = None,
        soft_thresholds: tuple[float, ...] | None = None,
    ) -> MetricContext:
        """Validate (``validate_inputs``, ``validate_weights``) and wrap the inputs.
        ``convention`` names a paper convention (``conventions.CONVENTION_SPECS``): its overlap
        rule becomes ``ctx.convention``; ``ged_form``, ``hm_iou_matching`` and
        ``soft_thresholds`` override the convention's choices when given."""
        conv = resolve_convention(convention)
        check_choice("ged_form", ged_form, GED_FORMS)
        check_choice("hm_iou matching", hm_iou_matching, HM_IOU_MATCHINGS)
        soft_thresholds = check_thresholds(soft_thresholds)
        check_option("ged_estimator", ged_estimator, GED_ESTIMATORS)
        check_option("ncc_maps", ncc_maps, NCC_MAPS)
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        raters, valid = validate_inputs(raters, samples, rater_valid, personalized, consensus)
        if sample_weights is not None:
            validate_weights(sample_weights, samples)
        return cls(raters, valid, samples, personalized, consensus, conv.overlap, float(threshold),
                   sample_weights=sample_weights, ged_estimator=ged_estimator, ncc_maps=ncc_maps,
                   ged_form=ged_form or conv.ged, hm_iou_matching=hm_iou_matching or conv.hm_iou,
                   soft_thresholds=soft_thresholds or conv.soft_dice, convention_name=conv.name)

    # ---- sizes -------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return int(self.raters.shape[0])

    @property
    def num_raters(self) -> int:
        return int(self.raters.shape[1])

    @property
    def num_samples(self) -> int:
        return int(_require("samples", self.samples).shape[1])

    @cached_property
    def w(self) -> Tensor:
        """Sample weights ``[B,N]`` in the count dtype (uniform 1/N when none were given)."""
        if self.sample_weights is None:
            b, n = self.batch_size, self.num_samples
            return torch.full((b, n), 1.0 / n, dtype=self.dtype, device=self.raters.device)
        return self.sample_weights.to(self.dtype)

    @property
    def weighted(self) -> bool:
        return self.sample_weights is not None

    @cached_property
    def dtype(self) -> torch.dtype:
        return count_dtype(self.raters[0, 0].numel(), self.raters.device)

    # ---- raters ------------------------------------------------------------------------
    @cached_property
    def y(self) -> Tensor:
        """Rater masks ``[B,R,P]`` as 0/1 floats."""
        return flatten_masks(self.raters, dtype=self.dtype)

    @cached_property
    def y_size(self) -> Tensor:
        return self.y.sum(-1)

    @cached_property
    def valid(self) -> Tensor:
        """``rater_valid`` as 0/1 floats ``[B,R]``."""
        return self.rater_valid.to(self.dtype)

    @cached_property
    def n_valid(self) -> Tensor:
        """Number of valid raters per case ``[B]`` (float)."""
        return self.valid.sum(-1)

    @cached_property
    def rater_count(self) -> Tensor:
        """Valid raters marking each pixel ``[B,P]``."""
        return torch.einsum("br,brp->bp", self.valid, self.y)

    @cached_property
    def rater_mean(self) -> Tensor:
        """Mean of the valid raters' masks ``[B,P]`` (NaN where a case has no valid rater)."""
        return self.rater_count / self.n_valid.unsqueeze(-1)

    # ---- samples -----------------------------------------------------------------------
    @cached_property
    def s(self) -> Tensor:
        """Binarised samples ``[B,N,P]``: ``p > threshold`` as 0/1 floats (materialised on
        demand for plugins; the built-in metrics use the blocked ``_sample_pass`` instead)."""
        return flatten_masks(_require("samples", self.samples), self.threshold, self.dtype)

    @cached_property
    def _sample_pass(self) -> dict[str, Tensor]:
        """One pass over the samples, blocked over cases so the binarised copy stays small
        (and in cache): sizes, per-pixel counts, soft sums and both intersection matrices."""
        x = _require("samples", self.samples)
        b, n = x.shape[:2]
        x = x.reshape(b, n, -1)
        p, dt, dev, y = x.shape[-1], self.dtype, x.device, self.y
        block = BLOCK_ELEMENTS if dev.type == "cpu" else 16 * BLOCK_ELEMENTS
        step = max(1, block // (n * p))
        out = {
            "s_size": torch.empty(b, n, dtype=dt, device=dev),
            "s_count": torch.empty(b, p, dtype=dt, device=dev),
            "soft_sum": torch.empty(b, p, dtype=torch.float32, device=dev),
            "inter_ss": torch.empty(b, n, n, dtype=dt, device=dev),
            "inter_sy": torch.empty(b, n, y.shape[1], dtype=dt, device=dev),
        }
        buf = torch.empty(min(step, b), n, p, dtype=dt, device=dev)
        for lo in range(0, b, step):  # blocks of cases, not single cases
            xb = x[lo:lo + step]
            sb = buf[: xb.shape[0]]
            hi = lo + xb.shape[0]
            torch.gt(xb, self.threshold, out=sb)
            out["s_size"][lo:hi] = sb.sum(-1)
            out["s_count"][lo:hi] = sb.sum(1)
            if self.sample_weights is None:
                out["soft_sum"][lo:hi] = xb.sum(1, dtype=torch.float32)
            else:  # weighted mean map sum_i w_i p_i (soft_mean divides by 1 below)
                wb = self.sample_weights[lo:hi].to(torch.float32)
                out["soft_sum"][lo:hi] = torch.bmm(wb.unsqueeze(1), xb.to(torch.float32)).squeeze(1)
            out["inter_ss"][lo:hi] = intersections(sb, sb)
            out["inter_sy"][lo:hi] = intersections(sb, y[lo:hi])
        return out

    @property
    def s_size(self) -> Tensor:
        """``|S_i|`` ``[B,N]``."""
        return self._sample_pass["s_size"]

    @property
    def sample_count(self) -> Tensor:
        """Binarised samples marking each pixel ``[B,P]``."""
        return self._sample_pass["s_count"]

    @property
    def inter_sy(self) -> Tensor:
        """``|S_i ∧ Y_j|`` ``[B,N,R]``."""
        return self._sample_pass["inter_sy"]

    @property
    def inter_ss(self) -> Tensor:
        """``|S_i ∧ S_i'|`` ``[B,N,N]``."""
        return self._sample_pass["inter_ss"]

    @cached_property
    def inter_yy(self) -> Tensor:
        return intersections(self.y, self.y)

    @cached_property
    def iou_sy(self) -> Tensor:
        """``IoU(S_i, Y_j)`` ``[B,N,R]`` under ``convention``."""
        return iou_from_counts(self.inter_sy, self.s_size, self.y_size, self.convention, self.eps)

    @cached_property
    def iou_ss(self) -> Tensor:
        return iou_from_counts(self.inter_ss, self.s_size, self.s_size, self.convention, self.eps)

    @cached_property
    def iou_yy(self) -> Tensor:
        return iou_from_counts(self.inter_yy, self.y_size, self.y_size, self.convention, self.eps)

    @cached_property
    def dice_ys(self) -> Tensor:
        """``M[b,j,i] = Dice(Y_j, S_i)`` ``[B,R,N]`` under ``convention``."""
        return dice_from_counts(
            self.inter_sy.transpose(1, 2),
            self.y_size.unsqueeze(-1),
            self.s_size.unsqueeze(-2),
            self.convention,
            self.eps,
        )

    @cached_property
    def soft_mean(self) -> Tensor:
        """Mean of the soft (not binarised) samples ``[B,P]`` (float32): sum_i p_i / N, or the
        weighted mean sum_i w_i p_i with ``sample_weights``."""
        if self.weighted:
            return self._sample_pass["soft_sum"]
        return self._sample_pass["soft_sum"] / self.num_samples

    @cached_property
    def ncc_maps_pass(self) -> dict[str, Tensor]:
        """Per-pixel weighted means over samples (blocked over cases) of the sample map q
        (soft p_i, or binarised p_i > threshold when ``ncc_maps="binary"``), of log(q + eps) and
        of log(1 - q + eps): keys ``m``, ``log_p``, ``log_q``, each ``[B,P]``. The logs are taken
        in float32 (vectorised), the means returned in float64 (float32 on MPS)."""
        x = _require("samples", self.samples)
        b, n = x.shape[:2]
        x = x.reshape(b, n, -1)
        p, dev = x.shape[-1], x.device
        dt = torch.float32 if dev.type == "mps" else torch.float64
        w = self.w.to(torch.float32)
        out = {k: torch.empty(b, p, dtype=dt, device=dev) for k in ("m", "log_p", "log_q")}
        step = max(1, BLOCK_ELEMENTS // (n * p))
        for lo in range(0, b, step):  # blocks of cases
            q = x[lo:lo + step].to(torch.float32)
            if self.ncc_maps == "binary":
                q = (q > self.threshold).to(torch.float32)
            wb = w[lo:lo + step].unsqueeze(1)  # [b,1,N]
            out["m"][lo:lo + step] = torch.bmm(wb, q).squeeze(1)
            out["log_p"][lo:lo + step] = torch.bmm(wb, torch.log(q + NCC_EPS)).squeeze(1)
            out["log_q"][lo:lo + step] = torch.bmm(wb, torch.log(1 - q + NCC_EPS)).squeeze(1)
        return out

    # ---- personalised / consensus -------------------------------------------------------
    @cached_property
    def p(self) -> Tensor:
        """Binarised personalised outputs ``[B,R,P]``."""
        return flatten_masks(_require("personalized", self.personalized), self.threshold, self.dtype)

    @cached_property
    def consensus_flat(self) -> Tensor:
        """Consensus probabilities ``[B,P]``."""
        c = _require("consensus", self.consensus)
        return c.reshape(c.shape[0], -1).to(self.dtype)
