"""One input check shared by every metric: shapes, dtypes, value ranges, devices.

Every failure is a ``ValueError`` that names the argument and the shapes seen.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_probabilities(name: str, t: Tensor, ndim: int, layout: str) -> None:
    """``t`` must be a floating tensor of rank ``ndim`` with values in [0, 1] and no NaN."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must be {layout} ({ndim} dims), got shape {_shape(t)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must hold probabilities (a float tensor), got dtype {t.dtype}")
    if t.numel() == 0:
        return
    lo, hi = torch.aminmax(t)  # NaN propagates into both
    lo_f, hi_f = float(lo), float(hi)
    if lo_f != lo_f or hi_f != hi_f:
        raise ValueError(f"{name} {_shape(t)} contains NaN")
    if lo_f < 0.0 or hi_f > 1.0:
        raise ValueError(
            f"{name} {_shape(t)} must hold probabilities in [0, 1] (after sigmoid); "
            f"found values in [{lo_f:g}, {hi_f:g}]"
        )


WEIGHT_SUM_ATOL = 1e-4  # float32 gates (softmax outputs) sum to 1 within this


def validate_weights(sample_weights: Tensor, samples: Tensor | None) -> Tensor:
    """Check ``sample_weights [B,N]`` against ``samples [B,N,H,W]``: a float tensor on the
    samples' device, finite, non-negative, each row summing to 1 (within 1e-4). Returns it."""
    if samples is None:
        raise ValueError("sample_weights given without samples (weights belong to samples [B,N,H,W])")
    if not isinstance(sample_weights, Tensor):
        raise ValueError(f"sample_weights must be a torch.Tensor [B,N], got {type(sample_weights).__name__}")
    if not sample_weights.is_floating_point():
        raise ValueError(f"sample_weights must be a float tensor [B,N], got dtype {sample_weights.dtype}")
    if tuple(sample_weights.shape) != tuple(samples.shape[:2]):
        raise ValueError(f"sample_weights {_shape(sample_weights)} must be [B,N] = "
                         f"{tuple(samples.shape[:2])} for samples {_shape(samples)}")
    if sample_weights.device != samples.device:
        raise ValueError(f"sample_weights is on {sample_weights.device} but samples are on {samples.device}")
    if not bool(torch.isfinite(sample_weights).all()):
        raise ValueError(f"sample_weights {_shape(sample_weights)} contains NaN or inf")
    if bool((sample_weights < 0).any()):
        raise ValueError(f"sample_weights {_shape(sample_weights)} must be non-negative; "
                         f"min {float(sample_weights.min()):g}")
    sums = sample_weights.double().sum(-1)
    worst = float((sums - 1).abs().max())
    if worst > WEIGHT_SUM_ATOL:
        raise ValueError(f"sample_weights {_shape(sample_weights)}: each row must sum to 1; "
                         f"row sums {sums[:5].tolist()} (off by up to {worst:.3g})")
    return sample_weights


def validate_inputs(
    raters: Tensor,
    samples: Tensor | None = None,
    rater_valid: Tensor | None = None,
    personalized: Tensor | None = None,
    consensus: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Check every given input against ``raters [B,R,H,W]``; return ``(raters, rater_valid)``.

    - ``raters`` [B,R,H,W], B >= 1, R >= 1, values in {0,1} (bool, integer or float dtype);
    - ``samples`` [B,N,H,W] with N >= 1, ``personalized`` [B,R,H,W], ``consensus`` [B,H,W]:
      float probabilities in [0,1], no NaN;
    - ``rater_valid`` [B,R] bool (or integer / float holding 0 and 1); ``None`` means all valid;
    - all tensors on one device.

    Returns the raters unchanged and ``rater_valid`` as a bool tensor on the raters' device.
    """
    if not isinstance(raters, Tensor):
        raise ValueError(f"raters must be a torch.Tensor [B,R,H,W], got {type(raters).__name__}")
    if raters.ndim != 4:
        raise ValueError(f"raters must be [B,R,H,W] (4 dims), got shape {_shape(raters)}")
    b, r, h, w = raters.shape
    if b < 1 or r < 1 or h < 1 or w < 1:
        raise ValueError(f"raters [B,R,H,W] must have B, R, H, W >= 1, got shape {_shape(raters)}")
    if raters.is_complex():
        raise ValueError(f"raters must be binary masks, got dtype {raters.dtype}")
    if raters.dtype != torch.bool and raters.numel():
        lo, hi = torch.aminmax(raters)  # one pass; fractions need a second (float only)
        bad_range = not (0 <= float(lo) and float(hi) <= 1)  # NaN fails too
        if bad_range or (raters.is_floating_point() and bool(((raters > 0) & (raters < 1)).any())):
            bad = (raters != 0) & (raters != 1)
            vals = torch.unique(raters[bad])[:5].tolist()
            raise ValueError(
                f"raters {_shape(raters)} must be binary (0/1) masks; found values {vals}"
            )
    device = raters.device

    def same_device(name: str, t: Tensor) -> None:
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but raters are on {device}")

    if samples is not None:
        _check_probabilities("samples", samples, 4, "[B,N,H,W]")
        same_device("samples", samples)
        sb, n, sh, sw = samples.shape
        if n < 1:
            raise ValueError(f"samples [B,N,H,W] needs N >= 1 sample, got shape {_shape(samples)}")
        if (sb, sh, sw) != (b, h, w):
            raise ValueError(
                f"samples {_shape(samples)} and raters {_shape(raters)} disagree in B, H or W "
                "(expected samples [B,N,H,W] with raters [B,R,H,W])"
            )
    if personalized is not None:
        _check_probabilities("personalized", personalized, 4, "[B,R,H,W]")
        same_device("personalized", personalized)
        if personalized.shape != raters.shape:
            raise ValueError(
                f"personalized {_shape(personalized)} must match raters {_shape(raters)} "
                "(one output per rater, [B,R,H,W])"
            )
    if consensus is not None:
        _check_probabilities("consensus", consensus, 3, "[B,H,W]")
        same_device("consensus", consensus)
        if tuple(consensus.shape) != (b, h, w):
            raise ValueError(
                f"consensus {_shape(consensus)} must be [B,H,W] = {(b, h, w)} for raters "
                f"{_shape(raters)}"
            )
    if rater_valid is None:
        valid = torch.ones(b, r, dtype=torch.bool, device=device)
    else:
        if not isinstance(rater_valid, Tensor):
            raise ValueError(f"rater_valid must be a bool tensor [B,R], got {type(rater_valid).__name__}")
        same_device("rater_valid", rater_valid)
        if tuple(rater_valid.shape) != (b, r):
            raise ValueError(
                f"rater_valid {_shape(rater_valid)} must be [B,R] = {(b, r)} for raters "
                f"{_shape(raters)}"
            )
        if rater_valid.dtype == torch.bool:
            valid = rater_valid
        else:
            if bool(((rater_valid != 0) & (rater_valid != 1)).any()):
                raise ValueError(f"rater_valid {_shape(rater_valid)} must be bool (or 0/1)")
            valid = rater_valid != 0
    return raters, valid
