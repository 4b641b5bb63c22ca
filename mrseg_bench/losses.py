"""Losses shared by every method.

``generalised_dice_loss`` reproduces the D-Persona reference: sigmoid, each channel flattened over
the whole batch, class weights that cancel, so

    GDL = 1 - mean_c [ 2 * sum(p_c * t_c) / max(sum(p_c + t_c), eps) ]

where a single-channel input gets a background channel (1 - p, 1 - t) added first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generalised_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Reference generalised Dice loss on ``logits [B,C,H,W]`` vs binary/soft ``target [B,C,H,W]``.

    Returns a scalar. With C == 1 a background channel is added (as the reference does).
    """
    if logits.shape != target.shape:
        raise ValueError(f"generalised_dice_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    if logits.ndim < 2:
        raise ValueError(f"generalised_dice_loss: need [B,C,...], got {tuple(logits.shape)}")
    p = torch.sigmoid(logits.float())
    t = target.float()
    if p.shape[1] == 1:
        p = torch.cat([p, 1.0 - p], dim=1)
        t = torch.cat([t, 1.0 - t], dim=1)
    # channel-first, flatten everything else (the batch too)
    p = p.transpose(0, 1).reshape(p.shape[1], -1)
    t = t.transpose(0, 1).reshape(t.shape[1], -1)
    intersect = (p * t).sum(-1)
    denom = (p + t).sum(-1).clamp_min(eps)
    return 1.0 - (2.0 * intersect / denom).mean()


def masked_generalised_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                                 eps: float = 1e-6) -> torch.Tensor:
    """The reference GDL over channels ``[B,C,H,W]`` leaving out (b, c) pairs with
    ``valid[b,c] == False``; channels valid nowhere in the batch are left out of the mean.
    Equals ``generalised_dice_loss`` when everything is valid."""
    v = valid.float()[:, :, None, None]
    p = torch.sigmoid(logits.float())
    t = target.float()
    if p.shape[1] == 1:
        p, t, v = torch.cat([p, 1 - p], 1), torch.cat([t, 1 - t], 1), torch.cat([v, v], 1)
    inter = (p * t * v).sum(dim=(0, 2, 3))
    denom = ((p + t) * v).sum(dim=(0, 2, 3)).clamp_min(eps)
    present = (v.sum(dim=(0, 2, 3)) > 0).float()
    dice = 2 * inter / denom
    return 1 - (dice * present).sum() / present.sum().clamp_min(1)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits (numerically stable)."""
    if logits.shape != target.shape:
        raise ValueError(f"bce_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())
