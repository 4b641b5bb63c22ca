"""TAB (Liao et al., MICCAI 2023): transformer-based annotation-bias-aware segmentation.

Network (``TABModel``), DETR-style:
- The shared smp U-Net (``unet.build_unet``, ResNet34 encoder by default): the encoder's
  stride-32 features -> 1x1 conv to ``hidden`` (256) -> + 2-D sine positional encoding -> one
  ``nn.TransformerEncoderLayer`` (8 heads). R + 1 learned queries (one per rater, the last one
  "global") -> one ``nn.TransformerDecoderLayer`` over that memory.
- Pixel-embedding head: the same U-Net's decoder (U-Net-style, skips from the encoder) -> 1x1
  conv to ``embed_dim`` (32) channels ``E [B,32,H,W]``.
- Each query q parameterises a low-rank Gaussian over the logit map (as in stochastic
  segmentation networks): three MLPs map the query to vectors ``m_q``, ``U_q`` (``rank`` of them)
  and ``d_q`` in R^32, and per pixel p::

      mean_q(p) = m_q . E(p),   P_q(p, k) = U_qk . E(p) (k < rank = 7),
      D_q(p) = softplus(d_q . E(p)) + 1e-4,   logits ~ N(mean_q, P_q P_q^T + diag(D_q))

  sampled with the reparameterisation ``mean + P eps1 + sqrt(D) * eps2`` (eps1 ~ N(0, I_rank),
  eps2 ~ N(0, I_pixels)), all queries and samples in one batched einsum.

Loss (S = ``train_samples`` draws per query; y_r a valid rater's mask; NLL_s(y) = sum over
pixels of BCE(logits_s, y))::

    L = mean_r L(global, y_r) + lambda * mean_r L(query_r, y_r)
    L(q, y) = -(1/HW) log (1/S) sum_s exp(-NLL_s(y))     ("logmeanexp", default; the MC
              log-likelihood of SSNs, which lets the samples spread over the raters)
    L(q, y) = (1/HW) mean_s NLL_s(y)                        ("mean": plain BCE of the samples)

Outputs: ``personalized`` = sigmoid of the rater queries' mean logits ``[B,R,H,W]``,
``samples`` = N draws of the global query ``[B,N,H,W]``, ``consensus`` = sigmoid of the global
mean ``[B,H,W]``. The N draws are one batched expression whose temporaries are the size of the
output ``[B,N,H*W]`` (the image is encoded once), so no chunking is needed: N = 50 at 128x128
and batch 12 is ~40 MB per tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..method import Method, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .common import check_batch, check_io, remember_io
from .scheduled import ScheduledConfig, check_schedule, scheduled_stage
from .unet import DEFAULT_DECODER_CHANNELS, build_unet


def sine_positions(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """DETR's 2-D sine encoding, ``[h*w, dim]`` (dim/2 channels for y, dim/2 for x)."""
    half = dim // 2
    freq = 10000 ** (torch.arange(half // 2, device=device, dtype=torch.float32) * 2 / half)
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 1) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 1) / w * 2 * math.pi
    py = torch.cat([torch.sin(ys[:, None] / freq), torch.cos(ys[:, None] / freq)], dim=1)  # [h,half]
    px = torch.cat([torch.sin(xs[:, None] / freq), torch.cos(xs[:, None] / freq)], dim=1)  # [w,half]
    pos = torch.cat([py[:, None].expand(h, w, half), px[None].expand(h, w, half)], dim=2)
    return pos.reshape(h * w, 2 * half)


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


