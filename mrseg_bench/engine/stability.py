"""A stability probe: the first optimiser steps of a run's first stage, measured step by step.

``probe(spec, dataset, split, steps)`` trains the spec's method exactly as a run does (the
engine's ``train`` with the spec's seed, data order and engine settings) for ``steps`` steps of
its first stage and returns one record per step::

    {"step", "loss", "grad_norm" (global, before clipping), "lr" (after warm-up),
     "kl" and the other loss parts the method returns, "sigma_max" (the largest prior scale
     of the batch, for methods whose model has a ``prior`` with a ``distribution``)}

``summary(records)`` gives the maxima the stability table reports (``max_kl``, ``max_grad_norm``,
``max_sigma``). Nothing is kept: the run folder is a temporary directory.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

from .device import seed_everything
from .train import train


class _Done(BaseException):  # noqa: N818 - control flow, not an error
    pass


def probe(spec, dataset, split, steps: int) -> list[dict[str, Any]]:
    """Per-step records of the first ``steps`` optimiser steps of ``spec``'s first stage."""
    if steps < 1:
        raise ValueError(f"probe: steps must be >= 1, got {steps}")
    method = spec.method_obj
    first = method.stages()[0]
    seed_everything(spec.seed)
    model = method.build(dataset.info).to(spec.torch_device)
    records: list[dict[str, Any]] = []
    parts: dict[str, float] = {}
    prior = getattr(model, "prior", None)
    if prior is not None and hasattr(prior, "distribution"):
        distribution = prior.distribution

        def watched(x):
            dist = distribution(x)
            if model.training:
                parts["sigma_max"] = float(dist.base_dist.scale.detach().max())
            return dist

        prior.distribution = watched
    step_fn = method.training_step

    def training_step(m, batch, stage):
        out = step_fn(m, batch, stage)
        if m.training:
            parts.update({k: float(v.detach()) for k, v in out.items() if k != "loss" and v.numel() == 1})
        return out

    def stats(stage: str, step: int, values: dict[str, float]) -> None:
        if stage == first.name:
            records.append({"step": step, **values, **parts})
            parts.clear()
            if len(records) >= steps:
                raise _Done

    method.training_step = training_step
    try:
        with tempfile.TemporaryDirectory(prefix="mrseg-probe-") as tmp:
            train(method, model, dataset, split, spec.run_cfg, tmp, spec.seed, spec.torch_device, spec.precision,
                  method_name=spec.method, step_stats=stats)
    except _Done:
        pass
    finally:
        del method.training_step  # the class's own again
        if prior is not None and "distribution" in vars(prior):
            del prior.distribution
    return records


def summary(records: list[dict[str, Any]]) -> dict[str, float]:
    """Maxima over the steps: ``max_kl``, ``max_grad_norm``, ``max_sigma`` (NaN when absent),
    and ``steps``."""

    def top(key: str) -> float:
        vals = [r[key] for r in records if r.get(key) is not None]
        return max(vals) if vals else math.nan

    return {"steps": len(records), "max_kl": top("kl"), "max_grad_norm": top("grad_norm"),
            "max_sigma": top("sigma_max")}
