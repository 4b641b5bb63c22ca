"""CCDM (Zbinden et al., ICCV 2023, "Stochastic Segmentation with Conditional Categorical
Diffusion Models"): uniform-noise categorical diffusion on one-hot masks, image concatenated.

Network: ``adm_unet.ADMUNet`` with input [x_t one-hot (K = 2), image] -> K logits; softmax = the
prediction p(x0 | x_t, image). Published sizes: base 32, mult (1, 1, 2, 3, 4), 2 res blocks per
level, self-attention at downsampling 8 and 16 (head dim 32), dropout 0, sinusoidal t
embedding, last conv zero-initialised: 5,699,138 parameters with 1 image channel (the paper's
"5.7M"; asserted in tests/test_new_methods.py).

Diffusion (``CategoricalSchedule``), T = ``diffusion_steps`` (250):
  abar_t = f(t/T) / f(0), f(tau) = cos^2((tau + s) / (1 + s) * pi/2), s = 0.008, t = 0..T;
  alpha_{t|s} = abar_t / abar_s (alpha_t = alpha_{t|t-1});
  q(x_t | x_s) = Cat(alpha_{t|s} x_s + (1 - alpha_{t|s}) / K), q(x_t | x0) = Cat(abar_t x0 + (1 - abar_t)/K);
  q(x_s | x_t, x0) ∝ [alpha_{t|s} x_t + (1 - alpha_{t|s})/K] ⊙ [abar_s x0 + (1 - abar_s)/K];
  p(x_s | x_t) = sum_k phat_k q(x_s | x_t, e_k)  (marginalised over the predicted x0).
This schedule is the clean one: the public code does not divide abar by f(0) and draws
q(x_t | x0) one index off (f((t-1)/T)); here the composed one-step kernels reproduce
q(x_t | x0) exactly (tested).

Loss: t ~ U{1..T}, x0 one valid rater per image, x_t ~ q(x_t | x0);
L = sum over pixels and classes of KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) / batch, logs
clamped at 1e-12. At t = 1 (abar_0 = 1) it is the cross-entropy of phat against x0.

Sampling with S = ``sample_steps``: tau = round(linspace(T, 1, S)); x_T ~ Cat(1/K); for each
jump t -> s (the next tau, 0 after the last) the posterior uses the EXACT jump alpha_{t|s} and
abar_s (the public code reuses the one-step alpha_t, inexact for S < T); every step but the
last samples, the last (s = 0) takes phat (its argmax is the mask; phat is returned as the
sample's soft map). All N samples of all images run through the U-Net together, in chunks of
``sample_chunk`` (image, sample) pairs (a loop over chunks and steps, never over samples).

Not reproduced: the EMA of the weights (0.9999) and the linear lr decay to 1e-6 (a schedule
the engine lacks; ``schedule = "poly"`` with power 1 decays to 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..method import Method, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .adm_unet import ADMUNet
from .common import check_batch, check_io, draw_valid_rater, remember_io
from .scheduled import ScheduledConfig, check_schedule, scheduled_stage

K = 2
LOG_CLAMP = 1e-12
PUBLISHED_T = 250


class CategoricalSchedule:
    """The cosine abar_t (t = 0..T, float64) and the categorical kernels of the module docstring."""

    def __init__(self, steps: int, s: float = 0.008, classes: int = K) -> None:
        if steps < 1:
            raise ValueError(f"ccdm: diffusion_steps must be >= 1, got {steps}")
        tau = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
        self.abar = (f / f[0]).clamp(0.0, 1.0)
        self.steps, self.classes = steps, classes

    def abar_at(self, t: torch.Tensor) -> torch.Tensor:
        return self.abar.to(t.device)[t].float()

    def q_xt_x0(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Cat(abar_t x0 + (1 - abar_t)/K) for one-hot / probability ``x0 [B,K,H,W]``, ``t [B]``."""
        a = self.abar_at(t)[:, None, None, None]
        return a * x0 + (1 - a) / self.classes

    def posterior(self, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """q(x_s | x_t, x0) ``[...,K,H,W]`` for ``xt``/``x0`` ``[B,...,K,H,W]`` (one-hot / probabilities),
        jump t -> s (``t, s [B]``, s < t), normalised over K."""
        a_t, a_s = self.abar_at(t), self.abar_at(s)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        alpha = (a_t / a_s.clamp_min(1e-30)).reshape(shape)
        a_s = a_s.reshape(shape)
        unnorm = (alpha * xt + (1 - alpha) / self.classes) * (a_s * x0 + (1 - a_s) / self.classes)
        return unnorm / unnorm.sum(dim=-3, keepdim=True)

    def model_posterior(self, xt: torch.Tensor, phat: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """p(x_s | x_t) = sum_k phat_k q(x_s | x_t, e_k), ``[B,K,H,W]`` (one batched expression over k)."""
        eye = torch.eye(self.classes, device=xt.device, dtype=xt.dtype)[:, :, None, None]  # [K(x0),K,1,1]
        post = self.posterior(xt[:, None], eye[None].expand(xt.shape[0], -1, -1, *xt.shape[-2:]), t, s)
        return (phat[:, :, None] * post).sum(dim=1)


def categorical_kl(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """sum over K of q (log q - log p), logs clamped at 1e-12; ``[B,K,H,W] -> [B,H,W]``."""
    return (q * (q.clamp_min(LOG_CLAMP).log() - p.clamp_min(LOG_CLAMP).log())).sum(dim=1)


def sample_onehot(probs: torch.Tensor) -> torch.Tensor:
    """One categorical draw per pixel of ``probs [B,K,H,W]`` (rows sum to 1), one-hot float:
    class = number of cumulative sums below a uniform draw (inverse CDF, vectorised)."""
    u = torch.rand(probs.shape[0], 1, *probs.shape[2:], device=probs.device, dtype=probs.dtype)
    idx = (u > probs.cumsum(dim=1)).sum(dim=1).clamp_max(probs.shape[1] - 1)
    return F.one_hot(idx, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)


def sample_times(steps: int, diffusion_steps: int) -> list[int]:
    """tau = round(linspace(T, 1, S)), strictly decreasing (duplicates from rounding removed)."""
    taus = torch.linspace(diffusion_steps, 1, steps, dtype=torch.float64).round().long().tolist()
    return list(dict.fromkeys(taus))


class CCDMModel(nn.Module):
    """The denoiser: ``forward(x_t one-hot [B,K,H,W], image [B,C,H,W], t [B]) -> logits [B,K,H,W]``."""

    def __init__(self, in_channels: int, ch: int = 32, mult: tuple[int, ...] = (1, 1, 2, 3, 4), res_blocks: int = 2,
                 attention_ds: tuple[int, ...] = (8, 16), head_dim: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = ADMUNet(K + in_channels, K, ch, mult, res_blocks, attention_ds, head_dim, dropout,
                           time_conditioned=True)
        self.levels = len(mult)

    def forward(self, xt: torch.Tensor, image: torch.Tensor | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        if image is None:  # traced with the image alone: x_T uniform, t = T
            image = xt
            xt = torch.full((image.shape[0], K, *image.shape[-2:]), 1.0 / K, device=image.device)
            t = torch.full((image.shape[0],), float(PUBLISHED_T), device=image.device)
        return self.net(torch.cat([xt, image.to(xt.dtype)], dim=1), t).float()


@dataclass
class CCDMConfig(ScheduledConfig):
    """U-Net sizes (``unet_channels``, ``unet_mult``, ``res_blocks``, ``attention_ds``, ``head_dim``,
    ``dropout``), T = ``diffusion_steps`` (training and the schedule), S = ``sample_steps``
    (network evaluations per sample; <= T), ``sample_chunk`` (image, sample) pairs per pass."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "paper: Adam 1e-4 (docs/more_methods.md); a decade either side (our reasoning)"),
    }


    lr: float = 1e-4
    schedule: Literal["cosine", "poly", "plateau", "constant"] = "poly"
    poly_power: float = 1.0
    unet_channels: int = 32
    unet_mult: tuple[int, ...] = (1, 1, 2, 3, 4)
    res_blocks: int = 2
    attention_ds: tuple[int, ...] = (8, 16)
    head_dim: int = 32
    dropout: float = 0.0
    diffusion_steps: int = PUBLISHED_T
    sample_steps: int = PUBLISHED_T
    sample_chunk: int = 64


class CCDM(Method):
    """CCDM; DIVERSE: ``predict`` returns N reverse-diffusion samples ``[B,N,H,W]``."""

    info = MethodInfo(
        name="ccdm",
        paper="Zbinden et al., Stochastic Segmentation with Conditional Categorical Diffusion Models, ICCV 2023",
        capabilities=frozenset({Capability.DIVERSE}),
        config_cls=CCDMConfig,
        description="categorical (uniform-noise) diffusion on one-hot masks, x0-prediction, exact few-step "
                    "posterior; sample_steps network passes per sample",
    )
    cfg: CCDMConfig
    published_sample_steps = PUBLISHED_T  # the profile's time per sample at the published step count

    def __init__(self, cfg: CCDMConfig) -> None:
        check_schedule(cfg, "ccdm")
        sizes = {"unet_channels": cfg.unet_channels, "res_blocks": cfg.res_blocks, "head_dim": cfg.head_dim,
                 "diffusion_steps": cfg.diffusion_steps, "sample_steps": cfg.sample_steps,
                 "sample_chunk": cfg.sample_chunk}
        bad = [f"{k}={v}" for k, v in sizes.items() if v < 1]
        if bad or not cfg.unet_mult or min(cfg.unet_mult) < 1:
            raise ValueError(f"ccdm: sizes must be >= 1: {', '.join(bad + [f'unet_mult={tuple(cfg.unet_mult)}'])}")
        if cfg.sample_steps > cfg.diffusion_steps:
            raise ValueError(f"ccdm: sample_steps ({cfg.sample_steps}) cannot exceed diffusion_steps "
                             f"({cfg.diffusion_steps})")
        if not 0 <= cfg.dropout < 1:
            raise ValueError(f"ccdm: dropout must be in [0, 1), got {cfg.dropout}")
        super().__init__(cfg)
        self.schedule = CategoricalSchedule(cfg.diffusion_steps)

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        h, w = dataset_info.image_size
        f = 2 ** (len(c.unet_mult) - 1)
        if h % f or w % f:
            raise ValueError(f"ccdm: dataset {dataset_info.name!r} image size {h}x{w} is not divisible by "
                             f"2**(len(unet_mult)-1) = {f}; use a shorter unet_mult")
        return remember_io(CCDMModel(dataset_info.in_channels, c.unet_channels, tuple(c.unet_mult), c.res_blocks,
                                     tuple(c.attention_ds), c.head_dim, c.dropout),
                           dataset_info.in_channels, dataset_info.num_raters)

    def stages(self) -> list[Stage]:
        return [scheduled_stage(self.cfg)]

    def loss_at(self, model: nn.Module, image: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """sum over pixels and classes of KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) / batch at ``t [B]``."""
        sched = self.schedule
        xt = sample_onehot(sched.q_xt_x0(x0, t))
        phat = torch.softmax(model(xt, image, t.float()), dim=1)
        q = sched.posterior(xt, x0, t, t - 1)
        p = sched.model_posterior(xt, phat, t, t - 1)
        return categorical_kl(q, p).flatten(1).sum(1).mean()

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_io("ccdm", model, batch.image, batch.masks)
        check_batch(batch.masks, batch.rater_valid, "ccdm")
        mask, _ = draw_valid_rater(batch.masks, batch.rater_valid)
        x0 = F.one_hot(mask[:, 0].long(), K).permute(0, 3, 1, 2).float()
        t = torch.randint(1, self.cfg.diffusion_steps + 1, (x0.shape[0],), device=x0.device)
        return {"loss": self.loss_at(model, batch.image, x0, t)}

    def sample(self, model: nn.Module, images: torch.Tensor, steps: int) -> torch.Tensor:
        """Foreground maps ``[M,H,W]`` (phat of the last step) for ``images [M,C,H,W]``, one sample each."""
        sched = self.schedule
        m, dev = images.shape[0], images.device
        xt = sample_onehot(torch.full((m, K, *images.shape[-2:]), 1.0 / K, device=dev))
        taus = sample_times(steps, self.cfg.diffusion_steps)
        phat = xt
        for i, t_val in enumerate(taus):  # denoising steps (each batched over the chunk)
            s_val = taus[i + 1] if i + 1 < len(taus) else 0
            t = torch.full((m,), t_val, device=dev, dtype=torch.long)
            phat = torch.softmax(model(xt, images, t.float()), dim=1)
            if s_val == 0:
                break
            probs = sched.model_posterior(xt, phat, t, torch.full_like(t, s_val)).clamp_min(LOG_CLAMP)
            xt = sample_onehot(probs / probs.sum(dim=1, keepdim=True))
        return phat[:, 1]

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int,
                sample_steps: int | None = None) -> Prediction:
        n = int(n_samples)
        if n < 1:
            raise ValueError(f"ccdm.predict: n_samples must be >= 1, got {n_samples}")
        check_io("ccdm", model, images)
        steps = int(sample_steps or self.cfg.sample_steps)
        b = images.shape[0]
        rep = images.repeat_interleave(n, dim=0)  # image-major [B*N,C,H,W]
        chunk = self.cfg.sample_chunk
        maps = torch.cat([self.sample(model, rep[i:i + chunk], steps) for i in range(0, rep.shape[0], chunk)])
        return Prediction(samples=maps.reshape(b, n, *images.shape[-2:]).float())

    def profile_extra(self, model: nn.Module, images: torch.Tensor, n_samples: int, timer) -> list[dict]:
        """ms per sample for one image at the preset's ``sample_steps`` and at the published 250
        (``timer(fn) -> seconds``)."""
        n = int(n_samples)
        rows = []
        for key, steps in (("sample_ms", self.cfg.sample_steps),
                           ("sample_ms_published_steps", min(PUBLISHED_T, self.cfg.diffusion_steps))):
            seconds = timer(lambda steps=steps: self.predict(model, images[:1], n, sample_steps=steps))
            rows.append({"name": key, "value": 1000.0 * seconds / n, "unit": "ms/sample"})
        return rows


@register_method("ccdm")
def ccdm(cfg: CCDMConfig | None = None) -> CCDM:
    """CCDM (default: the published LIDC configuration, T = S = 250)."""
    return CCDM(cfg or CCDMConfig())


__all__ = ["CCDM", "CCDMConfig", "CCDMModel", "CategoricalSchedule", "categorical_kl", "ccdm", "sample_onehot", "sample_times"]
