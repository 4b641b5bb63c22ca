"""Confusion-matrix baselines ``cm.global`` and ``cm.pixel`` (Zhang et al., "Disentangling
human error from the ground truth in segmentation of medical images", NeurIPS 2020).

Model: an smp U-Net (``build_unet``, any encoder) whose segmentation head gives ``classes`` logits;
the "true" label distribution is ``p = softmax(logits)`` ``[B,C,H,W]`` (``classes=1``: ``p =
sigmoid``). Each rater r has a confusion matrix ``A_r`` (``A_r[i, j]`` = P(rater says i | truth
j)); ``softplus`` then each column normalised to sum 1. Rater r's noisy prediction is ``A_r p``
per pixel.

- ``cm.global``: ``A_r`` is one learnable C x C matrix per rater (initialised to the identity),
  the same at every pixel.
- ``cm.pixel``: ``A_r`` comes per pixel from a head on the 16-channel decoder features: two
  double-conv blocks (conv3x3 without bias, InstanceNorm(affine), PReLU with one slope; twice
  per block), conv1x1 to C*C channels. The R heads run as grouped convolutions (one pass for all
  raters, no loop).

Loss = reconstruction of the raters' masks by their noisy predictions + ``trace_weight`` *
sign * mean trace(A_r) (over pixels and valid (image, rater) pairs). Training has two ``Stage``s
as in the original code: ``"warmup"`` (``switch_epoch`` epochs; the trace is maximised, sign -1,
or left alone with ``warmup_trace="ignore"``; the CM parameters at ``cm_lr_warmup`` = 1e-2) and
``"train"`` (``epochs`` epochs; the trace is minimised, sign +1; the CM parameters at ``cm_lr`` =
1e-4). The backbone trains at ``lr`` in both. ``switch_epoch=0`` drops the warm-up stage.

Reconstruction (``loss``): ``"ce"`` = cross-entropy of the noisy class distribution (the paper),
``"gdl"`` = generalised Dice of the noisy foreground probability (the D-Persona code); ``"auto"``
= ce for two classes, gdl for one. ``recon_raters``: ``"all"`` (default) reconstructs every valid
rater of every image (masked with ``rater_valid``); ``"one"`` one valid rater drawn per image
(the D-Persona code's protocol). Default ``"all"``: the backbone and all R matrices are computed
for every image anyway, so using every annotation costs nothing extra and gives every rater's
matrix a gradient at each step (with ``"one"`` each matrix sees 1/R of the images).

Outputs: ``consensus`` = foreground of p ``[B,H,W]``; ``personalized`` = each rater's noisy
foreground probability ``[B,R,H,W]``.

``classes=1`` reproduces the D-Persona code's DEGENERATE form: every matrix is 1 x 1, normalises
to exactly 1 (the identity), so every rater output equals the backbone's output (a plain U-Net
with a sigmoid) and the trace term is the constant 1. The published CM rows of the D-Persona
table come from that form (24,430,101 / 24,467,557 parameters with ResNet34, 1 channel, 4
raters). The default, two classes with trace minimisation, is the paper's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..method import Method, MethodConfig, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .common import check_io, per_rater_generalised_dice_loss, remember_io, select_raters
from .unet import DEFAULT_DECODER_CHANNELS, HeadlessUnet, build_unet

WARMUP, TRAIN = "warmup", "train"
DEGENERATE_NOTE = "classes=1: the D-Persona code's degenerate 1x1 form (identity CMs, every rater = plain U-Net)"


@dataclass
class CMConfig(MethodConfig):
    """See the module docstring. ``epochs`` counts the trace-minimisation stage."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "reference: D-Persona's comparison trains the baselines with Adam 1e-4 (docs/more-baselines.md); a decade either side (our reasoning)"),
        "cm_lr": log_uniform(1e-5, 1e-3, "reference code: the CM heads at lr 1e-4 after the switch (docs/more-baselines.md); a decade either side (our reasoning)"),
        "trace_weight": log_uniform(0.01, 1.0, "paper: alpha = 1 (docs/more-baselines.md); down to 0.01 because the trace term can dominate the reconstruction (our reasoning)"),
    }

    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    classes: int = 2
    loss: Literal["auto", "ce", "gdl"] = "auto"
    trace_weight: float = 1.0
    switch_epoch: int = 1
    warmup_trace: Literal["maximise", "ignore"] = "maximise"
    cm_lr_warmup: float = 1e-2
    cm_lr: float = 1e-4
    recon_raters: Literal["all", "one"] = "all"
    pixel_head_channels: int = 16


