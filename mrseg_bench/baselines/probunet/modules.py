"""Building blocks of the Probabilistic U-Net, reusable by other latent-variable methods.

- ``GaussianConvEncoder``: conv encoder -> global mean -> 1x1 conv -> (mu, log sigma) ->
  ``Independent(Normal(mu, sigma), 1)`` (axis-aligned Gaussian; sigma = softplus(s) + floor by
  default, exp(s) as in the reference with ``sigma="exp"``: ``mrseg_bench.latent``). The prior net sees the
  image, the posterior net the image concatenated with mask channel(s).
- ``Fcomb``: 1x1 convs on ``[features, z tiled over space]`` -> one logit map. Its first layer is
  applied as ``W_f * features + W_z z`` (the same weights as one conv on the concatenation), so N
  latent samples are decoded without materialising N copies of the concatenated input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent

from ...latent import diagonal_gaussian


class GaussianConvEncoder(nn.Module):
    """Axis-aligned Gaussian over the latent from an image (+ masks).

    Blocks of ``convs_per_block`` x (conv3x3 + ReLU) with ``filters`` channels, AvgPool2d(2,
    ceil_mode=True) before every block but the first, no normalisation; spatial mean; 1x1 conv to
    ``2 * latent_dim`` channels = (mu, s), sigma = ``latent.sigma_from(s, sigma, sigma_floor)``.
    """

    def __init__(self, in_channels: int, latent_dim: int, filters: Sequence[int] = (32, 64, 128, 192),
                 convs_per_block: int = 3, sigma: str = "softplus", sigma_floor: float = 1e-3) -> None:
        super().__init__()
        self.sigma, self.sigma_floor = sigma, float(sigma_floor)
        filters = tuple(int(f) for f in filters)
        if in_channels < 1 or latent_dim < 1 or not filters or min(filters) < 1:
            raise ValueError(f"GaussianConvEncoder: bad in_channels={in_channels}, "
                             f"latent_dim={latent_dim}, filters={filters}")
        self.latent_dim = latent_dim
        layers: list[nn.Module] = []
        prev = in_channels
        for i, f in enumerate(filters):
            if i > 0:
                layers.append(nn.AvgPool2d(2, stride=2, ceil_mode=True))
            for j in range(convs_per_block):
                layers += [nn.Conv2d(prev if j == 0 else f, f, 3, padding=1), nn.ReLU(inplace=True)]
            prev = f
        self.encoder = nn.Sequential(*layers)
        self.conv_layer = nn.Conv2d(prev, 2 * latent_dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Independent:
        h = self.encoder(x).mean(dim=(2, 3), keepdim=True)
        mu_log_sigma = self.conv_layer(h)[:, :, 0, 0].float()
        mu, raw = mu_log_sigma.split(self.latent_dim, dim=1)
        # no argument validation: a diverged net (NaN/inf mu or sigma) must reach the loss, where
        # the engine stops with "method, stage, epoch, step: loss is nan" (NonFiniteLossError)
        return diagonal_gaussian(mu, raw, self.sigma, self.sigma_floor)


class Fcomb(nn.Module):
    """Combine features ``[B,F,H,W]`` with latents ``z`` ``[B,L]`` or ``[B,N,L]`` into logits.

    ``layers``: 1x1 convs (F+L)->hidden, ``n_hidden - 1`` x hidden->hidden (ReLU after each),
    then ``last_layer`` hidden->out. Orthogonal weight init, zero bias. Returns ``[B,out,H,W]``
    for ``z [B,L]`` and ``[B,N,out,H,W]`` for ``z [B,N,L]`` (the features broadcast over N).
    """

    def __init__(self, feature_channels: int, latent_dim: int, hidden: int | None = None,
                 n_hidden: int = 3, out_channels: int = 1) -> None:
        super().__init__()
        hidden = feature_channels if hidden is None else hidden
        if n_hidden < 1:
            raise ValueError(f"Fcomb: n_hidden must be >= 1, got {n_hidden}")
        self.feature_channels = feature_channels
        self.latent_dim = latent_dim
        convs: list[nn.Module] = [nn.Conv2d(feature_channels + latent_dim, hidden, 1), nn.ReLU(inplace=True)]
        for _ in range(n_hidden - 1):
            convs += [nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*convs)
        self.last_layer = nn.Conv2d(hidden, out_channels, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        b, f, h, w = features.shape
        if f != self.feature_channels or z.shape[0] != b or z.shape[-1] != self.latent_dim:
            raise ValueError(f"Fcomb: features {tuple(features.shape)} / z {tuple(z.shape)} do not "
                             f"match F={self.feature_channels}, L={self.latent_dim}")
        single = z.ndim == 2
        zz = z[:, None] if single else z  # [B,N,L]
        n = zz.shape[1]
        first = self.layers[0]
        wf, wz = first.weight[:, :f], first.weight[:, f:, 0, 0]  # [hid,F,1,1], [hid,L]
        hf = F.conv2d(features, wf)  # [B,hid,H,W], computed once for all N latents
        hz = F.linear(zz.to(hf.dtype), wz, first.bias)  # [B,N,hid]
        x = torch.relu(hf[:, None] + hz[..., None, None])  # [B,N,hid,H,W]
        x = x.reshape(b * n, -1, h, w)
        x = self.last_layer(self.layers[2:](x))
        x = x.reshape(b, n, -1, h, w)
        return x[:, 0] if single else x

    def forward_concat(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The textbook form (tile z, concatenate, run all convs) for ``z [B,L]``; for tests."""
        zt = z[:, :, None, None].expand(-1, -1, *features.shape[-2:]).to(features.dtype)
        return self.last_layer(self.layers(torch.cat([features, zt], dim=1)))


def l2_norm_sum(*modules: nn.Module) -> torch.Tensor:
    """Sum over every parameter of ``modules`` of its (unsquared) L2 norm (Kohl's regulariser)."""
    norms = [p.norm(2) for m in modules for p in m.parameters()]
    return torch.stack(norms).sum()
