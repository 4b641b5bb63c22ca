"""Stage-2 projection heads (one per rater) and the attention query into the latent bank.

Head r: three blocks of widths ``(c1, c2, latent_dim)`` from ``in_channels``; each block is
conv3x3 + ReLU, Dropout2d(p), conv3x3 + ReLU; AvgPool2d(2) before blocks 2 and 3; then the
global average -> query ``q_r in R^D`` (non-negative after the last ReLU). The reference pads
by 3 (each conv grows the map); padding 1 is the corrected form. Same parameter count either way.

The R heads are stored stacked (``weight.j [R,out,in,3,3]``, ``bias.j [R,out]``) and run
together: the first conv as one conv with R*out channels, the rest as grouped convs (groups=R),
so there is no Python loop over raters. Initialisation (``init``): ``"reference"`` (default,
the D-Persona code's Kaiming-normal weights and N(0, 1e-3) biases) or ``"pytorch"`` (Conv2d's
default uniform init).

Query (``attend``): ``a = softmax_N(q . Z)``, ``z_r = sum_i a_i Z_i`` for a bank ``Z [B,N,D]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = 3
HEAD_INITS = ("reference", "pytorch")
BIAS_STD = 1e-3


class ProjectionHeads(nn.Module):
    """``forward(features [B,C,H,W]) -> queries [B,R,D]``."""

    def __init__(self, num_heads: int, in_channels: int = 16, channels: Sequence[int] = (32, 16, 6),
                 padding: int = 1, dropout: float = 0.1, init: str = "reference") -> None:
        super().__init__()
        if num_heads < 1 or len(channels) != 3:
            raise ValueError(f"ProjectionHeads: need num_heads >= 1 and 3 block widths, got {num_heads}, {channels}")
        self.num_heads = int(num_heads)
        self.in_channels = int(in_channels)
        self.query_dim = int(channels[-1])
        self.padding = int(padding)
        self.dropout = float(dropout)
        if init not in HEAD_INITS:
            raise ValueError(f"ProjectionHeads: init must be one of {', '.join(HEAD_INITS)}, got {init!r}")
        self.init = init
        shapes: list[tuple[int, int]] = []  # (out, in) of the 6 convs
        prev = self.in_channels
        for width in channels:
            shapes += [(width, prev), (width, width)]
            prev = width
        self.weight = nn.ParameterList(
            nn.Parameter(torch.empty(self.num_heads, o, i, KERNEL, KERNEL)) for o, i in shapes)
        self.bias = nn.ParameterList(nn.Parameter(torch.empty(self.num_heads, o)) for o, _ in shapes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Per head and conv (fan_in = in_channels * 3 * 3): ``"reference"`` (the D-Persona code's
        ``init_weights``): weights Kaiming-normal, N(0, 2 / fan_in); biases N(0, 1e-3^2)
        truncated to +-2e-3. ``"pytorch"``: PyTorch's default Conv2d init, weights and biases
        U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        for w, b in zip(self.weight, self.bias, strict=True):
            fan_in = w.shape[2] * KERNEL * KERNEL
            with torch.no_grad():
                if self.init == "reference":
                    w.normal_(0.0, math.sqrt(2.0 / fan_in))
                    nn.init.trunc_normal_(b, mean=0.0, std=BIAS_STD, a=-2 * BIAS_STD, b=2 * BIAS_STD)
                else:  # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                    bound = 1.0 / math.sqrt(fan_in)
                    w.uniform_(-bound, bound)
                    b.uniform_(-bound, bound)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f"ProjectionHeads: features must be [B,{self.in_channels},H,W], got {tuple(features.shape)}")
        r = self.num_heads
        h = features
        for j, (w, b) in enumerate(zip(self.weight, self.bias, strict=True)):
            if j in (2, 4):  # AvgPool2d(2) before blocks 2 and 3
                h = F.avg_pool2d(h, 2)
            groups = 1 if j == 0 else r  # the first conv reads the shared features
            h = torch.relu(F.conv2d(h, w.flatten(0, 1), b.flatten(), padding=self.padding, groups=groups))
            if j % 2 == 0:  # Dropout2d between a block's two convs
                h = F.dropout2d(h, self.dropout, training=self.training)
        return h.mean(dim=(2, 3)).view(features.shape[0], r, self.query_dim)


def attend(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``queries [B,R,D]``, ``bank [B,N,D]`` -> ``z [B,R,D]``, ``z_r = softmax_N(q_r . Z) Z``."""
    if queries.ndim != 3 or bank.ndim != 3 or queries.shape[0] != bank.shape[0] or queries.shape[2] != bank.shape[2]:
        raise ValueError(f"attend: queries [B,R,D] and bank [B,N,D] disagree: {tuple(queries.shape)} vs {tuple(bank.shape)}")
    bank = bank.to(queries.dtype)
    weights = torch.softmax(queries @ bank.transpose(1, 2), dim=-1)
    return weights @ bank
