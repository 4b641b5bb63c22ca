"""Read a results store into three DataFrames (the only way reports touch the store).

``load_results(store_path) -> Results(runs, metrics, profile)``: ``runs`` holds the latest
``done`` run per (method, dataset, preset, seed) (``ResultsStore.latest_runs``); ``metrics``
and ``profile`` hold only those runs' rows. Failed runs never reach a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Results:
    """runs: store ``runs`` columns; metrics: run_id, case_id, metric, rater (Int64), value;
    profile: run_id, name, value, unit."""

    runs: pd.DataFrame
    metrics: pd.DataFrame
    profile: pd.DataFrame


def load_results(store_path: str | Path) -> Results:
    """Latest done runs of the store at ``store_path`` and their metric and profile rows.

    A missing file raises FileNotFoundError (the store is never created by reading);
    a file that is not a results store raises ValueError naming it.
    """
    from ..store import ResultsStore

    path = Path(store_path)
    if not path.is_file():
        raise FileNotFoundError(f"results store {path}: no such file")
    store = ResultsStore(path, readonly=True)
    try:
        runs = store.latest_runs(status="done").reset_index(drop=True)
        ids = runs["run_id"].tolist()
        metrics = store.metrics(ids)
        profile = store.profile(ids)
    finally:
        store.close()
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    for col in ("preset", "protocol", "convention", "capabilities"):
        runs[col] = runs[col].fillna("")
    metrics["value"] = pd.to_numeric(metrics["value"], errors="coerce").astype(float)
    metrics["rater"] = metrics["rater"].astype("Int64")
    profile["value"] = pd.to_numeric(profile["value"], errors="coerce").astype(float)
    return Results(runs=runs, metrics=metrics, profile=profile)
