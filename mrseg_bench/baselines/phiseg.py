"""PHiSeg (Baumgartner et al., MICCAI 2019): a hierarchical probabilistic U-Net.

Architecture ("phiseg_7_5": ``levels`` = 7 resolution levels, ``latent_levels`` = 5), channels
``[n0, 2n0, 4n0, 6n0, 6n0, 6n0, 6n0]`` (``phiseg_channels``), BatchNorm everywhere:

- Prior net p(z | x) and posterior net q(z | x, y) (image + ONE rater mask) share a structure:
  an encoder of ``levels`` blocks (AvgPool2d(2) before all but the first, 3 x conv3x3-BN-ReLU).
  Latent level l (l = 0 finest .. L-1 coarsest) sits on resolution level l + levels - L. The
  coarsest latent's (mu, sigma) come from 1x1 convs on that level's features; every finer level
  concatenates its encoder features with the level above's z (bilinear x2 + 2 conv-BN-ReLU with
  2 * n0 channels), 2 conv-BN-ReLU, then 1x1 convs -> mu and softplus -> sigma. Each z_l is a
  per-pixel diagonal Gaussian with ``latent_channels`` (2) channels. In training both nets are
  conditioned on the POSTERIOR's samples of the coarser levels (as in the published code).
- Likelihood net: each z_l -> 2 conv-BN-ReLU -> (levels - L) x (bilinear x2 + conv-BN-ReLU), so
  level l's features lie at 1/2^l of the image; then from the coarsest level up, each level
  concatenates its features with the (upsampled, conv'd) combined features of the level below,
  2 conv-BN-ReLU, and a 1x1 conv gives that level's logits, resized (nearest) to the image.
- Residual deep supervision: ``acc_{L-1} = s_{L-1}``, ``acc_l = s_l + acc_{l+1}``; the output is
  ``acc_0``.

Loss (one valid rater y drawn per image per step, posterior samples z ~ q)::

    sum_l BCE_sum(acc_l, y) + kl_weight * sum_l kl_base**l * KL(q_l || p_l)

BCE and KL are summed over pixels (and latent channels) and averaged over the batch; the KL
weights 4^l grow with the level (coarser levels have 4x fewer latent pixels). Inference: N prior
samples (ancestral, coarse to fine), image features computed once, all noise drawn up front,
samples decoded in chunks of ``sample_chunk`` (image, sample) pairs (a loop over chunks, never
over single samples; the chunk size does not change the result). Cost: the likelihood net runs
2n0 -> 4n0 channel convs at full resolution for every sample (~5 GMAC per 128x128 sample with
n0 = 32), so N = 50 is slow on a CPU.

Target figures: the ``paper`` preset (n0 = 32, 7/5 levels, Adam 1e-3, batch 12, BatchNorm,
checkpoint by validation GED) is the configuration of PHiSeg's own LIDC results (Baumgartner et
al. 2019, "PHiSeg L = 5" trained on all annotations: GED and NCC) and of the PHiSeg rows other
papers quote next to Kohl et al.'s Probabilistic U-Net. Both papers use the STANDARD GED
convention (empty-vs-empty IoU distance 0) and split LIDC by patient, i.e. this benchmark's
default ``convention="standard"`` and default protocol -- not D-Persona's ``dpersona``
convention or its slice split, so those published numbers are comparable only with runs in the
standard convention. The number of test samples is a run setting (``--set run.n_samples=50`` or
100 as in the respective table).

Deviation: the published posterior sees the mask one-hot (2 channels); here one {0,1} channel
(the same information).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..latent import sigma_from
from ..method import Method, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .blocks import check_divisible, conv_bn_relu, conv_stack, upsample_to
from .common import check_batch, check_io, draw_valid_rater, remember_io
from .scheduled import ScheduledConfig, check_schedule, scheduled_stage

CHANNEL_MULTIPLIERS = (1, 2, 4, 6, 6, 6, 6)


def phiseg_channels(n0: int, levels: int) -> tuple[int, ...]:
    """``[n0, 2n0, 4n0, 6n0, 6n0, ...]`` with ``levels`` entries (6n0 beyond the 7th as well)."""
    mult = CHANNEL_MULTIPLIERS + (6,) * max(0, levels - len(CHANNEL_MULTIPLIERS))
    return tuple(n0 * m for m in mult[:levels])


def kl_level_weights(latent_levels: int, base: float = 4.0) -> torch.Tensor:
    """``[base**0, base**1, ..., base**(L-1)]``: level 0 is the finest latent level."""
    return torch.tensor([float(base) ** lvl for lvl in range(latent_levels)])


class LatentHierarchy(nn.Module):
    """Prior (``in_channels`` = image channels) or posterior (+1 mask channel) net."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], latent_levels: int,
                 latent_channels: int, n0: int) -> None:
        super().__init__()
        levels, lat = len(channels), latent_levels
        self.offset = levels - lat
        self.latent_levels = lat
        self.encoder = nn.ModuleList(
            conv_stack(in_channels if i == 0 else channels[i - 1], channels[i], 3, pool=i > 0)
            for i in range(levels))
        up_ch = latent_channels * n0
        self.z_up = nn.ModuleList(
            nn.Sequential(conv_bn_relu(latent_channels, up_ch), conv_bn_relu(up_ch, up_ch))
            for _ in range(lat - 1))
        self.z_in = nn.ModuleList(
            nn.Sequential(conv_bn_relu(channels[i + self.offset] + up_ch, channels[i]),
                          conv_bn_relu(channels[i], channels[i]))
            for i in range(lat - 1))
        head_in = [channels[i] for i in range(lat - 1)] + [channels[lat - 1 + self.offset]]
        self.mu = nn.ModuleList(nn.Conv2d(c, latent_channels, 1) for c in head_in)
        self.sigma = nn.ModuleList(nn.Conv2d(c, latent_channels, 1) for c in head_in)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of the latent levels' resolutions, finest latent level first."""
        feats = []
        for block in self.encoder:
            x = block(x)
            feats.append(x)
        return feats[self.offset:]

    def forward(self, feats: list[torch.Tensor], condition: list[torch.Tensor] | None = None,
                noise: list[torch.Tensor] | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """``(mu, sigma, z)`` per latent level (finest first), ``z = mu + sigma * noise``
        (``noise`` standard normal, drawn here unless given).

        Level l is conditioned on ``condition[l+1]`` when given (training: the posterior's
        samples), else on this net's own sample of level l+1 (ancestral sampling).
        """
        lat = self.latent_levels
        mus: list[torch.Tensor] = [None] * lat  # type: ignore[list-item]
        sigmas: list[torch.Tensor] = [None] * lat  # type: ignore[list-item]
        zs: list[torch.Tensor] = [None] * lat  # type: ignore[list-item]
        below = None
        for lvl in reversed(range(lat)):
            h = feats[lvl]
            if lvl < lat - 1:
                up = self.z_up[lvl](upsample_to(below, h.shape[-2:]))
                h = self.z_in[lvl](torch.cat([h, up], dim=1))
            mus[lvl] = self.mu[lvl](h)
            sigmas[lvl] = sigma_from(self.sigma[lvl](h), "softplus", floor=1e-6)
            eps = torch.randn_like(mus[lvl]) if noise is None else noise[lvl].to(mus[lvl].dtype)
            zs[lvl] = mus[lvl] + sigmas[lvl] * eps
            below = zs[lvl] if condition is None else condition[lvl]
        return mus, sigmas, zs


class PHiSegLikelihood(nn.Module):
    """z list (finest first) -> per-level logits at full size, residually accumulated."""

    def __init__(self, channels: tuple[int, ...], latent_levels: int, latent_channels: int) -> None:
        super().__init__()
        lat, off = latent_levels, len(channels) - latent_levels
        self.offset = off
        self.post_z = nn.ModuleList(
            nn.Sequential(conv_bn_relu(latent_channels, channels[i]), conv_bn_relu(channels[i], channels[i]))
            for i in range(lat))
        self.raise_res = nn.ModuleList(
            nn.ModuleList(conv_bn_relu(channels[i], channels[i]) for _ in range(off)) for i in range(lat))
        comb_ch = [channels[i + off] for i in range(lat - 1)] + [channels[lat - 1]]
        self.up_conv = nn.ModuleList(conv_bn_relu(comb_ch[i + 1], channels[i]) for i in range(lat - 1))
        self.combine = nn.ModuleList(
            nn.Sequential(conv_bn_relu(2 * channels[i], comb_ch[i]), conv_bn_relu(comb_ch[i], comb_ch[i]))
            for i in range(lat - 1))
        self.logits = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in comb_ch)

    def forward(self, zs: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        """Residual logits ``acc_l [B,1,H,W]`` per latent level (finest first)."""
        lat = len(zs)
        post = []
        for lvl, z in enumerate(zs):
            h = self.post_z[lvl](z)
            for conv in self.raise_res[lvl]:
                h = conv(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))
            post.append(h)
        comb: list[torch.Tensor] = [None] * lat  # type: ignore[list-item]
        comb[lat - 1] = post[lat - 1]
        for lvl in reversed(range(lat - 1)):
            up = self.up_conv[lvl](upsample_to(comb[lvl + 1], post[lvl].shape[-2:]))
            comb[lvl] = self.combine[lvl](torch.cat([post[lvl], up], dim=1))
        acc: list[torch.Tensor] = [None] * lat  # type: ignore[list-item]
        for lvl in reversed(range(lat)):
            s = F.interpolate(self.logits[lvl](comb[lvl]), size=size, mode="nearest")
            acc[lvl] = s if lvl == lat - 1 else s + acc[lvl + 1]
        return acc


