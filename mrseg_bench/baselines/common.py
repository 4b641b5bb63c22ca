"""Helpers shared by the baselines: rater drawing, rater means, masked and selectable losses.

Everything is vectorised over the batch and the raters (no Python loop over either).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..losses import bce_loss, generalised_dice_loss

ReconLoss = Literal["gdl", "bce"]


def check_batch(masks: torch.Tensor, rater_valid: torch.Tensor, where: str) -> None:
    """ValueError naming ``where`` unless masks is [B,R,H,W], rater_valid bool [B,R], and every
    image has at least one valid rater."""
    if masks.ndim != 4:
        raise ValueError(f"{where}: masks must be [B,R,H,W], got {tuple(masks.shape)}")
    if rater_valid.shape != masks.shape[:2] or rater_valid.dtype != torch.bool:
        raise ValueError(f"{where}: rater_valid must be bool {tuple(masks.shape[:2])}, "
                         f"got {rater_valid.dtype} {tuple(rater_valid.shape)}")
    if not bool(rater_valid.any(dim=1).all()):
        bad = (~rater_valid.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"{where}: image(s) {bad} of the batch have no valid rater")


def draw_valid_rater(masks: torch.Tensor, rater_valid: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One rater per image, uniform over that image's valid raters.

    Returns ``(mask [B,1,H,W] float, index [B] long)``; one ``multinomial`` + ``gather``.
    """
    check_batch(masks, rater_valid, "draw_valid_rater")
    idx = torch.multinomial(rater_valid.float(), 1, generator=generator)  # [B,1]
    h, w = masks.shape[-2:]
    picked = masks.gather(1, idx[:, :, None, None].expand(-1, 1, h, w))
    return picked.float(), idx[:, 0]


def valid_rater_mean(masks: torch.Tensor, rater_valid: torch.Tensor) -> torch.Tensor:
    """Mean of the valid raters' masks per pixel: ``[B,R,H,W] -> [B,H,W]`` float in [0,1]."""
    check_batch(masks, rater_valid, "valid_rater_mean")
    w = rater_valid.to(torch.float32)[:, :, None, None]
    return (masks.float() * w).sum(1) / w.sum(1)


def recon_loss(kind: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``"gdl"``: ``generalised_dice_loss``; ``"bce"``: mean binary cross-entropy."""
    if kind == "gdl":
        return generalised_dice_loss(logits, target)
    if kind == "bce":
        return bce_loss(logits, target)
    raise ValueError(f"loss must be 'gdl' or 'bce', got {kind!r}")


def per_rater_generalised_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                                 eps: float = 1e-6) -> torch.Tensor:
    """Generalised Dice loss per rater channel, invalid (image, rater) pairs left out.

    For channel r, over the images b with ``valid[b, r]`` and all pixels, with foreground
    (p, t) and background (1-p, 1-t)::

        L_r = 1 - 1/2 * sum_{c in fg,bg} 2 * sum(p_c t_c) / max(sum(p_c + t_c), eps)

    and the loss is the mean of L_r over the raters valid in at least one image. With every pair
    valid, L_r equals ``generalised_dice_loss(logits[:, r:r+1], target[:, r:r+1])``.
    ``logits``/``target`` ``[B,R,H,W]``, ``valid`` bool ``[B,R]``.
    """
    if logits.shape != target.shape or logits.ndim != 4 or valid.shape != logits.shape[:2]:
        raise ValueError(f"per_rater_generalised_dice_loss: logits {tuple(logits.shape)}, target "
                         f"{tuple(target.shape)}, valid {tuple(valid.shape)} do not match [B,R,H,W]/[B,R]")
    p = torch.sigmoid(logits.float())
    t = target.float()
    w = valid.to(p.dtype)[:, :, None, None]
    p = torch.stack([p, 1.0 - p]) * w  # [2,B,R,H,W]; invalid pairs contribute nothing
    t = torch.stack([t, 1.0 - t]) * w
    inter = (p * t).sum(dim=(1, 3, 4))  # [2,R]
    denom = (p + t).sum(dim=(1, 3, 4)).clamp_min(eps)
    per_rater = 1.0 - (2.0 * inter / denom).mean(0)  # [R]
    used = valid.any(0)
    if not bool(used.any()):
        raise ValueError("per_rater_generalised_dice_loss: no valid (image, rater) pair")
    return per_rater[used].mean()
