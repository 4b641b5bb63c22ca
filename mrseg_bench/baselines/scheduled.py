"""Config fields for a method's learning-rate schedule, turned into a ``Stage``.

``Stage.schedule`` / ``Stage.schedule_options`` (method.py) carry the schedule to the engine:
``"cosine"`` (default, per epoch), ``"poly"`` (``lr * (1 - epoch/epochs) ** power``), ``"plateau"``
(ReduceLROnPlateau on the stage's validation monitor: ``factor``, ``patience``, ``min_lr``) and
``"constant"``. Presets set the flat fields below (``schedule = "plateau"``, ``plateau_patience =
10`` ...), which ``scheduled_stage`` maps onto the Stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..method import SCHEDULE_DEFAULTS, SCHEDULE_RANGES, MethodConfig, Stage, schedule_option_ok

SCHEDULES = ("cosine", "poly", "plateau", "constant")


@dataclass
class ScheduledConfig(MethodConfig):
    """MethodConfig + Adam weight decay, the validation monitor and a schedule. ``monitor``
    ("loss" or a metric) is what a plateau schedule steps on and, when it names a metric, the
    stage's selection metric under ``run.select = "auto"`` (``Method.select_metric``)."""

    weight_decay: float = 0.0
    monitor: str = "loss"
    monitor_mode: Literal["min", "max"] = "min"
    schedule: Literal["cosine", "poly", "plateau", "constant"] = "cosine"
    poly_power: float = SCHEDULE_DEFAULTS["power"]
    plateau_factor: float = SCHEDULE_DEFAULTS["factor"]
    plateau_patience: int = int(SCHEDULE_DEFAULTS["patience"])
    min_lr: float = SCHEDULE_DEFAULTS["min_lr"]


def check_schedule(cfg: ScheduledConfig, where: str) -> None:
    """ValueError naming ``where`` for an unknown schedule or out-of-range option."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"{where}: schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if cfg.lr <= 0 or cfg.weight_decay < 0:
        raise ValueError(f"{where}: need lr > 0, weight_decay >= 0; got {cfg.lr}, {cfg.weight_decay}")
    for key, field_name in (("power", "poly_power"), ("factor", "plateau_factor"), ("patience", "plateau_patience"),
                            ("min_lr", "min_lr")):  # the Stage's own rule (method.SCHEDULE_RANGES)
        value = getattr(cfg, field_name)
        if not schedule_option_ok(key, value):
            raise ValueError(f"{where}: {field_name}={value!r} is out of range (must be {SCHEDULE_RANGES[key]})")


def scheduled_stage(cfg: ScheduledConfig, name: str = "train") -> Stage:
    """One Stage over all parameters with the config's lr, weight decay, monitor and schedule."""
    options: dict[str, float] = {}
    if cfg.schedule == "poly":
        options = {"power": cfg.poly_power}
    elif cfg.schedule == "plateau":
        options = {"factor": cfg.plateau_factor, "patience": cfg.plateau_patience, "min_lr": cfg.min_lr}
    return Stage(name, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, monitor=cfg.monitor,
                 mode=cfg.monitor_mode, schedule=cfg.schedule, schedule_options=options)
