"""Stochastic Segmentation Networks (Monteiro et al., NeurIPS 2020): a low-rank Gaussian over
the logit map, from one forward pass.

Network (``SSNModel``), as the LIDC fork of the authors' code builds it:
- the BatchNorm U-Net of ``mose.BNUNet``: ``filters`` [32, 64, 128, 192, 192, 192, 192], 3 x
  conv3x3-BN-ReLU per level, AvgPool2d down, bilinear up + skip concat;
- ``head_layers`` (3) x conv1x1-BN-ReLU with ``head_width`` (32) channels;
- three 1x1 heads: mean ``mu`` (K = 2 channels), ``log d`` (K channels) and the factor ``P``
  (K * ``rank`` channels, rank 10).

The logit map is flattened to D = K*H*W (class-major, the same order for mu, d and P), and

    eta ~ N(mu, P P^T + diag(d)),   d = exp(log d) + 1e-5,   P: D x rank.

Loss (``mc_samples`` = M draws, 20 published; y one valid rater per image):
eta_m = mu + P eps_m + sqrt(d) * xi_m (eps_m ~ N(0, I_rank), xi_m ~ N(0, I_D)),
l_m = sum over pixels of log softmax(eta_m)[y], L = -mean_batch(logsumexp_m l_m - log M), in
float32. The reparameterised draw is written out by hand: no ``LowRankMultivariateNormal`` is
built, so there is no Cholesky of I + P^T D^-1 P to fail for tiny or huge d (the published
code's "Covariance became not invertible" fallback). ``log_diag_max`` optionally clamps log d
(inf = off, the published model; LIDC has no ROI mask to keep the variance bounded).

Inference: the net runs once per image; N draws of eta are decoded in chunks of
``sample_chunk`` (image, sample) pairs (a loop over chunks, never over samples). A sample's
probability map is softmax(eta)[foreground] = sigmoid(eta_1 - eta_0), so ``p > 0.5`` is the
published argmax mask.

Parameters (1 input channel, K = 2, rank 10): 9,240,312 for the published sizes = the BN U-Net
(``mose.BNUNet`` with the same filters) 9,236,256 + three 1x1 conv-BN-ReLU of 32 channels
3 x (32*32 + 2*32) = 3,264 + heads (32 + 1) x (2 + 2 + 20) = 792 (the tests check each term).
The specification's "about 10M" (docs/more_methods.md) is an estimate from the same
configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..method import Method, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, integer, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .blocks import check_divisible, conv_bn_relu
from .common import check_batch, check_io, draw_valid_rater, remember_io
from .mose import PAPER_FILTERS, BNUNet
from .scheduled import ScheduledConfig, check_schedule, scheduled_stage

DIAG_EPS = 1e-5


class SSNModel(nn.Module):
    """U-Net + 1x1 head -> (mu ``[B,K,H,W]``, d ``[B,K,H,W]``, P ``[B,K,rank,H,W]``)."""

    def __init__(self, in_channels: int, filters: Sequence[int] = PAPER_FILTERS, convs_per_block: int = 3,
                 head_width: int = 32, head_layers: int = 3, rank: int = 10, classes: int = 2,
                 log_diag_max: float = math.inf) -> None:
        super().__init__()
        if rank < 1 or classes < 2 or head_width < 1 or head_layers < 0:
            raise ValueError(f"ssn: need rank >= 1, classes >= 2, head_width >= 1, head_layers >= 0; got "
                             f"{rank}, {classes}, {head_width}, {head_layers}")
        self.unet = BNUNet(in_channels, filters, convs_per_block)
        self.levels = len(self.unet.filters)
        feat = self.unet.filters[0]
        self.head = nn.Sequential(*[conv_bn_relu(feat if i == 0 else head_width, head_width, kernel=1)
                                    for i in range(head_layers)])
        width = head_width if head_layers else feat
        self.rank, self.classes, self.log_diag_max = rank, classes, float(log_diag_max)
        self.mu = nn.Conv2d(width, classes, 1)
        self.log_diag = nn.Conv2d(width, classes, 1)
        self.factor = nn.Conv2d(width, classes * rank, 1)

    def distribution(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mu [B,K,H,W], d [B,K,H,W], P [B,K,rank,H,W])`` in float32."""
        check_divisible(images, self.levels, "ssn")
        h = self.head(self.unet(images)[0])
        b, _, hh, ww = h.shape
        log_d = self.log_diag(h).float().clamp(max=self.log_diag_max)
        factor = self.factor(h).float().reshape(b, self.classes, self.rank, hh, ww)
        return self.mu(h).float(), log_d.exp() + DIAG_EPS, factor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Mean logits ``[B,K,H,W]`` (for tracing and DDP)."""
        return self.distribution(images)[0]


def draw_logits(mu: torch.Tensor, diag: torch.Tensor, factor: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` reparameterised draws ``[B,n,K,H,W]`` of mu + P eps + sqrt(d) xi (eps ~ N(0, I_rank),
    xi ~ N(0, I_D)); one einsum for all draws."""
    b, rank = mu.shape[0], factor.shape[2]
    eps = torch.randn(b, n, rank, device=mu.device, dtype=mu.dtype)
    xi = torch.randn(b, n, *mu.shape[1:], device=mu.device, dtype=mu.dtype)
    return mu[:, None] + torch.einsum("bkrhw,bnr->bnkhw", factor, eps) + diag.sqrt()[:, None] * xi


