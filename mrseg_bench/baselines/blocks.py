"""Small conv building blocks shared by PHiSeg and MoSE (BatchNorm U-Nets)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3) -> nn.Sequential:
    """conv (``kernel``, same padding, no bias) + BatchNorm2d + ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def conv_stack(in_ch: int, out_ch: int, n: int, pool: bool = False) -> nn.Sequential:
    """Optional AvgPool2d(2), then ``n`` x ``conv_bn_relu`` (the first maps in_ch -> out_ch)."""
    layers: list[nn.Module] = [nn.AvgPool2d(2)] if pool else []
    layers += [conv_bn_relu(in_ch if i == 0 else out_ch, out_ch) for i in range(n)]
    return nn.Sequential(*layers)


def upsample_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of ``x [B,C,h,w]`` to ``size`` (align_corners=False)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def check_divisible(images: torch.Tensor, levels: int, where: str) -> None:
    """ValueError naming ``where`` unless H and W are divisible by 2 ** (levels - 1)."""
    h, w = images.shape[-2:]
    f = 2 ** (levels - 1)
    if h % f or w % f:
        raise ValueError(f"{where}: image size {h}x{w} must be divisible by 2**(levels-1) = {f}; "
                         f"lower `levels` (e.g. 5 for 32x32 with 2x2 at the bottom) or resize the images")
