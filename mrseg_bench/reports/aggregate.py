"""Aggregation (docs/metrics.md "Aggregation"): per case -> mean over test cases per run ->
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


def intervals(stats: pd.DataFrame, cases: pd.DataFrame, n_boot: int = 2000, level: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Error bars for figures: columns method, key, lo, hi, how.

    A row with a value from >= 2 seeds: mean ± std over seeds (``how="std over seeds"``). With
    one seed: the percentile bootstrap interval (``level``) of the mean over that run's test
    cases (``cases``: ``case_values`` rows), ``n_boot`` resamples drawn at once as an index
    matrix [n_boot, n_cases] (``how="bootstrap over cases"``); NaN with fewer than 2 cases or
    no per-case values (profile keys)."""
    import numpy as np

    out = stats[["method", "key", "mean", "std", "n"]].copy()
    out["lo"], out["hi"], out["how"] = out["mean"] - out["std"], out["mean"] + out["std"], "std over seeds"
    one = out["n"] < 2
    out.loc[one, ["lo", "hi"]] = np.nan
    out.loc[one, "how"] = "bootstrap over cases"
    wanted = set(zip(out.loc[one, "method"], out.loc[one, "key"], strict=True))
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    found: dict[tuple, tuple[float, float]] = {}
    for (method, key), vals in cases.dropna(subset=["value"]).groupby(["method", "key"])["value"]:
        if (method, key) not in wanted or len(vals) < 2:
            continue
        v = vals.to_numpy(dtype=float)
        means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
        found[(method, key)] = tuple(np.quantile(means, q))
    for i in out.index[one]:
        lo_hi = found.get((out.at[i, "method"], out.at[i, "key"]))
        if lo_hi is not None:
            out.at[i, "lo"], out.at[i, "hi"] = lo_hi
    return out[["method", "key", "lo", "hi", "how"]].reset_index(drop=True)