def lowrank_sample(mean: torch.Tensor, factor: torch.Tensor, diag: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` draws of ``N(mean, factor factor^T + diag(diag))`` per leading index, batched.

    ``mean [...,P]``, ``factor [...,P,K]``, ``diag [...,P]`` (variances > 0) -> ``[...,n,P]``.
    """
    lead = mean.shape[:-1]
    eps1 = torch.randn(*lead, n, factor.shape[-1], device=mean.device, dtype=mean.dtype)
    eps2 = torch.randn(*lead, n, mean.shape[-1], device=mean.device, dtype=mean.dtype)
    return (mean[..., None, :] + torch.einsum("...pk,...nk->...np", factor, eps1)
            + diag.sqrt()[..., None, :] * eps2)


class TABModel(nn.Module):
    """See the module docstring. ``distribution(images)`` gives every query's Gaussian."""

    def __init__(self, in_channels: int, num_raters: int, encoder_name: str = "resnet34",
                 encoder_weights: str | None = None,
                 decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS, hidden: int = 256,
                 heads: int = 8, ffn: int = 2048, embed_dim: int = 32, rank: int = 7,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if num_raters < 1 or hidden % heads or hidden % 4 or embed_dim < 1 or rank < 1:
            raise ValueError(f"tab: need num_raters >= 1, hidden divisible by heads and by 4, embed_dim >= 1, "
                             f"rank >= 1; got {num_raters}, {hidden}, {heads}, {embed_dim}, {rank}")
        net = build_unet(in_channels, encoder_name=encoder_name, encoder_weights=encoder_weights,
                         headless=True, decoder_channels=decoder_channels)
        self.encoder, self.decoder = net.encoder, net.decoder
        self.num_raters, self.rank, self.embed_dim = num_raters, rank, embed_dim
        self.input_proj = nn.Conv2d(int(self.encoder.out_channels[-1]), hidden, 1)
        self.transformer_encoder = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoderLayer(hidden, heads, ffn, dropout, batch_first=True)
        self.queries = nn.Embedding(num_raters + 1, hidden)
        self.pixel_proj = nn.Conv2d(int(decoder_channels[-1]), embed_dim, 1)
        self.mean_head = mlp(hidden, hidden, embed_dim)
        self.factor_head = mlp(hidden, hidden, embed_dim * rank)
        self.diag_head = mlp(hidden, hidden, embed_dim)

    def _decode_pixels(self, feats: list[torch.Tensor]) -> torch.Tensor:
        try:  # smp >= 0.4 takes the feature list, older versions unpack it
            return self.decoder(feats)
        except TypeError:
            return self.decoder(*feats)

    def distribution(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean [B,Q,P], factor [B,Q,P,rank], diag [B,Q,P])`` with Q = R + 1 (global last),
        P = H*W pixels, diag the per-pixel variances."""
        feats = self.encoder(images)
        src = self.input_proj(feats[-1])
        b, c, h, w = src.shape
        tokens = src.flatten(2).transpose(1, 2) + sine_positions(h, w, c, src.device).to(src.dtype)[None]
        memory = self.transformer_encoder(tokens)
        # repeat, not expand: a view of the weight made under no_grad trips FlopCounterMode's hooks
        queries = self.queries.weight.to(memory.dtype).unsqueeze(0).repeat(b, 1, 1)
        q = self.transformer_decoder(queries, memory)
        emb = self.pixel_proj(self._decode_pixels(feats)).flatten(2)  # [B,E,P]
        scale = 1.0 / math.sqrt(self.embed_dim)
        mean = torch.einsum("bqe,bep->bqp", self.mean_head(q), emb)
        u = self.factor_head(q).reshape(b, -1, self.embed_dim, self.rank)
        factor = torch.einsum("bqek,bep->bqpk", u, emb) * scale
        diag = F.softplus(torch.einsum("bqe,bep->bqp", self.diag_head(q), emb)) + 1e-4
        return mean.float(), factor.float(), diag.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Mean logits of every query ``[B,R+1,H,W]`` (for tracing and DDP)."""
        mean, _, _ = self.distribution(images)
        return mean.reshape(*mean.shape[:2], *images.shape[-2:])


@dataclass
class TABConfig(ScheduledConfig):
    """``lam`` weighs the per-rater queries' loss; ``train_samples`` draws per query in training."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(5e-6, 5e-4, "paper: Adam 5e-5 (docs/more_methods.md); a decade either side (our reasoning)"),
        "lam": log_uniform(0.25, 4.0, "paper: lambda = 1 (docs/more_methods.md); x/4 either side (our reasoning)"),
    }

    lr: float = 5e-5
    schedule: Literal["cosine", "poly", "plateau", "constant"] = "poly"
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    hidden: int = 256
    heads: int = 8
    ffn: int = 2048
    embed_dim: int = 32
    rank: int = 7
    lam: float = 1.0
    train_samples: int = 10
    loss_form: Literal["logmeanexp", "mean"] = "logmeanexp"


def sample_nll(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``sum_p BCE(logits[..., s, p], masks[..., r, p])`` for all (s, r): ``logits [B,S,P]``,
    ``masks [B,R,P]`` -> ``[B,S,R]``; BCE(l, y) = softplus(l) - l y, so one einsum, no
    [B,S,R,P] tensor."""
    return F.softplus(logits).sum(-1)[..., None] - torch.einsum("bsp,brp->bsr", logits, masks)


class TAB(Method):
    """TAB; DIVERSE (global samples), PERSONALIZED (rater means), CONSENSUS (global mean)."""

    info = MethodInfo(
        name="tab",
        paper="Liao et al., Transformer-based Annotation Bias-aware Medical Image Segmentation, MICCAI 2023",
        capabilities=frozenset({Capability.DIVERSE, Capability.PERSONALIZED, Capability.CONSENSUS}),
        config_cls=TABConfig,
        description="ResNet34 + 1-layer transformer, R+1 queries, rank-7 low-rank Gaussian logits per query",
    )
    cfg: TABConfig

    def __init__(self, cfg: TABConfig) -> None:
        check_schedule(cfg, "tab")
        if cfg.train_samples < 1 or cfg.lam < 0:
            raise ValueError(f"tab: need train_samples >= 1 and lam >= 0; got {cfg.train_samples}, {cfg.lam}")
        if cfg.loss_form not in ("logmeanexp", "mean"):
            raise ValueError(f"tab: loss_form must be 'logmeanexp' or 'mean', got {cfg.loss_form!r}")
        super().__init__(cfg)

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        model = TABModel(dataset_info.in_channels, dataset_info.num_raters, c.encoder_name, c.encoder_weights,
                         c.decoder_channels, c.hidden, c.heads, c.ffn, c.embed_dim, c.rank)
        return remember_io(model, dataset_info.in_channels, dataset_info.num_raters)

    def stages(self) -> list[Stage]:
        return [scheduled_stage(self.cfg)]

    def _query_loss(self, nll: torch.Tensor, pixels: int) -> torch.Tensor:
        """``nll [..., S]`` -> per-(image, rater) loss ``[...]`` (see module docstring)."""
        if self.cfg.loss_form == "mean":
            return nll.mean(-1) / pixels
        s = nll.shape[-1]
        return -(torch.logsumexp(-nll, dim=-1) - math.log(s)) / pixels

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_io("tab", model, batch.image, batch.masks)
        check_batch(batch.masks, batch.rater_valid, "tab")
        b, r = batch.masks.shape[:2]
        if r != model.num_raters:
            raise ValueError(f"tab: the model was built for {model.num_raters} raters, the batch has {r}")
        mean, factor, diag = model.distribution(batch.image)
        logits = lowrank_sample(mean, factor, diag, self.cfg.train_samples)  # [B,Q,S,P]
        y = batch.masks.flatten(2).float()  # [B,R,P]
        pixels = y.shape[-1]
        valid = batch.rater_valid.float()
        g_nll = sample_nll(logits[:, r], y).transpose(1, 2)  # [B,R,S]: global samples vs every rater
        g_loss = (self._query_loss(g_nll, pixels) * valid).sum() / valid.sum()
        # rater r's samples vs rater r: the diagonal of sample_nll, computed directly
        r_nll = (F.softplus(logits[:, :r]).sum(-1) - torch.einsum("brsp,brp->brs", logits[:, :r], y))
        p_loss = (self._query_loss(r_nll, pixels) * valid).sum() / valid.sum()
        loss = g_loss + self.cfg.lam * p_loss
        return {"loss": loss, "global": g_loss.detach(), "personal": p_loss.detach()}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        n = int(n_samples)
        if n < 1:
            raise ValueError(f"tab.predict: n_samples must be >= 1, got {n_samples}")
        check_io("tab", model, images)
        b, _, h, w = images.shape
        mean, factor, diag = model.distribution(images)
        r = model.num_raters
        draws = torch.sigmoid(lowrank_sample(mean[:, r], factor[:, r], diag[:, r], n))  # [B,N,P]
        return Prediction(samples=draws.reshape(b, n, h, w),
                          personalized=torch.sigmoid(mean[:, :r]).reshape(b, r, h, w),
                          consensus=torch.sigmoid(mean[:, r]).reshape(b, h, w))


@register_method("tab")
def tab(cfg: TABConfig | None = None) -> TAB:
    """TAB (default: ResNet34, hidden 256, 8 heads, rank 7, Adam 5e-5 with poly 0.9 decay)."""
    return TAB(cfg or TABConfig())
