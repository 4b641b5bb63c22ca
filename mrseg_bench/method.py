"""The method contract (docs/design.md "Method contract").

A method is registered by a decorated factory, timm-style::

    @register_method("probunet")
    def probunet(cfg: ProbUNetConfig | None = None) -> Method:
        return ProbUNet(cfg or ProbUNetConfig())

Calling the factory with no argument gives the method with its default config; ``create_method``
applies overrides validated against the config dataclass. The engine then calls, for each
stage in ``stages()``: ``begin_stage`` (freeze / set modes), builds the optimiser over
``param_groups`` (by default one group of ``stage_parameters``; see ``engine.optim``), loops ``training_step`` (returns a dict of scalar losses with key
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


SCHEDULE_OPTIONS: dict[str, frozenset[str]] = {
    "cosine": frozenset(),
    "poly": frozenset({"power"}),
    "plateau": frozenset({"factor", "patience", "min_lr"}),
    "constant": frozenset(),
}


@dataclass
class Stage:
    """One training stage: its own optimiser (Adam at ``lr``, or per-group lrs from
    ``Method.param_groups``) and an lr ``schedule`` (``engine.optim.build_scheduler``):
    "cosine" (default, stepped per epoch), "poly" (``lr * (1 - epoch/epochs) ** power``),
    "plateau" (ReduceLROnPlateau on the validation monitor) or "constant"; ``schedule_options``:
    poly ``power`` (0.9); plateau ``factor`` (0.1), ``patience`` (10), ``min_lr`` (0).
    ``monitor`` (``"loss"`` or a MetricSuite metric name; ``mode`` "min" or "max") is the
    validation value a plateau schedule steps on, and, when it names a metric, the stage's
    selection metric under ``run.select = "auto"`` (``Method.select_metric``)."""

    name: str
    epochs: int
    lr: float
    weight_decay: float = 0.0
    monitor: str = "loss"
    mode: str = "min"
    extra: dict[str, Any] = field(default_factory=dict)
    schedule: str = "cosine"
    schedule_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_schedule()

    def check_schedule(self) -> None:
        """ValueError naming the stage for an unknown schedule, option or option value."""
        where = f"stage {self.name!r}"
        if self.schedule not in SCHEDULE_OPTIONS:
            raise ValueError(f"{where}: schedule must be one of {', '.join(SCHEDULE_OPTIONS)}, got {self.schedule!r}")
        allowed = SCHEDULE_OPTIONS[self.schedule]
        unknown = sorted(set(self.schedule_options) - allowed)
        if unknown:
            raise ValueError(f"{where}: schedule {self.schedule!r} has no option(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(allowed)) or 'none'}")
        for key, value in self.schedule_options.items():
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
            ok = ok and {"power": value >= 0, "factor": 0 < value < 1, "patience": value >= 0 and int(value) == value,
                         "min_lr": value >= 0}[key]
            if not ok:
                raise ValueError(f"{where}: schedule option {key}={value!r} is out of range")
        if self.mode not in ("min", "max"):
            raise ValueError(f"{where}: mode must be 'min' or 'max', got {self.mode!r}")


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

    def param_groups(self, model: nn.Module, stage: Stage) -> list[dict[str, Any]]:
        """Torch-style optimiser groups ``{"params": [...], "lr": float, "name": str}`` for
        ``stage``. Default: one group of ``stage_parameters`` at ``stage.lr``. Override to give
        parts of the model their own lr (a parameter may be in one group only)."""
        return [{"params": self.stage_parameters(model, stage), "lr": stage.lr, "name": "all"}]

    def select_metric(self, stage: Stage) -> str:
        """The validation metric that picks ``stage``'s best epoch under ``run.select = "auto"``
        (``engine.select``): the stage's ``monitor`` when it names a metric, else the primary
        metric of the method's capabilities (personalized: ``per_rater_dice_matched``; diverse:
        ``ged``; consensus: ``consensus_dice``, in that precedence)."""
        if stage.monitor != "loss":
            return stage.monitor
        from .engine.select import primary_metric

        return primary_metric(self.info.capabilities)

    def begin_stage(self, model: nn.Module, stage: Stage) -> None:
        """Called once before a stage (and on resume): freeze parts, load the previous stage."""
        return None

    def begin_epoch(self, model: nn.Module, stage: Stage, epoch: int) -> None:
        """Called by the engine before each training epoch (0-based, also on resume); methods
        with epoch-dependent losses (KL warm-up) read ``self.epoch_of(stage)``."""
        if not hasattr(self, "_epochs"):
            self._epochs: dict[str, int] = {}
        self._epochs[stage.name] = int(epoch)

    def epoch_of(self, stage: Stage) -> int:
        """The current epoch of ``stage`` as last told by ``begin_epoch`` (0 before any)."""
        return getattr(self, "_epochs", {}).get(stage.name, 0)

    def train_mode(self, model: nn.Module, stage: Stage) -> None:
        """Put the model in training mode for ``stage`` (default ``model.train()``)."""
        model.train()

    @abc.abstractmethod
    def training_step(self, model: nn.Module, batch: MultiRaterBatch, stage: Stage) -> dict[str, torch.Tensor]:
        """Scalar losses for one batch; ``"loss"`` is the one the engine backpropagates."""

    @abc.abstractmethod
    def predict(self, model: nn.Module, images: torch.Tensor, n_samples: int) -> Prediction:
        """Probabilities for ``images [B,C,H,W]``, carrying exactly ``info.capabilities``."""

    def validate(self, dataset_info: DatasetInfo | None = None) -> None:
        """Check the config before anything is built or written (the planner calls it while
        planning); ValueError names the method and the field. The base checks the common
        fields: ``epochs`` and every stage's epochs >= 1, finite lr > 0, ``encoder_name`` one of
        smp's encoders (no weights are built or downloaded), ``decoder_channels`` /
        ``prior_filters`` positive ints, ``decoder_channels`` one per encoder level (5).
        Methods override it for their own fields and call ``super().validate(dataset_info)``."""
        validate_common_config(self.info.name, self.cfg, self.stages())


SMP_ENCODER_DEPTH = 5  # every built-in U-Net has 5 encoder levels, so 5 decoder channels


def _positive_ints(value: Any) -> bool:
    return (isinstance(value, tuple | list) and len(value) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value))


def known_encoder(name: str) -> bool:
    """True when smp can build ``name`` (its registry, or ``tu-<timm model>``); builds nothing."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    if name in get_encoder_names():
        return True
    if name.startswith("tu-"):
        try:
            import timm
        except ImportError:
            return False
        return bool(timm.is_model(name[3:]))
    return False