class GroupPReLU(nn.Module):
    """PReLU with one slope per group of channels (per rater): ``[B, G*F, H, W]``."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((groups,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.weight.shape[0]
        slope = self.weight.repeat_interleave(x.shape[1] // g)[None, :, None, None]
        return torch.where(x >= 0, x, slope * x)


class GlobalCM(nn.Module):
    """One C x C matrix per rater, identity init; ``forward`` -> softplus of it ``[1,R,C,C,1,1]``."""

    def __init__(self, num_raters: int, classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(classes).repeat(num_raters, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.weight)[None, :, :, :, None, None]


class PixelCM(nn.Module):
    """R per-pixel CM heads as grouped convs; ``forward(features)`` -> softplus ``[B,R,C,C,H,W]``.

    Per rater: [conv3x3 (no bias) -> InstanceNorm(affine) -> PReLU] x 4 (two double-conv
    blocks), conv1x1 -> C*C. The first conv maps the shared features to R*F channels at once."""

    def __init__(self, num_raters: int, classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        r, f = num_raters, width
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(in_channels if i == 0 else r * f, r * f, 3, padding=1, bias=False,
                                 groups=1 if i == 0 else r),
                       nn.InstanceNorm2d(r * f, affine=True), GroupPReLU(r)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(r * f, r * classes * classes, 1, groups=r)
        self.num_raters, self.classes = r, classes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        c = self.classes
        return F.softplus(self.out(self.body(features))).view(b, self.num_raters, c, c, h, w)


class CMNet(nn.Module):
    """U-Net + segmentation head + confusion matrices. ``forward(images)`` -> ``(p [B,C,H,W],
    A [B|1, R, C, C, H|1, W|1])``: true-label probabilities and column-normalised matrices."""

    def __init__(self, unet: nn.Module, cm: nn.Module, classes: int, uses_features: bool) -> None:
        super().__init__()
        self.features = HeadlessUnet(unet.encoder, unet.decoder, int(unet.segmentation_head[0].in_channels))
        self.segmentation_head = unet.segmentation_head
        self.cm = cm
        self.classes = classes
        self.uses_features = uses_features

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(images)
        logits = self.segmentation_head(feats).float()
        p = torch.sigmoid(logits) if self.classes == 1 else torch.softmax(logits, dim=1)
        raw = self.cm(feats).float()  # softplus already applied
        return p, raw / raw.sum(dim=2, keepdim=True)

    def cm_parameters(self) -> list[nn.Parameter]:
        return list(self.cm.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [*self.features.parameters(), *self.segmentation_head.parameters()]


def noisy_foreground(p: torch.Tensor, cms: torch.Tensor) -> torch.Tensor:
    """Each rater's noisy class distribution ``q_r = A_r p`` per pixel: ``[B,R,C,H,W]``."""
    return (cms * p[:, None, None]).sum(dim=3)