def check_sizes(n0: int, levels: int, latent_levels: int, latent_channels: int) -> tuple[int, ...]:
    """The encoder channels (``phiseg_channels``) after checking the sizes; ValueError otherwise.
    Builds nothing, so a config is validated without a model."""
    if n0 < 1 or latent_channels < 1 or not 1 <= latent_levels <= levels:
        raise ValueError(f"phiseg: need n0 >= 1, latent_channels >= 1 and 1 <= latent_levels <= levels;"
                         f" got n0={n0}, latent_channels={latent_channels}, "
                         f"latent_levels={latent_levels}, levels={levels}")
    return phiseg_channels(n0, levels)


class PHiSegModel(nn.Module):
    """Prior, posterior and likelihood nets. ``forward(images)``: one prior sample's logits."""

    def __init__(self, in_channels: int, n0: int = 32, levels: int = 7, latent_levels: int = 5,
                 latent_channels: int = 2) -> None:
        super().__init__()
        channels = check_sizes(n0, levels, latent_levels, latent_channels)
        self.levels = levels
        self.prior = LatentHierarchy(in_channels, channels, latent_levels, latent_channels, n0)
        self.posterior = LatentHierarchy(in_channels + 1, channels, latent_levels, latent_channels, n0)
        self.likelihood = PHiSegLikelihood(channels, latent_levels, latent_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_divisible(images, self.levels, "phiseg")
        _, _, zs = self.prior(self.prior.features(images))
        return self.likelihood(zs, tuple(images.shape[-2:]))[0]

    def train_terms(self, images: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Residual logits per level (from posterior samples) and the per-level KL ``[L]``
        (summed over latent pixels and channels, batch mean)."""
        check_divisible(images, self.levels, "phiseg")
        q_mu, q_sigma, q_z = self.posterior(self.posterior.features(torch.cat([images, mask], 1)))
        p_mu, p_sigma, _ = self.prior(self.prior.features(images), condition=q_z)
        kls = torch.stack([gaussian_kl(qm, qs, pm, ps).flatten(1).sum(1).mean()
                           for qm, qs, pm, ps in zip(q_mu, q_sigma, p_mu, p_sigma, strict=True)])
        return self.likelihood(q_z, tuple(images.shape[-2:])), kls

    def sample_logits(self, images: torch.Tensor, n_samples: int, chunk: int) -> torch.Tensor:
        """``n_samples`` prior samples per image, ``[B,N,H,W]`` logits; the prior encoder runs
        once per image, the latent hierarchy and likelihood on ``chunk`` pairs at a time."""
        check_divisible(images, self.levels, "phiseg")
        b = images.shape[0]
        feats = self.prior.features(images)
        latent_ch = self.prior.mu[0].out_channels
        # all noise drawn up front (small: latent maps at <= 1/4 of the image), so the result does
        # not depend on the chunk size
        noise = [torch.randn(b, n_samples, latent_ch, *f.shape[-2:], device=f.device) for f in feats]
        per_chunk = max(1, chunk // max(b, 1))
        out = []
        for start in range(0, n_samples, per_chunk):  # loop over chunks of samples, not samples
            n = min(per_chunk, n_samples - start)
            rep = [f.repeat_interleave(n, dim=0) for f in feats]  # [B*n,...], image-major
            eps = [e[:, start:start + n].flatten(0, 1) for e in noise]
            _, _, zs = self.prior(rep, noise=eps)
            out.append(self.likelihood(zs, tuple(images.shape[-2:]))[0].reshape(b, n, *images.shape[-2:]))
        return torch.cat(out, dim=1)


def gaussian_kl(q_mu: torch.Tensor, q_sigma: torch.Tensor, p_mu: torch.Tensor, p_sigma: torch.Tensor
                ) -> torch.Tensor:
    """Elementwise KL(N(q_mu, q_sigma^2) || N(p_mu, p_sigma^2))
    = log(p_s/q_s) + (q_s^2 + (q_mu - p_mu)^2) / (2 p_s^2) - 1/2."""
    q_mu, q_sigma, p_mu, p_sigma = (t.float() for t in (q_mu, q_sigma, p_mu, p_sigma))
    return (torch.log(p_sigma) - torch.log(q_sigma)
            + (q_sigma ** 2 + (q_mu - p_mu) ** 2) / (2 * p_sigma ** 2) - 0.5)


@dataclass
class PHiSegConfig(ScheduledConfig):
    """``levels`` resolution levels (image side divisible by 2**(levels-1)), ``latent_levels``
    latent levels on the coarsest of them; KL weight of latent level l: kl_weight * kl_base**l."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-4, 1e-2, "paper: Adam 1e-3 (docs/more_methods.md); a decade either side (our reasoning)"),
        "kl_weight": log_uniform(0.1, 10.0, "paper: KL weight 1 per level times 4**l (docs/more_methods.md); a decade either side (our reasoning)"),
    }

    lr: float = 1e-3
    n0: int = 32
    levels: int = 7
    latent_levels: int = 5
    latent_channels: int = 2
    kl_base: float = 4.0
    kl_weight: float = 1.0
    sample_chunk: int = 32  # (image, sample) pairs per pass: ~270 MB per 128-channel 128x128 activation


class PHiSeg(Method):
    """PHiSeg; DIVERSE only: ``predict`` returns N prior samples ``[B,N,H,W]``."""

    info = MethodInfo(
        name="phiseg",
        paper="Baumgartner et al., PHiSeg: Capturing Uncertainty in Medical Image Segmentation, MICCAI 2019",
        capabilities=frozenset({Capability.DIVERSE}),
        config_cls=PHiSegConfig,
        description="hierarchical latents (5 levels on a 7-level U-Net), residual deep supervision; N prior samples",
    )
    cfg: PHiSegConfig

    def __init__(self, cfg: PHiSegConfig) -> None:
        check_schedule(cfg, "phiseg")
        if cfg.kl_base <= 0 or cfg.kl_weight < 0 or cfg.sample_chunk < 1:
            raise ValueError(f"phiseg: need kl_base > 0, kl_weight >= 0, sample_chunk >= 1; got "
                             f"{cfg.kl_base}, {cfg.kl_weight}, {cfg.sample_chunk}")
        check_sizes(cfg.n0, cfg.levels, cfg.latent_levels, cfg.latent_channels)
        super().__init__(cfg)

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        h, w = dataset_info.image_size
        f = 2 ** (c.levels - 1)
        if h % f or w % f:
            raise ValueError(f"phiseg: dataset {dataset_info.name!r} image size {h}x{w} is not divisible by "
                             f"2**(levels-1) = {f}; set levels (e.g. levels=5, latent_levels=3 for 32x32)")
        return remember_io(PHiSegModel(dataset_info.in_channels, c.n0, c.levels, c.latent_levels, c.latent_channels),
                           dataset_info.in_channels, dataset_info.num_raters)

    def stages(self) -> list[Stage]:
        return [scheduled_stage(self.cfg)]

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_io("phiseg", model, batch.image, batch.masks)
        check_batch(batch.masks, batch.rater_valid, "phiseg")
        mask, _ = draw_valid_rater(batch.masks, batch.rater_valid)
        acc, kls = model.train_terms(batch.image, mask.to(batch.image.dtype))
        recon_levels = torch.stack([
            F.binary_cross_entropy_with_logits(a.float(), mask, reduction="none").flatten(1).sum(1).mean()
            for a in acc])
        weights = kl_level_weights(len(acc), self.cfg.kl_base).to(kls.device)
        recon = recon_levels.sum()
        kl = (weights * kls).sum()
        loss = recon + self.cfg.kl_weight * kl
        return {"loss": loss, "recon": recon.detach(), "kl": kl.detach(),
                "recon_final": recon_levels[0].detach()}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        if int(n_samples) < 1:
            raise ValueError(f"phiseg.predict: n_samples must be >= 1, got {n_samples}")
        check_io("phiseg", model, images)
        logits = model.sample_logits(images, int(n_samples), self.cfg.sample_chunk)
        return Prediction(samples=torch.sigmoid(logits.float()))


@register_method("phiseg")
def phiseg(cfg: PHiSegConfig | None = None) -> PHiSeg:
    """PHiSeg (default: phiseg_7_5 with n0 = 32, Adam 1e-3)."""
    return PHiSeg(cfg or PHiSegConfig())


__all__ = ["PHiSeg", "PHiSegConfig", "PHiSegModel", "gaussian_kl", "kl_level_weights", "phiseg",
           "phiseg_channels"]
