"""An ADM-style U-Net (Dhariwal & Nichol's "improved/guided diffusion" layout), written for
Flow-SSN and CCDM.

Layout for base width ``ch``, ``mult`` (one entry per level), ``res_blocks`` per level,
``attention_ds`` (downsampling factors with self-attention):

- input: conv3x3(in -> ch); each level l: ``res_blocks`` x ResBlock(-> ch*mult[l]) (+ attention
  when 2**l is in ``attention_ds``); all but the last level end with a stride-2 conv3x3.
- middle: ResBlock, attention (only when ``attention_ds`` is non-empty), ResBlock.
- output: each level from the deepest, ``res_blocks + 1`` x ResBlock on [h, skip] (+ attention);
  all but the finest end with nearest x2 upsampling + conv3x3.
- out: GroupNorm, SiLU, conv3x3(ch -> out), zero-initialised.

ResBlock(in -> out): GN, SiLU, conv3x3; + Linear(SiLU(emb)) added per channel when
time-conditioned; GN, SiLU, dropout, conv3x3 (zero-initialised); skip = 1x1 conv when in != out.
Attention: GN, qkv 1x1 conv, ``channels // head_dim`` heads, output 1x1 conv (zero-init), residual.
GroupNorm uses ``gcd(32, channels)`` groups (ADM's 32 groups need >= 32 channels).
Time embedding: sinusoidal(``t`` [B] float, ``ch`` dims) -> Linear(ch, 4ch), SiLU, Linear(4ch, 4ch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[B, dim]`` of ``t [B]``: cos(t f_i), sin(t f_i), f_i =
    max_period**(-i/half) (ADM's ``timestep_embedding``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch)) if emb_dim else None
        self.out_layers = nn.Sequential(group_norm(out_ch), nn.SiLU(), nn.Dropout(dropout),
                                        zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.in_layers(x)
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None].to(h.dtype)
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map (residual)."""

    def __init__(self, channels: int, head_dim: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero_(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))  # [B,3C,P]
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)  # [B,heads,d,P]
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h * w)).reshape(b, c, h, w)


class _Seq(nn.ModuleList):
    """Layers called with (x, emb)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock | Attention) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ADMUNet(nn.Module):
    """See the module docstring. ``forward(x [B,in,H,W], t [B] or None) -> [B,out,H,W]``;
    H and W must be divisible by 2**(len(mult) - 1)."""

    def __init__(self, in_channels: int, out_channels: int, ch: int, mult: Sequence[int], res_blocks: int,
                 attention_ds: Sequence[int] = (), head_dim: int = 32, dropout: float = 0.0,
                 time_conditioned: bool = False) -> None:
        super().__init__()
        mult = tuple(int(m) for m in mult)
        if ch < 1 or not mult or min(mult) < 1 or res_blocks < 1 or head_dim < 1 or not 0 <= dropout < 1:
            raise ValueError(f"ADM U-Net: need ch >= 1, mult of positive ints, res_blocks >= 1, head_dim >= 1, "
                             f"0 <= dropout < 1; got {ch}, {mult}, {res_blocks}, {head_dim}, {dropout}")
        self.levels = len(mult)
        emb_dim = 4 * ch if time_conditioned else None
        self.ch = ch
        self.time_embed = (nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                           if time_conditioned else None)
        attn = {int(a) for a in attention_ds}
        self.inp = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, cur, ds = [ch], ch, 1
        for level, m in enumerate(mult):
            for _ in range(res_blocks):
                layers: list[nn.Module] = [ResBlock(cur, ch * m, emb_dim, dropout)]
                cur = ch * m
                if ds in attn:
                    layers.append(Attention(cur, head_dim))
                self.down.append(_Seq(layers))
                skips.append(cur)
            if level < len(mult) - 1:
                self.down.append(_Seq([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
                ds *= 2
        mid: list[nn.Module] = [ResBlock(cur, cur, emb_dim, dropout)]
        if attn:
            mid.append(Attention(cur, head_dim))
        mid.append(ResBlock(cur, cur, emb_dim, dropout))
        self.mid = _Seq(mid)
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(res_blocks + 1):
                layers = [ResBlock(cur + skips.pop(), ch * m, emb_dim, dropout)]
                cur = ch * m
                if ds in attn:
                    layers.append(Attention(cur, head_dim))
                if level > 0 and i == res_blocks:
                    layers.append(Upsample(cur))
                    ds //= 2
                self.up.append(_Seq(layers))
        self.out = nn.Sequential(group_norm(cur), nn.SiLU(), zero_(nn.Conv2d(cur, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        f = 2 ** (self.levels - 1)
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {x.shape[-2]}x{x.shape[-1]} must be divisible by 2**(levels-1) = {f}")
        emb = None
        if self.time_embed is not None:
            if t is None:
                raise ValueError("this U-Net is time-conditioned: pass t")
            emb = self.time_embed(timestep_embedding(t, self.ch))
        h = self.inp(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for block in self.up:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
