"""What a trial is scored on: the method's primary validation metric, read from its run folder.

The objective of a method is ``engine.select.primary_metric`` of its capabilities (the rule
``run.select = auto`` uses): matched per-rater Dice (max) for personalised methods, GED (min)
for methods that draw samples, consensus Dice (max) for fusion. Its direction comes from the
metric's ``MetricSpec``.

A trial's value is the best validation value of that metric over the epochs of the run's last
stage: ``result.json``'s ``selection`` record of that stage when it selected on the objective,
else the best ``val_<metric>`` of the stage's ``train_log.jsonl`` records. Only validation
values are read: never ``metrics.csv`` or the result's ``metrics`` (the test split).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..engine.select import primary_metric, resolve_selection
from ..run_folder import RESULT_FILE


@dataclass(frozen=True)
class Objective:
    """``metric`` on the validation split, to ``direction`` ("minimize" | "maximize"), over
    the epochs of stage ``stage`` (a method's last)."""

    metric: str
    direction: str
    stage: str

    @property
    def mode(self) -> str:
        return "min" if self.direction == "minimize" else "max"

    def best(self, values: list[float]) -> float:
        return min(values) if self.mode == "min" else max(values)


def objective_for(method_obj) -> Objective:
    """The objective of a method object (module docstring)."""
    from ..metrics.suite import METRICS

    metric = primary_metric(method_obj.info.capabilities)
    spec = METRICS.get(metric)
    return Objective(metric, "maximize" if spec.higher_is_better else "minimize", method_obj.stages()[-1].name)


def select_rule(method: str, method_obj, objective: Objective, select: str) -> str:
    """``select`` with a rule that makes the last stage select on the objective, when it does not
    already (so its best epoch is the trial's value); unchanged otherwise."""
    stage = method_obj.stages()[-1]
    if resolve_selection(select, method, method_obj, stage).metric == objective.metric:
        return select
    return f"{select},{method}:{stage.name}={objective.metric}"


def _log_values(run_dir: Path, objective: Objective) -> list[float]:
    path = run_dir / "train_log.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if not isinstance(rec, dict):
            continue
        value = rec.get(f"val_{objective.metric}")
        if rec.get("stage") == objective.stage and isinstance(value, int | float) and math.isfinite(value):
            out.append(float(value))
    return out


def trial_value(run_dir: str | Path, objective: Objective) -> float:
    """The trial's value from its run folder (module docstring); ValueError (one line) when the
    run logged no validation value of the objective."""
    run_dir = Path(run_dir)
    try:
        result = json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))
        sel = (result.get("selection") or {}).get(objective.stage) or {}
    except (OSError, ValueError, AttributeError):
        sel = {}
    if sel.get("metric") == objective.metric and isinstance(sel.get("value"), int | float) \
            and math.isfinite(sel["value"]):
        return float(sel["value"])
    values = _log_values(run_dir, objective)
    if not values:
        raise ValueError(f"{run_dir}: no validation {objective.metric} in stage {objective.stage!r} "
                         "(is the validation split empty?)")
    return objective.best(values)
