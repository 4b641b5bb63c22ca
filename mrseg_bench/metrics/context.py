"""``MetricContext``: validated inputs plus the intermediate tensors metrics share.

The suite builds one context per batch, so binarised samples and the pairwise count matrices
(samples x raters, samples x samples, raters x raters) are computed once and reused by every
metric. Each cached tensor is computed on first use only.

Shapes: ``B`` cases, ``N`` samples, ``R`` raters, ``P = H*W`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .pairwise import (
    EPS,
    check_convention,
    count_dtype,
    dice_from_counts,
    flatten_masks,
    intersections,
    iou_from_counts,
)
from .validation import validate_inputs

Tensor = torch.Tensor

# Dice_soft thresholds (QUBIQ): a mean map m is "above t" when m > t + THRESHOLD_ATOL, so a mean
# that equals t exactly (e.g. the mean of 0.9, 0.1, 0.1, 0.1 is 0.3) counts as not above t
# whatever the float rounding of the mean.
SOFT_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
THRESHOLD_ATOL = 1e-6


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
    ) -> MetricContext:
        """Validate (``validate_inputs``) and wrap the inputs."""
        check_convention(convention)
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        raters, valid = validate_inputs(raters, samples, rater_valid, personalized, consensus)
        return cls(raters, valid, samples, personalized, consensus, convention, float(threshold))

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
        """Binarised samples ``[B,N,P]``: ``p > threshold`` as 0/1 floats."""
        return flatten_masks(_require("samples", self.samples), self.threshold, self.dtype)

    @cached_property
    def s_size(self) -> Tensor:
        return self.s.sum(-1)

    @cached_property
    def inter_sy(self) -> Tensor:
        """``|S_i ∧ Y_j|`` ``[B,N,R]``."""
        return intersections(self.s, self.y)

    @cached_property
    def inter_ss(self) -> Tensor:
        return intersections(self.s, self.s)

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
        """Mean of the soft (not binarised) samples ``[B,P]``."""
        s = _require("samples", self.samples)
        return s.reshape(s.shape[0], s.shape[1], -1).mean(1, dtype=torch.float32).to(self.dtype)

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
