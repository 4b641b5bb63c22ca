"""The Probabilistic U-Net network (Kohl et al., NeurIPS 2018): backbone + prior + posterior + Fcomb."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Independent

from .modules import Fcomb, GaussianConvEncoder, l2_norm_sum


class ProbUNetModel(nn.Module):
    """``unet``: image -> features ``[B,F,H,W]``; ``prior``: p(z|x) from the image;
    ``posterior``: q(z|x,y) from the image concatenated with ONE mask; ``fcomb``: (features, z)
    -> logit. ``forward(images)`` returns the logits of one prior sample ``[B,1,H,W]``.
    """

    def __init__(self, backbone: nn.Module, in_channels: int, latent_dim: int = 6,
                 prior_filters: Sequence[int] = (32, 64, 128, 192), convs_per_block: int = 3,
                 fcomb_hidden_layers: int = 3, sigma: str = "softplus", sigma_floor: float = 1e-3) -> None:
        super().__init__()
        feat = int(backbone.out_channels)
        self.latent_dim = latent_dim
        self.unet = backbone
        self.prior = GaussianConvEncoder(in_channels, latent_dim, prior_filters, convs_per_block,
                                         sigma, sigma_floor)
        self.posterior = GaussianConvEncoder(in_channels + 1, latent_dim, prior_filters, convs_per_block,
                                             sigma, sigma_floor)
        self.fcomb = Fcomb(feat, latent_dim, feat, fcomb_hidden_layers, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.prior(images).sample()
        return self.fcomb(self.unet(images), z)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, Independent]:
        """Features and the prior distribution, computed once per image."""
        return self.unet(images), self.prior(images)

    def posterior_of(self, images: torch.Tensor, mask: torch.Tensor) -> Independent:
        """q(z | x, y) for ``mask [B,1,H,W]``."""
        return self.posterior(torch.cat([images, mask.to(images.dtype)], dim=1))

    def sample_logits(self, images: torch.Tensor, n_samples: int, at_mean: bool = False) -> torch.Tensor:
        """``n_samples`` prior samples per image in one batched pass: ``[B,N,H,W]`` logits
        (``at_mean``: every sample at the prior's mean, so the N samples are identical)."""
        features, prior = self.encode(images)
        if at_mean:
            z = prior.mean.unsqueeze(1).expand(-1, n_samples, -1)  # [B,N,L]
        else:
            z = prior.sample((n_samples,)).transpose(0, 1)  # [B,N,L]
        return self.fcomb(features, z)[:, :, 0]

    def l2_regulariser(self) -> torch.Tensor:
        """Sum of the (unsquared) L2 norms of the prior, posterior and Fcomb parameters."""
        return l2_norm_sum(self.prior, self.posterior, self.fcomb)