def mc_log_likelihood(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logsumexp_m l_m - log M`` per image ``[B]``, l_m = sum over pixels of
    log softmax(logits[:, m])[target]; ``logits [B,M,K,H,W]``, ``target [B,H,W]`` long."""
    m = logits.shape[1]
    logp = torch.log_softmax(logits.float(), dim=2)
    idx = target[:, None, None].expand(-1, m, 1, -1, -1)
    per_draw = logp.gather(2, idx).flatten(2).sum(-1)  # [B,M]
    return torch.logsumexp(per_draw, dim=1) - math.log(m)


@dataclass
class SSNConfig(ScheduledConfig):
    """``filters`` of the BN U-Net (image side divisible by 2**(len(filters)-1)), a 1x1 head of
    ``head_layers`` x ``head_width`` channels, covariance ``rank``, ``train_samples`` = M
    Monte-Carlo draws per step, ``log_diag_max`` (inf: no clamp), ``sample_chunk`` (image,
    sample) pairs per decoding pass."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-4, 1e-2, "paper: Adam 1e-3 (docs/more_methods.md); a decade either side (our reasoning)"),
        "rank": integer(2, 20, "paper: rank 10 (docs/more_methods.md); 2 to 20 around it (our reasoning)"),
    }


    lr: float = 1e-3
    schedule: Literal["cosine", "poly", "plateau", "constant"] = "constant"
    filters: tuple[int, ...] = PAPER_FILTERS
    convs_per_block: int = 3
    head_width: int = 32
    head_layers: int = 3
    rank: int = 10
    train_samples: int = 20
    log_diag_max: float = math.inf
    sample_chunk: int = 256


class SSN(Method):
    """SSN; DIVERSE: ``predict`` returns N draws of the logit Gaussian ``[B,N,H,W]``."""

    info = MethodInfo(
        name="ssn",
        paper="Monteiro et al., Stochastic Segmentation Networks: Modelling Spatially Correlated "
              "Aleatoric Uncertainty, NeurIPS 2020",
        capabilities=frozenset({Capability.DIVERSE}),
        config_cls=SSNConfig,
        description="low-rank + diagonal Gaussian over the logit map (rank 10), one forward pass; MC log-likelihood",
    )
    cfg: SSNConfig

    def __init__(self, cfg: SSNConfig) -> None:
        check_schedule(cfg, "ssn")
        if cfg.rank < 1 or cfg.train_samples < 1 or cfg.sample_chunk < 1 or cfg.head_width < 1 \
                or cfg.head_layers < 0 or len(cfg.filters) < 2 or min(cfg.filters) < 1 or cfg.convs_per_block < 1:
            raise ValueError(f"ssn: need rank, train_samples, sample_chunk, head_width, convs_per_block >= 1, "
                             f"head_layers >= 0 and >= 2 positive filters; got rank={cfg.rank}, "
                             f"train_samples={cfg.train_samples}, sample_chunk={cfg.sample_chunk}, "
                             f"head_width={cfg.head_width}, head_layers={cfg.head_layers}, filters={tuple(cfg.filters)}")
        if math.isnan(cfg.log_diag_max):
            raise ValueError("ssn: log_diag_max must be a number (inf: no clamp), got nan")
        super().__init__(cfg)

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        h, w = dataset_info.image_size
        f = 2 ** (len(c.filters) - 1)
        if h % f or w % f:
            raise ValueError(f"ssn: dataset {dataset_info.name!r} image size {h}x{w} is not divisible by "
                             f"2**(len(filters)-1) = {f}; use fewer filters")
        return remember_io(SSNModel(dataset_info.in_channels, c.filters, c.convs_per_block, c.head_width,
                                    c.head_layers, c.rank, 2, c.log_diag_max),
                           dataset_info.in_channels, dataset_info.num_raters)

    def stages(self) -> list[Stage]:
        return [scheduled_stage(self.cfg)]

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_io("ssn", model, batch.image, batch.masks)
        check_batch(batch.masks, batch.rater_valid, "ssn")
        mask, _ = draw_valid_rater(batch.masks, batch.rater_valid)
        mu, diag, factor = model.distribution(batch.image)
        logits = draw_logits(mu, diag, factor, self.cfg.train_samples)
        loglik = mc_log_likelihood(logits, mask[:, 0].long())
        loss = -loglik.mean()
        return {"loss": loss, "mean_log_diag": diag.log().mean().detach()}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        n = int(n_samples)
        if n < 1:
            raise ValueError(f"ssn.predict: n_samples must be >= 1, got {n_samples}")
        check_io("ssn", model, images)
        mu, diag, factor = model.distribution(images)
        per_chunk = max(1, self.cfg.sample_chunk // max(images.shape[0], 1))
        probs = [torch.sigmoid(d[:, :, 1] - d[:, :, 0])  # softmax(eta)[fg] for K = 2
                 for d in (draw_logits(mu, diag, factor, min(per_chunk, n - i)) for i in range(0, n, per_chunk))]
        return Prediction(samples=torch.cat(probs, dim=1))


@register_method("ssn")
def ssn(cfg: SSNConfig | None = None) -> SSN:
    """SSN (default: the LIDC configuration: BN U-Net [32..192] x 7 levels, rank 10, M = 20, Adam 1e-3)."""
    return SSN(cfg or SSNConfig())


__all__ = ["SSN", "SSNConfig", "SSNModel", "draw_logits", "mc_log_likelihood", "ssn"]
