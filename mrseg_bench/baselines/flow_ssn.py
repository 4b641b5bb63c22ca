"""Flow-SSN, continuous variant (Flow Stochastic Segmentation Networks, ICCV 2025,
arXiv 2507.18838): an image-conditioned Gaussian base over the logits, moved by a small flow.

Written from the paper's description and the specification in docs/more_methods.md (the
repository has no licence; nothing is copied). Networks (``FlowSSNModel``), both ``adm_unet.ADMUNet``:
- base B(x): in = image channels, ``base_channels`` (32), ``base_mult`` (1, 2, 4, 8), 1 res block
  per level, no attention, dropout 0.1, out 2K = [mu(x), log sigma(x)]. With ``learn_std``
  off (LIDC: ``--base_std=1``) sigma = ``base_std`` and log sigma is unused.
- flow v(z, t): in = K, ``flow_channels`` (16), ``flow_mult`` (1, 1, 1), 1 res block, no attention,
  dropout 0.1, time-conditioned (sinusoidal embedding of 1000 t), out K logits. It does not see
  the image: the image enters only through mu(x).

Loss (one valid rater y per image, one-hot over K = 2): u = mu(x) + sigma eps (reparameterised,
so gradients reach B), t ~ U(0, 1) per example, z_t = (1 - t) u + t y, and the per-example
log-likelihood is the pixel MEAN of log softmax(v(z_t, t))[y]. With M = ``train_samples`` draws
of u (and t): logsumexp_m - log M; L = -batch mean. M = 1 (LIDC) is plain cross-entropy
predicting the endpoint y.

Sampling: u ~ N(mu(x), sigma^2) per sample; Euler-integrate dz/dt = softmax(v(z, t)) - u from
z_0 = u over ``sample_steps`` steps (50 at test, NFE 50), u fixed; then z_1 minus its per-pixel
minimum over K, renormalised (a constant pixel gives 1/K). The sample's map is that
foreground share (``> 0.5`` is the published argmax). The base net runs once per image; the N
samples run through the flow in chunks of ``sample_chunk`` (image, sample) pairs (a loop over
chunks and Euler steps, never over samples).

Not reproduced: the EMA of the weights (0.9999), AdamW's decoupled weight decay (the engine's
Adam takes ``weight_decay`` as L2) and the 2,000-step linear warm-up; grad-clip 10 is
``run.grad_clip``.

Parameters (1 input channel, K = 2): 9,399,716 base + 95,522 flow = 9,495,238 with the published
sizes (counted from this layout; the specification estimates "roughly 11M + 0.1M", UNVERIFIED). The
base count follows from the ADM layout: 4 levels of channels 32/64/128/256, each with one
ResBlock down and two up (skip concat), stride-2 conv downsampling, nearest + conv upsampling,
two middle ResBlocks at 256 (tests/test_new_methods.py recounts it by formula).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..method import Method, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .adm_unet import ADMUNet
from .common import check_batch, check_io, draw_valid_rater, remember_io
from .scheduled import ScheduledConfig, check_schedule, scheduled_stage

K = 2


class FlowSSNModel(nn.Module):
    """Base net B(x) -> (mu, log sigma) and flow net v(z, t) -> K logits."""

    def __init__(self, in_channels: int, base_channels: int = 32, base_mult: tuple[int, ...] = (1, 2, 4, 8),
                 flow_channels: int = 16, flow_mult: tuple[int, ...] = (1, 1, 1), res_blocks: int = 1,
                 dropout: float = 0.1, base_std: float = 1.0, learn_std: bool = False) -> None:
        super().__init__()
        self.base = ADMUNet(in_channels, 2 * K, base_channels, base_mult, res_blocks, dropout=dropout)
        self.flow = ADMUNet(K, K, flow_channels, flow_mult, res_blocks, dropout=dropout, time_conditioned=True)
        self.levels = max(len(base_mult), len(flow_mult))
        self.base_std, self.learn_std = float(base_std), bool(learn_std)

    def base_dist(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)`` each ``[B,K,H,W]`` float32."""
        out = self.base(images).float()
        mu, log_sigma = out[:, :K], out[:, K:]
        sigma = log_sigma.clamp(-10, 10).exp() if self.learn_std else torch.full_like(mu, self.base_std)
        return mu, sigma

    def velocity_logits(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Flow logits ``[M,K,H,W]`` at ``z [M,K,H,W]``, ``t [M]`` in [0, 1]."""
        return self.flow(z, t * 1000.0).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of one Euler step from the base mean (for tracing and DDP)."""
        mu, _ = self.base_dist(images)
        return self.velocity_logits(mu, torch.zeros(mu.shape[0], device=mu.device))


def flow_log_likelihood(model: FlowSSNModel, mu: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor,
                        draws: int) -> torch.Tensor:
    """Per-image ``logsumexp_m l_m - log M`` ``[B]``, l_m = pixel mean of
    log softmax(v(z_t, t))[y], z_t = (1 - t) u + t onehot(y), u = mu + sigma eps."""
    b = mu.shape[0]
    onehot = torch.nn.functional.one_hot(target, K).permute(0, 3, 1, 2).float()  # [B,K,H,W]
    u = mu[:, None] + sigma[:, None] * torch.randn(b, draws, *mu.shape[1:], device=mu.device)
    t = torch.rand(b, draws, device=mu.device)
    z = (1 - t)[..., None, None, None] * u + t[..., None, None, None] * onehot[:, None]
    logits = model.velocity_logits(z.flatten(0, 1), t.flatten()).reshape(b, draws, K, *mu.shape[-2:])
    logp = torch.log_softmax(logits, dim=2).gather(2, target[:, None, None].expand(-1, draws, 1, -1, -1))
    per_draw = logp.flatten(2).mean(-1)  # [B,M]
    return torch.logsumexp(per_draw, dim=1) - torch.log(torch.tensor(float(draws)))


def euler_sample(model: FlowSSNModel, u: torch.Tensor, steps: int) -> torch.Tensor:
    """z_1 from z_0 = u by ``steps`` Euler steps of dz/dt = softmax(v(z, t)) - u; then minus the
    per-pixel minimum over K and renormalised -> ``[M,K,H,W]`` shares summing to 1."""
    z, dt = u, 1.0 / steps
    for i in range(steps):  # Euler steps (each one batched over every sample of the chunk)
        t = torch.full((u.shape[0],), i * dt, device=u.device)
        z = z + dt * (torch.softmax(model.velocity_logits(z, t), dim=1) - u)
    z = z - z.amin(dim=1, keepdim=True)
    total = z.sum(dim=1, keepdim=True)
    return torch.where(total > 0, z / total.clamp_min(1e-30), torch.full_like(z, 1.0 / K))


@dataclass
class FlowSSNConfig(ScheduledConfig):
    """Base and flow U-Net sizes, dropout, base sigma (``base_std``, or learned with
    ``learn_std``), ``train_samples`` = M draws per step, ``sample_steps`` Euler steps (NFE) per
    sample, ``sample_chunk`` (image, sample) pairs per flow pass."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "paper: AdamW 1e-4 (docs/more_methods.md); a decade either side (our reasoning)"),
        "base_std": log_uniform(0.5, 2.0, "paper: base distribution sigma 1 (docs/more_methods.md); a factor of 2 either side (our reasoning)"),
    }


    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "poly", "plateau", "constant"] = "constant"
    base_channels: int = 32
    base_mult: tuple[int, ...] = (1, 2, 4, 8)
    flow_channels: int = 16
    flow_mult: tuple[int, ...] = (1, 1, 1)
    res_blocks: int = 1
    dropout: float = 0.1
    base_std: float = 1.0
    learn_std: bool = False
    train_samples: int = 1
    sample_steps: int = 50
    sample_chunk: int = 128


class FlowSSN(Method):
    """Flow-SSN (continuous); DIVERSE: ``predict`` returns N flowed samples ``[B,N,H,W]``."""

    info = MethodInfo(
        name="flow_ssn",
        paper="Flow Stochastic Segmentation Networks (continuous variant), ICCV 2025, arXiv 2507.18838",
        capabilities=frozenset({Capability.DIVERSE}),
        config_cls=FlowSSNConfig,
        description="diagonal Gaussian base over logits from an ADM U-Net + a small time-conditioned flow "
                    "(Euler, NFE sample_steps)",
    )
    cfg: FlowSSNConfig

    def __init__(self, cfg: FlowSSNConfig) -> None:
        check_schedule(cfg, "flow_ssn")
        ints = {"base_channels": cfg.base_channels, "flow_channels": cfg.flow_channels, "res_blocks": cfg.res_blocks,
                "train_samples": cfg.train_samples, "sample_steps": cfg.sample_steps, "sample_chunk": cfg.sample_chunk}
        bad = [f"{k}={v}" for k, v in ints.items() if v < 1]
        if bad or not cfg.base_mult or not cfg.flow_mult or min((*cfg.base_mult, *cfg.flow_mult)) < 1:
            raise ValueError(f"flow_ssn: need positive sizes and steps; got {', '.join(bad) or ''} "
                             f"base_mult={tuple(cfg.base_mult)} flow_mult={tuple(cfg.flow_mult)}".replace("  ", " "))
        if not 0 <= cfg.dropout < 1 or not cfg.base_std > 0:
            raise ValueError(f"flow_ssn: need 0 <= dropout < 1 and base_std > 0; got {cfg.dropout}, {cfg.base_std}")
        super().__init__(cfg)

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        h, w = dataset_info.image_size
        f = 2 ** (max(len(c.base_mult), len(c.flow_mult)) - 1)
        if h % f or w % f:
            raise ValueError(f"flow_ssn: dataset {dataset_info.name!r} image size {h}x{w} is not divisible by "
                             f"2**(levels-1) = {f}; use shorter base_mult / flow_mult")
        return remember_io(FlowSSNModel(dataset_info.in_channels, c.base_channels, tuple(c.base_mult), c.flow_channels,
                                        tuple(c.flow_mult), c.res_blocks, c.dropout, c.base_std, c.learn_std),
                           dataset_info.in_channels, dataset_info.num_raters)

    def stages(self) -> list[Stage]:
        return [scheduled_stage(self.cfg)]

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_io("flow_ssn", model, batch.image, batch.masks)
        check_batch(batch.masks, batch.rater_valid, "flow_ssn")
        mask, _ = draw_valid_rater(batch.masks, batch.rater_valid)
        mu, sigma = model.base_dist(batch.image)
        loss = -flow_log_likelihood(model, mu, sigma, mask[:, 0].long(), self.cfg.train_samples).mean()
        return {"loss": loss}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        n = int(n_samples)
        if n < 1:
            raise ValueError(f"flow_ssn.predict: n_samples must be >= 1, got {n_samples}")
        check_io("flow_ssn", model, images)
        mu, sigma = model.base_dist(images)
        b = images.shape[0]
        u = mu[:, None] + sigma[:, None] * torch.randn(b, n, *mu.shape[1:], device=mu.device)  # all noise up front
        u = u.flatten(0, 1)  # image-major [B*N,K,H,W]
        chunk = self.cfg.sample_chunk
        shares = torch.cat([euler_sample(model, u[i:i + chunk], self.cfg.sample_steps)[:, 1]
                            for i in range(0, u.shape[0], chunk)])  # loop over chunks of pairs
        return Prediction(samples=shares.reshape(b, n, *mu.shape[-2:]))


@register_method("flow_ssn")
def flow_ssn(cfg: FlowSSNConfig | None = None) -> FlowSSN:
    """Flow-SSN, continuous (default: the LIDC configuration; 50 Euler steps)."""
    return FlowSSN(cfg or FlowSSNConfig())


__all__ = ["FlowSSN", "FlowSSNConfig", "FlowSSNModel", "euler_sample", "flow_log_likelihood", "flow_ssn"]
