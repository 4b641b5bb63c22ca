"""Optimiser and learning-rate schedule of one training stage.

``build_optimizer(method, model, stage)``: Adam over ``method.param_groups(model, stage)``
(torch-style groups ``{"params", "lr", "name"}``; default one group of ``stage_parameters`` at
``stage.lr``), weight decay ``stage.weight_decay``.

``build_scheduler(optimizer, stage)`` by ``stage.schedule`` (epoch e = 0 .. epochs-1 trains at
the lr below; every group scales its own base lr ``lr0``):

- ``"cosine"`` (default): ``lr0 * (1 + cos(pi * e / epochs)) / 2`` (CosineAnnealingLR, eta_min 0);
- ``"poly"``: ``lr0 * (1 - e / epochs) ** power`` (``schedule_options["power"]``, 0.9);
- ``"plateau"``: ReduceLROnPlateau on the stage's validation monitor (``stage.mode``):
  ``factor`` (0.1), ``patience`` (10), ``min_lr`` (0); stepped only after a validation;
- ``"constant"``: ``lr0``.

Warm-up (``RunConfig.warmup_steps`` = W, an engine setting, the same for every method): optimiser
step t = 0, 1, ... of a stage runs at ``lr * warmup_factor(t, W)``, ``min(1, (t + 1) / W)`` (1
when W = 0), on top of whatever lr the schedule gives each group (``warmed_up``).

Per-epoch schedules are stepped by ``step_per_epoch`` at the end of each epoch, the plateau
schedule by ``step_on_validation`` with the validation score. Their ``state_dict`` goes into the
resumable checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ..method import SCHEDULE_OPTIONS, Method, Stage

Scheduler = LRScheduler | ReduceLROnPlateau


def _check_groups(groups: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    if not isinstance(groups, list) or not groups:
        raise ValueError(f"{where}: param_groups returned no group")
    seen: set[int] = set()
    out = []
    for i, g in enumerate(groups):
        if not isinstance(g, dict) or "params" not in g:
            raise ValueError(f"{where}: param group {i} must be a dict with 'params'")
        params = list(g["params"])
        name = g.get("name", str(i))
        if not params:
            raise ValueError(f"{where}: param group {name!r} has no parameters to train")
        lr = float(g.get("lr", math.nan))
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"{where}: param group {name!r} needs a finite lr >= 0, got {g.get('lr')!r}")
        for p in params:
            if not isinstance(p, nn.Parameter):
                raise ValueError(f"{where}: param group {name!r} holds a {type(p).__name__}, not a Parameter")
            if id(p) in seen:
                raise ValueError(f"{where}: a parameter is in two param groups (second: {name!r})")
            seen.add(id(p))
        out.append({**g, "params": params, "lr": lr, "name": str(name)})
    return out


def build_optimizer(method: Method, model: nn.Module, stage: Stage,
                    where: str | None = None) -> torch.optim.Optimizer:
    """Adam over the method's param groups for ``stage``. ValueError (naming method and stage)
    for no group, an empty group, a bad lr or a parameter in two groups."""
    where = where or f"method {method.info.name!r} stage {stage.name!r}"
    groups = _check_groups(method.param_groups(model, stage), where)
    return torch.optim.Adam(groups, lr=stage.lr, weight_decay=stage.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, stage: Stage) -> Scheduler:
    """The stage's lr schedule (module docstring) on ``optimizer``."""
    stage.check_schedule()
    opts = stage.schedule_options
    epochs = max(int(stage.epochs), 1)
    if stage.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if stage.schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs,
                                                     power=float(opts.get("power", 0.9)))
    if stage.schedule == "plateau":
        return ReduceLROnPlateau(optimizer, mode=stage.mode, factor=float(opts.get("factor", 0.1)),
                                 patience=int(opts.get("patience", 10)), min_lr=float(opts.get("min_lr", 0.0)))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def step_per_epoch(scheduler: Scheduler) -> None:
    """End of an epoch: step every schedule except plateau (stepped on validation)."""
    if not isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step()


def step_on_validation(scheduler: Scheduler, score: float) -> None:
    """After a validation: a plateau schedule sees the score; the others ignore it."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(score)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """``min(1, (step + 1) / warmup_steps)`` for optimiser step ``step`` (0-based); 1 without warm-up."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (int(step) + 1) / int(warmup_steps))


@contextmanager
def warmed_up(optimizer: torch.optim.Optimizer, step: int, warmup_steps: int) -> Iterator[None]:
    """Inside the block every group's lr is scaled by ``warmup_factor(step, warmup_steps)``;
    the scheduled lr is restored after it (the schedules never see the scaled value)."""
    factor = warmup_factor(step, warmup_steps)
    if factor == 1.0:
        yield
        return
    scheduled = [g["lr"] for g in optimizer.param_groups]
    for g, lr in zip(optimizer.param_groups, scheduled, strict=True):
        g["lr"] = lr * factor
    try:
        yield
    finally:
        for g, lr in zip(optimizer.param_groups, scheduled, strict=True):
            g["lr"] = lr


__all__ = ["SCHEDULE_OPTIONS", "build_optimizer", "build_scheduler", "step_on_validation", "step_per_epoch",
           "warmed_up", "warmup_factor"]
