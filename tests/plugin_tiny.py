"""A whole method in one module, the way a plugin adds one: a config class, a ``Method`` and
one ``@register_method`` line. It registers on import (so ``--jobs`` worker processes see it);
with a ``[method.tiny]`` preset section it is planned, run, stored and reported like a built-in.
Two parameter groups at different lrs (``head_lr``), as cm.* and pionono have."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mrseg_bench.method import Method, MethodConfig, MethodInfo, Stage
from mrseg_bench.registry import METHODS, register_method
from mrseg_bench.types import Capability, DatasetInfo, MultiRaterBatch, Prediction

NAME = "tiny"


@dataclass
class TinyConfig(MethodConfig):
    width: int = 4
    head_lr: float = 0.01


class TinyNet(nn.Module):
    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.trunk = nn.Conv2d(in_channels, width, 3, padding=1)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.trunk(x)))


class Tiny(Method):
    info = MethodInfo(NAME, "Tiny et al. 2026", frozenset({Capability.CONSENSUS}), TinyConfig)
    built = 0  # Tiny objects made in this process (tests count them)

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__(cfg)
        type(self).built += 1

    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        return TinyNet(dataset_info.in_channels, self.cfg.width)

    def param_groups(self, model: TinyNet, stage: Stage) -> list[dict]:
        return [{"params": list(model.trunk.parameters()), "lr": stage.lr, "name": "trunk"},
                {"params": list(model.head.parameters()), "lr": self.cfg.head_lr, "name": "head"}]

    def training_step(self, model: TinyNet, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        target = batch.masks.float().mean(1, keepdim=True)
        return {"loss": nn.functional.binary_cross_entropy_with_logits(model(batch.image), target)}

    def predict(self, model: TinyNet, images: torch.Tensor, n_samples: int) -> Prediction:
        return Prediction(consensus=torch.sigmoid(model(images))[:, 0])


def tiny(cfg: TinyConfig | None = None) -> Tiny:
    """A two-conv U-Net stand-in trained on the rater mean."""
    return Tiny(cfg or TinyConfig())


if NAME not in METHODS:  # the tests unregister it between tests; a worker process imports it once
    register_method(NAME)(tiny)