class ConfusionMatrixMethod(Method):
    cfg: CMConfig
    pixel: bool = False

    def __init__(self, cfg: CMConfig) -> None:
        name = self.info.name
        if cfg.classes not in (1, 2):
            raise ValueError(f"{name}: classes must be 1 (D-Persona's degenerate form) or 2, got {cfg.classes}")
        if cfg.switch_epoch < 0 or cfg.epochs < 0 or cfg.switch_epoch + cfg.epochs < 1:
            raise ValueError(f"{name}: switch_epoch and epochs must be >= 0 with at least one epoch, "
                             f"got {cfg.switch_epoch}, {cfg.epochs}")
        if cfg.trace_weight < 0 or cfg.cm_lr < 0 or cfg.cm_lr_warmup < 0:
            raise ValueError(f"{name}: trace_weight, cm_lr and cm_lr_warmup must be >= 0")
        for key, allowed in (("loss", ("auto", "ce", "gdl")), ("warmup_trace", ("maximise", "ignore")),
                             ("recon_raters", ("all", "one"))):
            if getattr(cfg, key) not in allowed:
                raise ValueError(f"{name}: {key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")
        super().__init__(cfg)

    def resolved_loss(self) -> str:
        if self.cfg.loss != "auto":
            return self.cfg.loss
        return "ce" if self.cfg.classes == 2 else "gdl"

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        if dataset_info.num_raters < 1:
            raise ValueError(f"{self.info.name}: dataset {dataset_info.name!r} has no raters")
        unet = build_unet(dataset_info.in_channels, classes=c.classes, encoder_name=c.encoder_name,
                          encoder_weights=c.encoder_weights, decoder_channels=c.decoder_channels)
        r = dataset_info.num_raters
        cm = (PixelCM(r, c.classes, int(c.decoder_channels[-1]), c.pixel_head_channels) if self.pixel
              else GlobalCM(r, c.classes))
        return remember_io(CMNet(unet, cm, c.classes, self.pixel), dataset_info.in_channels, r)

    def stages(self) -> list[Stage]:
        c = self.cfg
        out = []
        if c.switch_epoch > 0:
            sign = -1.0 if c.warmup_trace == "maximise" else 0.0
            out.append(Stage(WARMUP, c.switch_epoch, c.lr, extra={"trace_sign": sign, "cm_lr": c.cm_lr_warmup}))
        if c.epochs > 0:
            out.append(Stage(TRAIN, c.epochs, c.lr, extra={"trace_sign": 1.0, "cm_lr": c.cm_lr}))
        return out

    def param_groups(self, model: nn.Module, stage: Stage) -> list[dict[str, Any]]:
        net = getattr(model, "_orig_mod", model)
        return [{"params": net.backbone_parameters(), "lr": stage.lr, "name": "unet"},
                {"params": net.cm_parameters(), "lr": float(stage.extra.get("cm_lr", stage.lr)), "name": "cm"}]

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        name = self.info.name
        check_io(name, model, batch.image, batch.masks)
        index, target, valid = select_raters(self.cfg.recon_raters, batch.masks, batch.rater_valid, where=name)
        p, cms = model(batch.image)
        noisy = noisy_foreground(p, cms)  # [B,R,C,H,W]
        h, w = noisy.shape[-2:]
        fg = noisy[:, :, -1].gather(1, index[:, :, None, None].expand(-1, -1, h, w))  # [B,K,H,W]
        vw = valid.float()
        if self.resolved_loss() == "gdl":
            recon = per_rater_generalised_dice_loss(fg, target, valid, from_logits=False)
        else:
            ll = target * fg.clamp_min(1e-7).log() + (1 - target) * (1 - fg).clamp_min(1e-7).log()
            recon = -(ll.mean(dim=(2, 3)) * vw).sum() / vw.sum()
        trace = torch.diagonal(cms, dim1=2, dim2=3).sum(-1).mean(dim=(-2, -1))  # [B|1,R]
        rv = batch.rater_valid.float()
        trace = (trace.expand_as(rv) * rv).sum() / rv.sum()
        sign = float(stage.extra.get("trace_sign", 1.0))
        loss = recon + sign * self.cfg.trace_weight * trace
        return {"loss": loss, "recon": recon.detach(), "trace": trace.detach()}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        """consensus = P(foreground) ``[B,H,W]``; personalized = each rater's noisy foreground
        probability ``[B,R,H,W]``. Deterministic: ``n_samples`` is not used. The caller sets eval mode."""
        check_io(self.info.name, model, images)
        p, cms = model(images)
        noisy = noisy_foreground(p, cms)
        return Prediction(personalized=noisy[:, :, -1].clamp(0, 1), consensus=p[:, -1].clamp(0, 1))


class GlobalConfusion(ConfusionMatrixMethod):
    info = MethodInfo(
        "cm.global",
        "Zhang et al., Disentangling Human Error from the Ground Truth in Segmentation of Medical Images, NeurIPS 2020",
        frozenset({Capability.PERSONALIZED, Capability.CONSENSUS}), CMConfig,
        f"one global confusion matrix per rater (trace minimised after a warm-up); {DEGENERATE_NOTE}",
    )


class PixelConfusion(ConfusionMatrixMethod):
    pixel = True
    info = MethodInfo(
        "cm.pixel",
        "Zhang et al., Disentangling Human Error from the Ground Truth in Segmentation of Medical Images, NeurIPS 2020",
        frozenset({Capability.PERSONALIZED, Capability.CONSENSUS}), CMConfig,
        f"per-pixel confusion matrices from a head per rater (trace minimised after a warm-up); {DEGENERATE_NOTE}",
    )


@register_method("cm.global")
def cm_global(cfg: CMConfig | None = None) -> GlobalConfusion:
    """CM-Global: one learnable confusion matrix per rater."""
    return GlobalConfusion(cfg or CMConfig())


@register_method("cm.pixel")
def cm_pixel(cfg: CMConfig | None = None) -> PixelConfusion:
    """CM-Pixel: per-pixel confusion matrices from a conv head per rater."""
    return PixelConfusion(cfg or CMConfig())