def validate_common_config(name: str, cfg: Any, stages: list[Stage]) -> None:
    """The checks of ``Method.validate`` on ``cfg`` (fields it lacks are skipped)."""
    import math

    epochs = getattr(cfg, "epochs", 1)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"method {name!r}: epochs must be an integer >= 1, got {epochs!r}")
    lr = getattr(cfg, "lr", 1.0)
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"method {name!r}: lr must be a finite number > 0, got {lr!r}")
    if not stages:
        raise ValueError(f"method {name!r}: stages() returned no stage")
    for stage in stages:
        if not isinstance(stage.epochs, int) or stage.epochs < 1:
            raise ValueError(f"method {name!r}: stage {stage.name!r} has {stage.epochs!r} epochs; "
                             f"each stage needs >= 1 (set {stage.name}_epochs or epochs)")
        if not math.isfinite(stage.lr) or stage.lr <= 0:
            raise ValueError(f"method {name!r}: stage {stage.name!r} lr must be a finite number > 0, "
                             f"got {stage.lr!r}")
    if getattr(cfg, "backbone", "smp") != "smp":
        return
    enc = getattr(cfg, "encoder_name", None)
    if enc is not None and not known_encoder(str(enc)):
        raise ValueError(f"method {name!r}: encoder_name={enc!r} is not an encoder smp knows "
                         "(e.g. resnet18, resnet34, efficientnet-b0, tu-<timm model>)")
    dec = getattr(cfg, "decoder_channels", None)
    if dec is not None and (not _positive_ints(dec) or len(dec) != SMP_ENCODER_DEPTH):
        raise ValueError(f"method {name!r}: decoder_channels must be {SMP_ENCODER_DEPTH} positive "
                         f"integers (one per encoder level), got {dec!r}")
    prior = getattr(cfg, "prior_filters", None)
    if prior and not _positive_ints(prior):
        raise ValueError(f"method {name!r}: prior_filters must be positive integers, got {prior!r}")


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
