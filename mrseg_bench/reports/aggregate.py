"""Aggregation (docs/metrics.md "Aggregation"): per case -> mean over test cases per run ->
mean ± std over seeds (std with ddof=1; one seed gives std NaN, rendered without ±).

Metric keys: a per-case metric keeps its name (``"ged"``); a per-rater row becomes
``"<metric>[<rater>]"`` (``"per_rater_dice[0]"``). NaN per-case values (invalid raters) are
skipped by the means.
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


def case_values(results: Results) -> pd.DataFrame:
    """Per-case rows joined with their run: run_id, method, dataset, preset, seed, case_id,
    key, value."""
    m = results.metrics.assign(key=metric_keys(results.metrics))
    out = m.merge(results.runs[RUN_KEYS], on="run_id", how="inner")
    return out[[*RUN_KEYS, "case_id", "key", "value"]]


def run_means(results: Results) -> pd.DataFrame:
    """Mean over test cases per run and key: run_id, method, dataset, preset, seed, key, value."""
    cases = case_values(results)
    return cases.groupby([*RUN_KEYS, "key"], as_index=False, dropna=False)["value"].mean()


def profile_values(results: Results) -> pd.DataFrame:
    """Profile rows joined with their run, same columns as ``run_means``."""
    p = results.profile.rename(columns={"name": "key"})
    out = p.merge(results.runs[RUN_KEYS], on="run_id", how="inner")
    # a profile name written twice for one run (should not happen): keep the mean
    return out.groupby([*RUN_KEYS, "key"], as_index=False, dropna=False)["value"].mean()


def seed_stats(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and n (runs with a value) over seeds per (dataset, preset, method, key).

    ``per_run`` has one value per run and key (``run_means`` / ``profile_values``).
    """
    g = per_run.groupby([*GROUP, "key"], dropna=False)["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
    return out.reset_index()
