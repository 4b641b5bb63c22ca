"""Reference scores a dataset offers for a run's test cases: the rows a report shows beside the
methods (not ranked, not bold, no significance), e.g. the synthetic set's oracle.

Contract. A dataset MAY define ``reference_scores(indices) -> dict[str, list[float]]``: for the
cases ``indices`` (the run's scored test cases), reference name -> per-rater Dice (the
``per_rater_dice`` metric: output r against rater r, both empty = 1), one value per rater in the
dataset's rater order, each the mean over the cases. ``SyntheticMultiRater`` gives
``"oracle"`` (each rater's own style applied to the hidden true object), ``"shared mask"`` (the
true object itself for every rater) and, version 2, ``"attainable"`` (the oracle with its outline
one pixel off). A dataset MAY also define ``reference_values(indices) -> dict[str, float]``:
data-level values that are not per rater, each in [0, 1] (the synthetic set's version 2: the
``"style disagreement"`` and ``"ambiguity disagreement"`` parts of rater disagreement).

Storage. ``reference_rows`` turns them into ordinary metric rows with the reserved case id
``REFERENCE_CASE`` and metric ``REFERENCE_PREFIX + name`` (one row per rater; rater None for a
``reference_values`` entry), so they travel
with the run (store, ``metrics.csv``, ``result.json``) without a schema change;
``split_reference_rows`` takes them out of a metrics frame again (the report loader does, so they
never count as a case of a method).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

REFERENCE_CASE = "*reference*"
REFERENCE_PREFIX = "reference:"


def reference_rows(dataset: Any, indices: Sequence[int]) -> list[dict[str, Any]]:
    """Metric rows of ``dataset.reference_scores(indices)`` and ``dataset.reference_values(indices)``
    (see module doc); [] when the dataset offers neither or ``indices`` is empty. ValueError
    naming the dataset when its scores are not a dict of non-empty names to one finite value in
    [0, 1] per rater (``reference_values``: one such value per name)."""
    scores_of = getattr(dataset, "reference_scores", None)
    values_of = getattr(dataset, "reference_values", None)
    indices = [int(i) for i in indices]
    if (scores_of is None and values_of is None) or not indices:
        return []
    name = getattr(getattr(dataset, "info", None), "name", type(dataset).__name__)
    num_raters = getattr(getattr(dataset, "info", None), "num_raters", None)
    rows = _per_rater_rows(name, num_raters, scores_of(indices)) if scores_of is not None else []
    if values_of is not None:
        values = values_of(indices)
        if not isinstance(values, dict):
            raise ValueError(f"dataset {name!r}: reference_values must return a dict name -> value, "
                             f"got {type(values).__name__}")
        for ref, value in values.items():
            _check(name, ref, [value])
            rows.append({"case_id": REFERENCE_CASE, "metric": REFERENCE_PREFIX + ref, "rater": None,
                         "value": float(value)})
    return rows


def _check(dataset: str, ref: Any, values: list[Any]) -> list[float]:
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"dataset {dataset!r}: bad reference name {ref!r}")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = [math.nan]
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in out):
        raise ValueError(f"dataset {dataset!r}: reference {ref!r}: every value must be in [0, 1], got {values}")
    return out


def _per_rater_rows(name: str, num_raters: int | None, scores: Any) -> list[dict[str, Any]]:
    if not isinstance(scores, dict):
        raise ValueError(f"dataset {name!r}: reference_scores must return a dict name -> per-rater "
                         f"Dice, got {type(scores).__name__}")
    rows: list[dict[str, Any]] = []
    for ref, values in scores.items():
        values = _check(name, ref, list(values))
        if num_raters is not None and len(values) != num_raters:
            raise ValueError(f"dataset {name!r}: reference {ref!r} has {len(values)} values, "
                             f"expected one per rater ({num_raters})")
        rows += [{"case_id": REFERENCE_CASE, "metric": REFERENCE_PREFIX + ref, "rater": r, "value": v}
                 for r, v in enumerate(values)]
    return rows


def split_reference_rows(metrics):
    """``(metrics without reference rows, references)`` of a metrics DataFrame (columns run_id,
    case_id, metric, rater, value); ``references`` has columns run_id, name, rater, value."""
    import pandas as pd

    if metrics.empty:
        return metrics, pd.DataFrame(columns=["run_id", "name", "rater", "value"])
    is_ref = (metrics["case_id"] == REFERENCE_CASE) & metrics["metric"].astype(str).str.startswith(REFERENCE_PREFIX)
    refs = metrics[is_ref]
    out = pd.DataFrame({"run_id": refs["run_id"], "name": refs["metric"].str[len(REFERENCE_PREFIX):],
                        "rater": refs["rater"], "value": refs["value"]}).reset_index(drop=True)
    return metrics[~is_ref].reset_index(drop=True), out
