"""The deterministic ``unet`` baseline and the base class of single-output U-Net methods.

``unet``: a plain smp U-Net (``build_unet``, classes=1) trained on ONE valid rater's mask drawn
per image per step. Its only output is one probability map; it is returned as the CONSENSUS
``[B,H,W]`` and, because it is the method's only output, also as one DIVERSE sample
``[B,1,H,W]`` (this is how papers score "a deterministic U-Net" on GED). Capabilities:
DIVERSE + CONSENSUS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..method import Method, MethodConfig, MethodInfo, Stage
from ..registry import register_method
from ..tune.space import Range, log_uniform
from ..types import Capability, DatasetInfo, MultiRaterBatch, Prediction
from .common import check_io, draw_valid_rater, recon_loss, remember_io
from .unet import DEFAULT_DECODER_CHANNELS, build_unet


@dataclass
class UNetConfig(MethodConfig):
    """``loss``: "gdl" (``losses.generalised_dice_loss``) or "bce" (mean BCE)."""

    SEARCH_SPACE: ClassVar[dict[str, Range]] = {  # mrseg_bench.tune.space; docs/tuning.md
        "lr": log_uniform(1e-5, 1e-3, "reference: D-Persona's comparison trains the baselines with Adam 1e-4 (docs/methods.md); a decade either side (our reasoning)"),
    }

    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    loss: Literal["gdl", "bce"] = "gdl"


class SingleOutputUNet(Method):
    """A U-Net with one logit map, trained against ``target(batch) [B,1,H,W]``.

    Subclasses define ``target`` and ``info``. ``predict`` returns the probability map as
    consensus, plus as one sample when DIVERSE is among ``self.info.capabilities``.
    """

    cfg: UNetConfig

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        c = self.cfg
        net = build_unet(dataset_info.in_channels, classes=1, encoder_name=c.encoder_name,
                         encoder_weights=c.encoder_weights, decoder_channels=c.decoder_channels)
        return remember_io(net, dataset_info.in_channels, dataset_info.num_raters)

    def target(self, batch: MultiRaterBatch) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        check_io(self.info.name, model, batch.image, batch.masks)
        target = self.target(batch)
        loss = recon_loss(self.cfg.loss, model(batch.image), target)
        return {"loss": loss}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        """Probabilities ``[B,H,W]``; ``n_samples`` is ignored (one deterministic output).
        The caller sets eval mode."""
        check_io(self.info.name, model, images)
        prob = torch.sigmoid(model(images).float())[:, 0]
        samples = prob[:, None] if Capability.DIVERSE in self.info.capabilities else None
        return Prediction(samples=samples, consensus=prob)


class DeterministicUNet(SingleOutputUNet):
    """Plain U-Net on one randomly drawn valid rater per image per step."""

    info = MethodInfo(
        name="unet",
        paper="Ronneberger et al., U-Net, MICCAI 2015 (deterministic baseline)",
        capabilities=frozenset({Capability.DIVERSE, Capability.CONSENSUS}),
        config_cls=UNetConfig,
        description="one random valid rater per image per step; output = consensus and 1 sample",
    )

    def target(self, batch: MultiRaterBatch) -> torch.Tensor:
        return draw_valid_rater(batch.masks, batch.rater_valid)[0]


@register_method("unet")
def unet(cfg: UNetConfig | None = None) -> DeterministicUNet:
    """Deterministic U-Net trained on one random valid rater per image per step."""
    return DeterministicUNet(cfg or UNetConfig())
