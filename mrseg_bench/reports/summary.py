"""The terminal summary printed after ``mrseg-bench run``: one row per (dataset, row), the mean
over seeds of per-run case means of the metrics whose ``MetricSpec.summary`` is set, and the
profile values whose ``ProfileColumn.summary`` is set (no hand list of keys: a plugin metric
with ``summary=True`` appears too). NaN where a method has no such output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DASH = "—"


def summary_metrics() -> list[str]:
    """Metric names shown in the summary (and the throughput figure), in column order."""
    from ..metrics import metric_specs

    return [s.name for s in metric_specs() if s.summary]


def summary_profile() -> list[str]:
    from .columns import PROFILE_COLUMNS

    return [c.key for c in PROFILE_COLUMNS if c.summary]


def summary_label(key: str) -> str:
    """The column label, made unique across tables: ``Mean (personalization)``."""
    from ..metrics import metric_specs
    from .columns import label, metric_spec

    spec = metric_spec(key)
    if spec is None:
        return label(key)
    same = [s for s in metric_specs() if s.summary and s.column_label == spec.column_label]
    return spec.column_label if len(same) <= 1 and spec.column_label != "Mean" \
        else f"{spec.column_label} ({spec.table_name})"


def summarize(store, run_ids: Sequence[str]):
    """A frame: one row per (dataset, method row), the mean over seeds of per-run case means of
    the summary metrics and profile values (NaN where a method has no such output), and ``runs``:
    how many runs (seeds) each row averages."""
    import pandas as pd

    from .loader import annotate

    runs = store.runs()
    runs = runs[runs["run_id"].isin(list(run_ids))]
    if runs.empty:
        return pd.DataFrame()
    runs = annotate(runs)
    metrics, prof_keys = summary_metrics(), summary_profile()
    m = store.metrics(run_ids)
    p = store.profile(run_ids)
    per_run = m[m["metric"].isin(metrics)].groupby(["run_id", "metric"])["value"].mean().unstack()
    prof = p[p["name"].isin(prof_keys)].pivot_table(index="run_id", columns="name", values="value")
    table = runs.set_index("run_id")[["dataset", "row"]].rename(columns={"row": "method"})
    table = table.join(per_run).join(prof)
    cols = [*metrics, *prof_keys]
    for c in cols:
        if c not in table:
            table[c] = float("nan")
    groups = table.groupby(["dataset", "method"], sort=False)
    frame = groups[cols].mean()
    frame.insert(0, "runs", groups.size())
    return frame.reset_index()


def fmt_value(value: Any, key: str) -> str:
    """One summary cell: profile values with their table format and scale, metrics .4f."""
    from .columns import PROFILE_COLUMNS

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    col = {c.key: c for c in PROFILE_COLUMNS}.get(key)
    if col is not None:
        return format(value / col.scale, col.fmt)
    return f"{value:.4f}"


def summary_table(frame):
    """A ``rich.table.Table`` of ``summarize``'s frame."""
    from rich.table import Table

    cols = [c for c in frame.columns if c not in ("dataset", "method", "runs")]
    datasets = list(dict.fromkeys(frame["dataset"]))
    table = Table(title=f"mrseg-bench results on {', '.join(datasets)} (mean over seeds; runs = how many; "
                        f"{DASH} = not a capability of the method)")
    if len(datasets) > 1:
        table.add_column("dataset")
    table.add_column("method")
    table.add_column("runs", justify="right")
    for c in cols:
        table.add_column(summary_label(c), justify="right")
    for _, row in frame.iterrows():
        first = [str(row["dataset"])] if len(datasets) > 1 else []
        table.add_row(*first, str(row["method"]), str(int(row["runs"])), *[fmt_value(row[c], c) for c in cols])
    return table
