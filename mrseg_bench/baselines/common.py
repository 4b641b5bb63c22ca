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
                                 eps: float = 1e-6, from_logits: bool = True) -> torch.Tensor:
    """Generalised Dice loss per rater channel, invalid (image, rater) pairs left out.

    For channel r, over the images b with ``valid[b, r]`` and all pixels, with foreground
    (p, t) and background (1-p, 1-t)::

        L_r = 1 - 1/2 * sum_{c in fg,bg} 2 * sum(p_c t_c) / max(sum(p_c + t_c), eps)

    and the loss is the mean of L_r over the raters valid in at least one image. With every pair
    valid, L_r equals ``generalised_dice_loss(logits[:, r:r+1], target[:, r:r+1])``.
    ``from_logits=False``: ``logits`` already holds probabilities p (no sigmoid).
    ``logits``/``target`` ``[B,R,H,W]``, ``valid`` bool ``[B,R]``.
    """
    if logits.shape != target.shape or logits.ndim != 4 or valid.shape != logits.shape[:2]:
        raise ValueError(f"per_rater_generalised_dice_loss: logits {tuple(logits.shape)}, target "
                         f"{tuple(target.shape)}, valid {tuple(valid.shape)} do not match [B,R,H,W]/[B,R]")
    p = torch.sigmoid(logits.float()) if from_logits else logits.float()
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


def remember_io(model: torch.nn.Module, in_channels: int, num_raters: int) -> torch.nn.Module:
    """Record on ``model`` the image channels and rater count it was built for (``check_io``)."""
    model.expected_in_channels = int(in_channels)
    model.expected_num_raters = int(num_raters)
    return model


def check_io(where: str, model: torch.nn.Module, images: torch.Tensor,
             masks: torch.Tensor | None = None) -> None:
    """ValueError naming ``where`` unless ``images`` is ``[B,C,H,W]`` with the channels the model
    was built for and ``masks`` (if given) has its rater count (recorded by ``remember_io``;
    a model without the record is not checked)."""
    net = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    channels = getattr(net, "expected_in_channels", None)
    raters = getattr(net, "expected_num_raters", None)
    if images.ndim != 4:
        raise ValueError(f"{where}: images must be [B,C,H,W], got {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"{where}: images have {images.shape[1]} channel(s), the model was built for {channels}")
    if masks is not None and raters is not None and (masks.ndim != 4 or masks.shape[1] != raters):
        raise ValueError(f"{where}: masks {tuple(masks.shape)} do not have the {raters} raters the model was built for")


RaterTargets = Literal["all", "one"]


def select_raters(mode: str, masks: torch.Tensor, rater_valid: torch.Tensor,
                  generator: torch.Generator | None = None,
                  where: str = "select_raters") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (image, rater) pairs a rater-conditioned method reconstructs in one step.

    ``"all"``: every rater, ``index [B,R] = 0..R-1``, ``valid = rater_valid``;
    ``"one"``: one valid rater drawn uniformly per image (``draw_valid_rater``), ``index [B,1]``,
    ``valid`` all True. Returns ``(index [B,K] long, target [B,K,H,W] float, valid [B,K] bool)``:
    invalid raters never contribute when the loss masks with ``valid``.
    """
    check_batch(masks, rater_valid, "select_raters")
    b, r = rater_valid.shape
    if mode == "all":
        index = torch.arange(r, device=masks.device).expand(b, r)
        return index, masks.float(), rater_valid
    if mode == "one":
        target, idx = draw_valid_rater(masks, rater_valid, generator)
        return idx[:, None], target, torch.ones(b, 1, dtype=torch.bool, device=masks.device)
    raise ValueError(f"{where}: recon_raters must be 'all' or 'one', got {mode!r}")
