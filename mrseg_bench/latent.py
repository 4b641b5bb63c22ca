"""Gaussian latents that train stably, and the literature's options against posterior collapse.

Shared by every method with a Gaussian latent (ProbUNet, D-Persona, ...).

- Sigma parametrisation (``sigma=``):
  - ``"softplus"`` (default): sigma = softplus(s) + floor. Bounded below by ``floor`` and growing
    linearly (not exponentially) in s, so one large step cannot overflow sigma or send log sigma
    to -inf. (Softplus-with-floor scales are the usual fix for the NaN reports of the public
    Probabilistic U-Net ports.)
  - ``"exp"``: sigma = exp(s), the reference code's form, unbounded (kept for faithful presets).
- KL weight warm-up (``kl_warmup_epochs``): the KL weight grows linearly from 1/W to 1 over the
  first W epochs of a stage (Bowman et al., "Generating Sentences from a Continuous Space",
  CoNLL 2016). 0 = off.
- Free bits (``free_bits``, nats per latent dimension): KL = sum_d max(lambda, mean_batch KL_d)
  (Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS
  2016), so the optimiser gains nothing by pushing a dimension's KL below lambda. 0 = the plain
  analytic KL, sum over dimensions and mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

SIGMA_PARAMETRISATIONS = ("softplus", "exp")


def check_latent_options(where: str, sigma: str, sigma_floor: float, kl_warmup_epochs: int,
                         free_bits: float) -> None:
    """ValueError naming ``where`` and the option when one is out of range."""
    if sigma not in SIGMA_PARAMETRISATIONS:
        raise ValueError(f"{where}: sigma must be one of {', '.join(SIGMA_PARAMETRISATIONS)}, got {sigma!r}")
    if not sigma_floor >= 0:
        raise ValueError(f"{where}: sigma_floor must be >= 0, got {sigma_floor!r}")
    if not isinstance(kl_warmup_epochs, int) or kl_warmup_epochs < 0:
        raise ValueError(f"{where}: kl_warmup_epochs must be an integer >= 0, got {kl_warmup_epochs!r}")
    if not free_bits >= 0:
        raise ValueError(f"{where}: free_bits must be >= 0, got {free_bits!r}")


def sigma_from(raw: torch.Tensor, sigma: str = "softplus", floor: float = 1e-3) -> torch.Tensor:
    """Standard deviation from the network's raw output: softplus(raw) + floor, or exp(raw)."""
    if sigma == "softplus":
        return F.softplus(raw) + floor
    if sigma == "exp":
        return torch.exp(raw)
    raise ValueError(f"sigma must be one of {', '.join(SIGMA_PARAMETRISATIONS)}, got {sigma!r}")


def diagonal_gaussian(mu: torch.Tensor, raw: torch.Tensor, sigma: str = "softplus",
                      floor: float = 1e-3) -> Independent:
    """``Independent(Normal(mu, sigma_from(raw)), 1)`` over the last dimension, without argument
    validation (it syncs with the host; a NaN must surface as a non-finite loss instead)."""
    return Independent(Normal(mu, sigma_from(raw, sigma, floor), validate_args=False), 1, validate_args=False)


def kl_loss(q: Independent, p: Independent, free_bits: float = 0.0) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians as a scalar: sum over latent dimensions, mean over the
    batch; with ``free_bits`` = lambda > 0, sum_d max(lambda, mean_batch KL_d)."""
    per_dim = kl_divergence(q.base_dist, p.base_dist)  # [B, D]
    if free_bits > 0:
        return per_dim.mean(0).clamp(min=free_bits).sum()
    return per_dim.sum(-1).mean()


def kl_warmup_weight(epoch: int, warmup_epochs: int) -> float:
    """min(1, (epoch + 1) / W) for epoch 0, 1, ... of a stage; 1 when W = 0."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / warmup_epochs)
