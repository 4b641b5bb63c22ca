"""Fcomb: decode a latent ``z`` together with the backbone features into a logit map.

Plain form (the reference): tile ``z`` over space, concatenate ``[features; z]`` and apply
``layers`` 1x1 convs (ReLU each), then a 1x1 conv to one logit channel.

Batched form (``forward``): the first 1x1 conv is linear, so ``W [f; z] + b = (W_f f + b) +
W_z z``. The feature part ``W_f f + b`` is computed once per image (``feature_part``) and the
latent part of each of S samples is broadcast onto it; the remaining 1x1 convs run as
``F.linear`` over a channels-last ``[B,S,H,W,C]`` tensor. S samples cost one backbone pass
plus S cheap per-pixel MLPs instead of S full forward passes. Same numbers as the plain form
(up to float rounding). ReLUs run in place; on CPU the pixel rows are processed in tiles of
about ``CPU_TILE_ELEMENTS`` activations (cache-friendly: 2-5x faster there than one huge tensor;
the loop is over row tiles, never over samples). On GPU everything runs at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CPU_TILE_ELEMENTS = 1 << 22  # ~16 MB of float32 activations per tile on CPU


class Fcomb(nn.Module):
    """``forward(features [B,F,H,W], z [B,S,D]) -> logits [B,S,H,W]``."""

    def __init__(self, feature_channels: int = 16, latent_dim: int = 6, hidden_channels: int = 16,
                 layers: int = 3) -> None:
        super().__init__()
        self.feature_channels = int(feature_channels)
        self.latent_dim = int(latent_dim)
        hidden: list[nn.Module] = []
        prev = self.feature_channels + self.latent_dim
        for _ in range(layers):
            hidden += [nn.Conv2d(prev, hidden_channels, 1), nn.ReLU(inplace=True)]
            prev = hidden_channels
        self.hidden = nn.Sequential(*hidden)
        self.out = nn.Conv2d(prev, 1, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthogonal weights, biases ~ N(0, 1e-3) truncated at 2 sigma."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)
                nn.init.trunc_normal_(m.bias, std=1e-3, a=-2e-3, b=2e-3)

    def _convs(self) -> list[nn.Conv2d]:
        return [m for m in self.hidden if isinstance(m, nn.Conv2d)]

    def forward_plain(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Reference form for one latent per image: ``z [B,D] -> logits [B,1,H,W]``."""
        tiled = z[:, :, None, None].expand(-1, -1, *features.shape[2:]).to(features.dtype)
        return self.out(self.hidden(torch.cat([features, tiled], dim=1)))

    def feature_part(self, features: torch.Tensor) -> torch.Tensor:
        """``W_f f + b`` of the first 1x1 conv, channels-last: ``[B,H,W,hidden]``."""
        if features.ndim != 4 or features.shape[1] != self.feature_channels:
            raise ValueError(f"Fcomb: features must be [B,{self.feature_channels},H,W], got {tuple(features.shape)}")
        first = self._convs()[0]
        w_f = first.weight.flatten(1)[:, : self.feature_channels]
        return F.linear(features.permute(0, 2, 3, 1), w_f, first.bias)

    def decode(self, part: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits ``[B,S,H,W]`` from ``part = feature_part(features)`` and ``z [B,S,D]``."""
        if z.ndim != 3 or z.shape[0] != part.shape[0] or z.shape[2] != self.latent_dim:
            raise ValueError(f"Fcomb: z must be [B={part.shape[0]},S,{self.latent_dim}], got {tuple(z.shape)}")
        w_z = self._convs()[0].weight.flatten(1)[:, self.feature_channels :]
        latent = F.linear(z.to(part.dtype), w_z)[:, :, None, None, :]  # [B,S,1,1,hidden]
        b, rows, width, hidden = part.shape
        step = rows
        if part.device.type == "cpu":
            step = max(1, CPU_TILE_ELEMENTS // max(1, b * z.shape[1] * width * hidden))
        if step >= rows:
            return self._mlp(part[:, None] + latent)
        tiles = [self._mlp(part[:, None, r : r + step] + latent) for r in range(0, rows, step)]
        return torch.cat(tiles, dim=2)

    def _mlp(self, pre: torch.Tensor) -> torch.Tensor:
        """The per-pixel MLP from the first layer's pre-activation ``[...,hidden]`` to logits."""
        h = pre.relu_()
        for conv in self._convs()[1:]:
            h = F.linear(h, conv.weight.flatten(1), conv.bias).relu_()
        return F.linear(h, self.out.weight.flatten(1), self.out.bias).squeeze(-1)

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decode(self.feature_part(features), z)
