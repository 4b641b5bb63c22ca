"""The method contract (DESIGN.md "Methods").

A method is registered by a decorated factory, timm-style::

    @register_method("probunet")
    def probunet(cfg: ProbUNetConfig | None = None) -> Method:
        return ProbUNet(cfg or ProbUNetConfig())

Calling the factory with no argument gives the method with its default config; ``create_method``
applies overrides validated against the config dataclass. The engine then calls, for each
stage in ``stages()``: ``begin_stage`` (freeze / set modes), builds the optimiser over
``stage_parameters``, loops ``training_step`` (returns a dict of scalar losses with key
``"loss"`` to backpropagate), and finally ``predict``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .registry import METHODS
from .types import Capability, DatasetInfo, MultiRaterBatch, Prediction


@dataclass
class MethodConfig:
    """Fields every method config has. Subclass it (a dataclass) for method-specific fields."""

    lr: float = 1e-4
    epochs: int = 10
    encoder_name: str = "resnet34"
    encoder_weights: str | None = None  # nothing downloads unless a user asks for weights


@dataclass(frozen=True)
class MethodInfo:
    name: str
    paper: str
    capabilities: frozenset[Capability]
    config_cls: type
    description: str = ""


@dataclass
class Stage:
    """One training stage: its own optimiser (Adam at ``lr``) and a cosine schedule stepped per
    epoch. ``monitor`` picks the best checkpoint on the validation split: ``"loss"`` (mean
    validation loss) or a MetricSuite metric name; ``mode`` is "min" or "max"."""

    name: str
    epochs: int
    lr: float
    weight_decay: float = 0.0
    monitor: str = "loss"
    mode: str = "min"
    extra: dict[str, Any] = field(default_factory=dict)
    schedule: str = "cosine"
    schedule_options: dict[str, Any] = field(default_factory=dict)


class Method(abc.ABC):
    """Base class of every method. Subclasses set ``info`` and implement the abstract methods."""

    info: ClassVar[MethodInfo]

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    @abc.abstractmethod
    def build(self, dataset_info: DatasetInfo) -> nn.Module:
        """Create the model for a dataset (channels, raters, size)."""

    def stages(self) -> list[Stage]:
        """Training stages in order. Default: one stage over all parameters."""
        return [Stage("train", epochs=self.cfg.epochs, lr=self.cfg.lr)]

    def stage_parameters(self, model: nn.Module, stage: Stage) -> list[nn.Parameter]:
        """Parameters the stage's optimiser updates. Default: all that require grad."""
        return [p for p in model.parameters() if p.requires_grad]

    def begin_stage(self, model: nn.Module, stage: Stage) -> None:
        """Called once before a stage (and on resume): freeze parts, load the previous stage."""
        return None

    def train_mode(self, model: nn.Module, stage: Stage) -> None:
        """Put the model in training mode for ``stage`` (default ``model.train()``)."""
        model.train()

    @abc.abstractmethod
    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        """Scalar losses for one batch; ``"loss"`` is the one the engine backpropagates."""

    @abc.abstractmethod
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        """Probabilities for ``images [B,C,H,W]``, carrying exactly ``info.capabilities``."""


def create_method(name: str, overrides: dict[str, Any] | None = None) -> Method:
    """Look up ``name`` in METHODS and build it with ``overrides`` applied to its default config.

    Unknown keys raise ValueError listing the valid ones; string values are converted to the
    field's type (see ``mrseg_bench.config.apply_overrides``).
    """
    from .config import apply_overrides

    factory = METHODS.get(name)
    default = factory()
    if not overrides:
        return default
    cfg = apply_overrides(default.cfg, overrides, where=f"method {name!r}")
    return factory(cfg)
