"""Evaluation: the method's ``predict`` over a split, scored per case by ``MetricSuite``.

Rows are ``{"case_id", "metric", "rater", "value"}`` (rater None for per-case metrics), one
set per test case; aggregation (mean over cases, then over seeds) happens in the reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..method import Method
from .data import limit, make_batches, prepare
from .device import autocast


def metric_suite(names: Sequence[str] | None = None, convention: str = "standard", threshold: float = 0.5):
    """A ``MetricSuite`` for ``names`` (None: every metric a prediction's capabilities allow)."""
    from ..metrics import MetricSuite

    return MetricSuite(names=list(names) if names else None, convention=convention, threshold=threshold)


def _float(pred):
    from ..types import Prediction

    def f(t):
        return None if t is None else t.float()

    return Prediction(f(pred.samples), f(pred.personalized), f(pred.consensus), f(pred.sample_weights))


@torch.no_grad()
def evaluate(method: Method, model: nn.Module, dataset, indices: Sequence[int], n_samples: int,
             device: torch.device, batch_size: int, suite=None, precision: str = "fp32",
             image_size: int = 0, channels_last: bool = False, max_cases: int = 0) -> list[dict[str, Any]]:
    """Predict ``n_samples`` per image for every case in ``indices`` and score it.

    The model is put in eval mode; the prediction must carry exactly the method's declared
    capabilities (ValueError otherwise, naming the method).
    """
    suite = suite if suite is not None else metric_suite()
    caps = frozenset(method.info.capabilities)
    model.eval()
    rows: list[dict[str, Any]] = []
    for batch in make_batches(dataset, limit(indices, max_cases), batch_size, shuffle=False, seed=0):
        batch = prepare(batch, device, image_size, channels_last)
        with autocast(device, precision):
            pred = method.predict(model, batch.image, n_samples)
        if pred.capabilities() != caps:
            raise ValueError(
                f"method {method.info.name!r}: predict returned {sorted(c.value for c in pred.capabilities())}"
                f" but declares {sorted(c.value for c in caps)}"
            )
        rows.extend(suite.score(_float(pred), batch.masks, batch.rater_valid, list(batch.case_id), caps))
    return rows


def mean_metric(rows: Sequence[dict[str, Any]], name: str) -> float:
    """Mean value of metric ``name`` over rows (all cases and raters); ValueError if absent."""
    vals = [float(r["value"]) for r in rows if r["metric"] == name and r["value"] is not None]
    vals = [v for v in vals if v == v]  # drop NaN
    if not vals:
        raise ValueError(f"monitor metric {name!r} produced no values (metrics present: "
                         f"{sorted({r['metric'] for r in rows})})")
    return sum(vals) / len(vals)
