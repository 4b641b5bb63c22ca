"""Pairwise overlap between two stacks of binary masks, batched: IoU and Dice matrices.

Counts come from one batched matrix product (``|a ∧ b| = a · b`` for 0/1 vectors), exact in
float32 while a mask has fewer than 2**24 pixels (float64 is used beyond that).

Conventions (named, never hidden; see docs/metrics.md):

- ``"standard"`` (default): IoU = |a∧b| / |a∨b| and Dice = 2|a∧b| / (|a|+|b|); two empty masks
  have IoU = Dice = 1 (PHiSeg / Kohl).
- ``"dpersona"``: the D-Persona code's smoothing. IoU = |a∧b| / (|a∨b| + eps), so two empty
  masks have IoU 0 (distance 1, also a mask with itself); Dice = (2|a∧b| + eps) /
  (|a|+|b| + eps), so two empty masks have Dice 1 and an empty mask against a non-empty one has
  Dice eps / |b| (about 0). Non-empty pairs differ from "standard" by at most eps / |a∨b|.
"""

from __future__ import annotations

from typing import Literal

import torch

Tensor = torch.Tensor
Convention = Literal["standard", "dpersona"]
CONVENTIONS: tuple[str, ...] = ("standard", "dpersona")
EPS = 1e-8  # the D-Persona code's smoothing constant
_EXACT_F32 = 2**24  # float32 counts are exact integers below this


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    return convention


def count_dtype(num_pixels: int, device: torch.device) -> torch.dtype:
    """float32 while counts stay exact, float64 beyond 2**24 pixels (MPS has no float64)."""
    if num_pixels < _EXACT_F32 or device.type == "mps":
        return torch.float32
    return torch.float64


def flatten_masks(x: Tensor, threshold: float | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``[B,K,*spatial]`` -> ``[B,K,P]`` 0/1 float; ``threshold`` binarises probabilities (p > t)."""
    if x.ndim < 3:
        raise ValueError(f"masks must be [B,K,*spatial] (>= 3 dims), got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    dtype = dtype or count_dtype(flat.shape[-1], x.device)
    if threshold is not None:
        out = torch.empty(flat.shape, dtype=dtype, device=flat.device)
        return torch.gt(flat, threshold, out=out)  # one pass, no bool temporary
    return flat.to(dtype)


def intersections(a: Tensor, b: Tensor) -> Tensor:
    """``|a_i ∧ b_j|`` for 0/1 float ``a [B,N,P]``, ``b [B,M,P]`` -> ``[B,N,M]`` (one bmm)."""
    return torch.bmm(a, b.transpose(1, 2))


def iou_from_counts(inter: Tensor, size_a: Tensor, size_b: Tensor, convention: str = "standard",
                    eps: float = EPS) -> Tensor:
    """IoU from ``inter [...,N,M]``, ``size_a [...,N]``, ``size_b [...,M]`` (module docstring)."""
    union = size_a.unsqueeze(-1) + size_b.unsqueeze(-2) - inter
    if check_convention(convention) == "dpersona":
        return inter / (union + eps)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def dice_from_counts(inter: Tensor, size_a: Tensor, size_b: Tensor, convention: str = "standard",
                     eps: float = EPS) -> Tensor:
    """Dice from counts, broadcasting ``size_a [...,N,1]``-style against ``size_b``.

    ``inter``, ``size_a`` and ``size_b`` must broadcast elementwise (callers unsqueeze).
    """
    denom = size_a + size_b
    if check_convention(convention) == "dpersona":
        return (2 * inter + eps) / (denom + eps)
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(inter))


def iou_matrix(a: Tensor, b: Tensor, convention: str = "standard", eps: float = EPS) -> Tensor:
    """``M[b,i,j] = IoU(a_i, b_j)`` for binary masks ``a [B,N,*spatial]``, ``b [B,M,*spatial]``.

    Masks are bool or 0/1 numbers; empty-mask handling follows ``convention``.
    """
    if a.ndim < 3 or b.ndim != a.ndim or a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"iou_matrix needs a [B,N,*spatial] and b [B,M,*spatial] with the same B and spatial "
            f"shape, got a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    fa, fb = flatten_masks(a), flatten_masks(b)
    return iou_from_counts(intersections(fa, fb), fa.sum(-1), fb.sum(-1), convention, eps)


def dice_matrix(raters: Tensor, samples: Tensor, eps: float = EPS, convention: str = "standard",
                threshold: float = 0.5) -> Tensor:
    """``M[b,j,i] = Dice(Y_j, S_i)`` for raters ``[B,R,H,W]`` (0/1) and samples ``[B,N,H,W]``.

    Samples are probabilities binarised as ``S_i = p_i > threshold`` (0/1 masks pass unchanged).
    ``convention="dpersona"``: (2|Y∧S| + eps) / (|Y|+|S| + eps), the D-Persona code;
    ``"standard"``: 2|Y∧S| / (|Y|+|S|) with both empty -> 1.
    """
    if raters.ndim < 3 or samples.ndim != raters.ndim or raters.shape[0] != samples.shape[0] \
            or raters.shape[2:] != samples.shape[2:]:
        raise ValueError(
            f"dice_matrix needs raters [B,R,H,W] and samples [B,N,H,W] with the same B, H, W, "
            f"got raters {tuple(raters.shape)} and samples {tuple(samples.shape)}"
        )
    y = flatten_masks(raters)
    s = flatten_masks(samples, threshold=threshold, dtype=y.dtype)
    inter = intersections(y, s)
    return dice_from_counts(inter, y.sum(-1).unsqueeze(-1), s.sum(-1).unsqueeze(-2), convention, eps)
