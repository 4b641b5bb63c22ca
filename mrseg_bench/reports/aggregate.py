"""Aggregation (REFERENCE "Aggregation"): per case -> mean over test cases per run ->
mean ± std over seeds (std with ddof=1; one seed gives std NaN, rendered without ±).

Metric keys: a per-case metric keeps its name (``"ged"``); a per-rater row becomes
``"<metric>[<rater>]"`` (``"per_rater_dice[0]"``), and with ``rater_means=True`` also
``"<metric>"``: per case the mean over its raters (how a per-rater metric such as
``per_rater_dice_matched`` is tabled as one column). NaN per-case values are skipped by the means.

Rows: a table row is one configuration of a method (``runs["row"]``, e.g. ``dpersona (beta=1.0)``,
see loader.py). The frames below call it ``method`` so everything downstream (tables,
significance, figures) works on rows.
"""

from __future__ import annotations

import pandas as pd

from .loader import Results

RUN_KEYS = ["run_id", "method", "dataset", "preset", "seed"]
GROUP = ["dataset", "preset", "method"]


def metric_keys(metrics: pd.DataFrame) -> pd.Series:
    """Column key per metric row (vectorised): metric, or metric[rater] for per-rater rows."""
    rater = metrics["rater"].astype("Int64")
    with_rater = metrics["metric"] + "[" + rater.astype("string") + "]"
    return with_rater.where(rater.notna(), metrics["metric"]).astype(str)


def run_frame(results: Results) -> pd.DataFrame:
    """``RUN_KEYS`` columns of the runs, with ``method`` holding the row label when there is one."""
    runs = results.runs
    out = runs.reindex(columns=RUN_KEYS).copy()
    if "row" in runs:
        out["method"] = runs["row"].where(runs["row"].notna() & (runs["row"] != ""), runs["method"])
    return out


def case_values(results: Results, rater_means: bool = False) -> pd.DataFrame:
    """Per-case rows joined with their run: run_id, method, dataset, preset, seed, case_id,
    key, value (``rater_means``: plus the per-case mean over raters of per-rater metrics)."""
    m = results.metrics.assign(key=metric_keys(results.metrics))
    if rater_means:
        per = m[m["rater"].notna()]
        if not per.empty:
            means = per.groupby(["run_id", "case_id", "metric"], as_index=False)["value"].mean()
            means["key"] = means["metric"]
            m = pd.concat([m, means.assign(rater=pd.NA)], ignore_index=True)
    out = m.merge(run_frame(results), on="run_id", how="inner")
    return out[[*RUN_KEYS, "case_id", "key", "value"]]


def run_means(results: Results, rater_means: bool = False) -> pd.DataFrame:
    """Mean over test cases per run and key: run_id, method, dataset, preset, seed, key, value."""
    cases = case_values(results, rater_means)
    return cases.groupby([*RUN_KEYS, "key"], as_index=False, dropna=False)["value"].mean()


def profile_values(results: Results) -> pd.DataFrame:
    """Profile rows joined with their run, same columns as ``run_means``."""
    p = results.profile.rename(columns={"name": "key"})
    out = p.merge(run_frame(results), on="run_id", how="inner")
    # a profile name written twice for one run (should not happen): keep the mean
    return out.groupby([*RUN_KEYS, "key"], as_index=False, dropna=False)["value"].mean()


def seed_stats(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and n (runs with a value) over seeds per (dataset, preset, method, key).

    ``per_run`` has one value per run and key (``run_means`` / ``profile_values``).
    """
    g = per_run.groupby([*GROUP, "key"], dropna=False)["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
    return out.reset_index()
