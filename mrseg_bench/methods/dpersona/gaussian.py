"""Prior / posterior nets: a conv encoder giving an axis-aligned Gaussian over the latent space.

Encoder: blocks of ``convs_per_block`` x (conv3x3, padding 1, ReLU) with ``filters`` channels,
AvgPool2d(2, ceil_mode=True) before every block but the first, no normalisation. Then the global
spatial mean, a 1x1 conv to ``2 * latent_dim`` channels, split into (mu, log sigma):

    p(z | x) = Independent(Normal(mu, sigma), 1),  sigma = softplus(s) + floor (default) or exp(s)

``sigma="exp"`` is the reference's form (``mrseg_bench.latent``); the parameters are the same.

Layer indices inside ``convs`` match the reference's ``encoder.layers`` (pools included).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Independent

from ...latent import diagonal_gaussian


class GaussianEncoder(nn.Module):
    """``x [B,C,H,W] -> (mu [B,D], log_sigma [B,D])`` (float32), or the distribution."""

    def __init__(self, in_channels: int, latent_dim: int,
                 filters: Sequence[int] = (16, 32, 64, 128, 256), convs_per_block: int = 3,
                 sigma: str = "softplus", sigma_floor: float = 1e-3) -> None:
        super().__init__()
        self.sigma, self.sigma_floor = sigma, float(sigma_floor)
        self.in_channels = int(in_channels)
        self.latent_dim = int(latent_dim)
        layers: list[nn.Module] = []
        prev = self.in_channels
        for i, width in enumerate(filters):
            if i > 0:
                layers.append(nn.AvgPool2d(2, ceil_mode=True))
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(prev, width, 3, padding=1), nn.ReLU(inplace=True)]
                prev = width
        self.convs = nn.Sequential(*layers)
        self.to_params = nn.Conv2d(prev, 2 * self.latent_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_in, ReLU) weights; biases ~ N(0, 1e-3) truncated at 2 sigma, the
        output conv's bias ~ N(0, 1) (the Probabilistic U-Net initialisation)."""
        for m in self.convs:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.trunc_normal_(m.bias, std=1e-3, a=-2e-3, b=2e-3)
        nn.init.kaiming_normal_(self.to_params.weight, mode="fan_in", nonlinearity="relu")
        nn.init.normal_(self.to_params.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"GaussianEncoder: expected [B,{self.in_channels},H,W], got {tuple(x.shape)}")
        h = self.convs(x).mean(dim=(2, 3), keepdim=True)
        params = self.to_params(h).flatten(1).float()
        return params[:, : self.latent_dim], params[:, self.latent_dim :]

    def distribution(self, x: torch.Tensor) -> Independent:
        mu, raw = self(x)
        return diagonal_gaussian(mu, raw, self.sigma, self.sigma_floor)
