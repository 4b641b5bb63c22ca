"""Per-rater baselines: one output per rater.

- ``per_rater.separate``: R independent U-Nets (``build_unet``, classes=1), held in one
  ``nn.ModuleList``; each network runs on the whole batch and their logits are stacked
  ``[B,R,H,W]``.
- ``per_rater.multihead`` (MH-UNet): one shared headless U-Net, one 1x1 conv head per rater
  (implemented as a single ``Conv2d(F, R, 1)``), R output channels.

Loss: generalised Dice per rater channel with invalid (image, rater) pairs masked out
(``common.per_rater_generalised_dice_loss``), or masked mean BCE.

Capabilities PERSONALIZED and DIVERSE: output r is rater r's prediction, and the R outputs are
ALSO returned as R diverse samples, because that is how papers score per-rater models on
GED / Dice_max. ``predict`` therefore ignores ``n_samples`` and returns N = R samples (the same
tensor as ``personalized``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..method import Method, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .common import check_batch, check_io, per_rater_generalised_dice_loss, remember_io
from .deterministic import UNetConfig
from .unet import build_unet


@dataclass
class PerRaterConfig(UNetConfig):
    """Same fields as ``UNetConfig`` (decoder_channels, loss)."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "reference: D-Persona's comparison trains the baselines with Adam 1e-4 (docs/methods.md); a decade either side (our reasoning)"),
    }


class SeparateUNets(nn.Module):
    """R independent U-Nets; ``forward`` -> logits ``[B,R,H,W]`` (network r -> channel r)."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(images) for net in self.nets], dim=1)


class MultiHeadUNet(nn.Module):
    """Shared headless U-Net + ``heads = Conv2d(F, R, 1)`` (one 1x1 head per rater)."""

    def __init__(self, backbone: nn.Module, num_raters: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.Conv2d(int(backbone.out_channels), num_raters, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(images))


class _PerRater(Method):
    cfg: PerRaterConfig

    def _check(self, dataset_info: DatasetInfo) -> None:
        if dataset_info.num_raters < 1:
            raise ValueError(f"{self.info.name}: dataset {dataset_info.name!r} has no raters")

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_batch(batch.masks, batch.rater_valid, self.info.name)
        check_io(self.info.name, model, batch.image, batch.masks)
        logits = model(batch.image)
        if logits.shape != batch.masks.shape:
            raise ValueError(f"{self.info.name}: model outputs {tuple(logits.shape)} for masks "
                             f"{tuple(batch.masks.shape)} (built for another number of raters?)")
        target = batch.masks.float()
        if self.cfg.loss == "gdl":
            loss = per_rater_generalised_dice_loss(logits, target, batch.rater_valid)
        elif self.cfg.loss == "bce":
            per = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").mean((2, 3))
            w = batch.rater_valid.float()
            loss = (per * w).sum() / w.sum()
        else:
            raise ValueError(f"{self.info.name}: loss must be 'gdl' or 'bce', got {self.cfg.loss!r}")
        return {"loss": loss}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        """personalized ``[B,R,H,W]`` and the same R maps as samples (``n_samples`` ignored).
        The caller sets eval mode."""
        check_io(self.info.name, model, images)
        prob = torch.sigmoid(model(images).float())
        return Prediction(samples=prob, personalized=prob)


class SeparatePerRater(_PerRater):
    info = MethodInfo("per_rater.separate", "One U-Net per rater (independent per-rater models)",
                      frozenset({Capability.PERSONALIZED, Capability.DIVERSE}), PerRaterConfig,
                      "R independent U-Nets; the R outputs are also the R diverse samples")

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        self._check(dataset_info)
        c = self.cfg
        return remember_io(SeparateUNets([
            build_unet(dataset_info.in_channels, classes=1, encoder_name=c.encoder_name,
                       encoder_weights=c.encoder_weights, decoder_channels=c.decoder_channels)
            for _ in range(dataset_info.num_raters)
        ]), dataset_info.in_channels, dataset_info.num_raters)


class MultiHeadPerRater(_PerRater):
    info = MethodInfo("per_rater.multihead",
                      "Guan et al., Who Said What: Modeling Individual Labelers, AAAI 2018 (MH-UNet)",
                      frozenset({Capability.PERSONALIZED, Capability.DIVERSE}), PerRaterConfig,
                      "shared U-Net, one 1x1 head per rater; the R outputs are also the R samples")

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        self._check(dataset_info)
        c = self.cfg
        backbone = build_unet(dataset_info.in_channels, encoder_name=c.encoder_name,
                              encoder_weights=c.encoder_weights, headless=True,
                              decoder_channels=c.decoder_channels)
        return remember_io(MultiHeadUNet(backbone, dataset_info.num_raters), dataset_info.in_channels,
                           dataset_info.num_raters)


@register_method("per_rater.separate")
def per_rater_separate(cfg: PerRaterConfig | None = None) -> SeparatePerRater:
    """R independent U-Nets, one per rater."""
    return SeparatePerRater(cfg or PerRaterConfig())


@register_method("per_rater.multihead")
def per_rater_multihead(cfg: PerRaterConfig | None = None) -> MultiHeadPerRater:
    """Shared U-Net with one 1x1 head per rater (MH-UNet)."""
    return MultiHeadPerRater(cfg or PerRaterConfig())
