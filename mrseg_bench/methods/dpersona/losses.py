"""D-Persona losses.

Stage 1:  L = L_rec + kl_weight * KL(q || p) + beta * L_bound + l2_weight * sum_W ||W||_2
- L_rec: GDL(Fcomb(f, z), y_r), z ~ q (``recon="posterior"``) or p (``"prior"``), one rater r
  drawn per batch (``draw_rater``).
- KL: analytic KL(q(z|x,Y) || p(z|x)), mean over the batch.
- L_bound: K reparameterised prior samples with logits s_k;
  GDL([max_k s_k, min_k s_k], [union_r y_r, intersection_r y_r]) over the valid raters.
- L2: unsquared norms of ``DPersonaNet.regularised_parameters()``.
Stage 2:  GDL between the R personalised logits and the R masks (head r <-> rater r),
``mrseg_bench.losses.masked_generalised_dice_loss`` so that missing raters are left out.
GDL is ``mrseg_bench.losses.generalised_dice_loss`` (the reference form).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ...latent import kl_loss
from ...losses import generalised_dice_loss, masked_generalised_dice_loss
from .model import DPersonaNet


def draw_rater(rater_valid: torch.Tensor) -> torch.Tensor:
    """One rater index per sample ``[B]``, drawn uniformly among valid raters with ONE uniform
    number for the whole batch: when some raters are valid for every sample, all samples get the
    same rater (the reference's once-per-batch draw); otherwise each sample gets a valid one.
    Stays on the tensor's device (no host sync)."""
    valid = rater_valid.bool()
    common = valid.all(dim=0, keepdim=True)
    weights = torch.where(common.any(), common.expand_as(valid), valid).float()
    cdf = weights.cumsum(1) / weights.sum(1, keepdim=True)
    u = torch.rand((), device=valid.device)
    return (cdf <= u).sum(1).clamp_max(valid.shape[1] - 1)


def union_intersection(masks: torch.Tensor, rater_valid: torch.Tensor) -> torch.Tensor:
    """``[B,2,H,W]``: union and intersection of the valid raters' masks ``[B,R,H,W]``."""
    valid = rater_valid.bool()[:, :, None, None]
    union = torch.where(valid, masks, torch.zeros_like(masks)).amax(1)
    inter = torch.where(valid, masks, torch.ones_like(masks)).amin(1)
    return torch.stack([union, inter], dim=1)


def bound_loss(sample_logits: torch.Tensor, masks: torch.Tensor, rater_valid: torch.Tensor) -> torch.Tensor:
    """GDL of ``[max_k s_k, min_k s_k]`` (logits ``[B,K,H,W]``) vs ``[union, intersection]``."""
    bounds = torch.stack([sample_logits.amax(1), sample_logits.amin(1)], dim=1)
    return generalised_dice_loss(bounds, union_intersection(masks, rater_valid))


def l2_penalty(model: DPersonaNet) -> torch.Tensor:
    """Sum of unsquared L2 norms of ``model.regularised_parameters()``."""
    return torch.stack([p.norm(2) for p in model.regularised_parameters()]).sum()


def stage1_losses(model: DPersonaNet, images: torch.Tensor, masks: torch.Tensor, rater_valid: torch.Tensor,
                  *, recon: str = "posterior", beta: float = 0.5, kl_weight: float = 1.0,
                  l2_weight: float = 1e-5, bound_samples: int = 10,
                  free_bits: float = 0.0) -> dict[str, torch.Tensor]:
    """Stage-1 loss and its parts: ``loss, rec, kl, bound, l2``. ``masks`` float ``[B,R,H,W]``;
    ``free_bits`` > 0 floors the KL per latent dimension (``latent.kl_loss``)."""
    features = model.backbone(images)
    part = model.fcomb.feature_part(features)
    prior = model.prior.distribution(images)
    posterior = model.posterior.distribution(torch.cat([images, masks.to(images.dtype)], dim=1))
    rater = draw_rater(rater_valid)
    index = rater[:, None, None, None].expand(-1, 1, *masks.shape[2:])
    target = masks.gather(1, index)
    source = posterior if recon == "posterior" else prior
    rec = generalised_dice_loss(model.sample_logits(part, source, 1, reparameterise=True), target)
    kl = kl_loss(posterior, prior, free_bits)
    bound = bound_loss(model.sample_logits(part, prior, bound_samples, reparameterise=True), masks, rater_valid)
    l2 = l2_penalty(model)
    loss = rec + kl_weight * kl + beta * bound + l2_weight * l2
    return {"loss": loss, "rec": rec, "kl": kl, "bound": bound, "l2": l2}


def stage2_losses(model: DPersonaNet, images: torch.Tensor, masks: torch.Tensor, rater_valid: torch.Tensor,
                  *, bank_size: int = 100, frozen_no_grad: bool = True) -> dict[str, torch.Tensor]:
    """Stage-2 loss: GDL of the R heads' outputs vs the R masks. The bank of ``bank_size`` prior
    samples never carries gradient; with ``frozen_no_grad`` the backbone, prior and Fcomb
    feature part run under ``no_grad`` (the corrected form)."""
    with torch.no_grad() if frozen_no_grad else nullcontext():
        features = model.backbone(images)
        part = model.fcomb.feature_part(features)
        bank = model.prior.distribution(images).rsample((bank_size,)).detach().transpose(0, 1)
    logits = model.personalized_logits(features, part, bank)
    loss = masked_generalised_dice_loss(logits, masks, rater_valid)
    return {"loss": loss, "personal": loss.detach()}
