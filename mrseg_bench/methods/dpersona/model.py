"""The D-Persona network: headless U-Net backbone, prior and posterior nets, Fcomb, R heads.

Submodules (state-dict prefixes): ``backbone`` (smp encoder + decoder, 16-channel features),
``prior`` (image -> Gaussian), ``posterior`` (image + all R masks -> Gaussian), ``fcomb``,
``heads``. Sampling is batched: ``rsample``/``sample`` with a sample shape, decoded in one go.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ...baselines.unet import DEFAULT_DECODER_CHANNELS, build_unet
from .fcomb import Fcomb
from .gaussian import GaussianEncoder
from .heads import ProjectionHeads, attend


class DPersonaNet(nn.Module):
    """``forward(images, n_samples, bank_size) -> (sample logits [B,N,H,W], personalised
    logits [B,R,H,W])``."""

    def __init__(self, in_channels: int, num_raters: int, latent_dim: int = 6,
                 encoder_name: str = "resnet34", encoder_weights: str | None = None,
                 decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
                 prior_filters: Sequence[int] = (16, 32, 64, 128, 256), prior_convs_per_block: int = 3,
                 fcomb_channels: int = 16, fcomb_layers: int = 3, head_channels: Sequence[int] = (32, 16),
                 head_padding: int = 1, head_dropout: float = 0.1, sigma: str = "softplus",
                 sigma_floor: float = 1e-3, head_init: str = "reference") -> None:
        super().__init__()
        if in_channels < 1 or num_raters < 1:
            raise ValueError(f"DPersonaNet: need in_channels >= 1 and num_raters >= 1, got {in_channels}, {num_raters}")
        self.in_channels = int(in_channels)
        self.num_raters = int(num_raters)
        self.latent_dim = int(latent_dim)
        self.backbone = build_unet(in_channels, encoder_name=encoder_name, encoder_weights=encoder_weights,
                                   headless=True, decoder_channels=decoder_channels)
        features = int(decoder_channels[-1])
        self.prior = GaussianEncoder(in_channels, latent_dim, prior_filters, prior_convs_per_block,
                                     sigma, sigma_floor)
        self.posterior = GaussianEncoder(in_channels + num_raters, latent_dim, prior_filters,
                                         prior_convs_per_block, sigma, sigma_floor)
        self.fcomb = Fcomb(features, latent_dim, fcomb_channels, fcomb_layers)
        self.heads = ProjectionHeads(num_raters, features, (*head_channels, latent_dim), head_padding, head_dropout,
                                     head_init)

    def stage1_modules(self) -> Iterator[nn.Module]:
        """Everything stage 1 trains (all but the heads)."""
        yield from (self.backbone, self.prior, self.posterior, self.fcomb)

    def regularised_parameters(self) -> list[nn.Parameter]:
        """Tensors of the 1e-5 L2 term: every weight and bias of the prior net (15 convs + the
        1x1 output conv), the posterior net (same) and Fcomb's hidden 1x1 convs (not its output
        conv): 70 tensors with the default sizes."""
        return [*self.prior.parameters(), *self.posterior.parameters(), *self.fcomb.hidden.parameters()]

    def sample_logits(self, part: torch.Tensor, dist: torch.distributions.Distribution, n: int,
                      reparameterise: bool = False) -> torch.Tensor:
        """Logits ``[B,n,H,W]`` of ``n`` latents drawn from ``dist`` (batch ``B``), decoded at once."""
        z = dist.rsample((n,))  # rsample: torch.normal (sample) checks std on the host
        if not reparameterise:
            z = z.detach()
        return self.fcomb.decode(part, z.transpose(0, 1))

    def personalized_logits(self, features: torch.Tensor, part: torch.Tensor,
                            bank: torch.Tensor) -> torch.Tensor:
        """Per-rater logits ``[B,R,H,W]``: head queries attend over ``bank [B,N,D]``."""
        return self.fcomb.decode(part, attend(self.heads(features), bank))

    def forward(self, images: torch.Tensor, n_samples: int = 1,
                bank_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        prior = self.prior.distribution(images)
        part = self.fcomb.feature_part(features)
        samples = self.sample_logits(part, prior, n_samples)
        bank = prior.rsample((bank_size,)).detach().transpose(0, 1)
        return samples, self.personalized_logits(features, part, bank)
