"""Read a results store into three DataFrames (the only way reports touch the store).

``load_results(store_path, experiment=None) -> Results(runs, metrics, profile)``.

Selection. The store's rule, ``ResultsStore.select_runs``: of the done runs with one config
(everything hashed but the code identity: data fingerprint, run and method config, seed, ...)
the latest finished is kept (a rerun on newer code replaces an older one; two configurations
never replace each other). A dataset name holding several data fingerprints is labelled per
fingerprint (``label_data``). ``experiment`` names the experiment to report; with
None the store must hold exactly one, else ``SelectionError`` lists the choices.

Columns added to ``runs``: ``experiment`` (the ``experiment`` column, else the preset: stores
written before experiments existed), ``overrides`` (dict from ``overrides_json``, else {}),
``row`` (the table row label: the method, plus its overrides, e.g. ``dpersona (beta=1.0)``),
``ged_estimator``, ``ncc_maps``, ``threshold`` (from the run config in ``config_json``; the
defaults when absent). Failed runs never reach a table. Reference rows stored with a run
(``mrseg_bench.references``) go to ``Results.references``, not ``metrics``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

METRIC_SETTINGS = {"ged_estimator": "all_pairs", "ncc_maps": "soft", "threshold": 0.5}


class SelectionError(ValueError):
    """The runs to report or check are ambiguous or absent; the message lists the choices."""


def _no_references() -> pd.DataFrame:
    return pd.DataFrame(columns=["run_id", "name", "rater", "value"])


@dataclass
class Results:
    """runs: store ``runs`` columns (+ the columns above); metrics: run_id, case_id, metric,
    rater (Int64), value; profile: run_id, name, value, unit; references: run_id, name, rater,
    value (the dataset's reference scores stored with each run, ``mrseg_bench.references``;
    never part of ``metrics``)."""

    runs: pd.DataFrame
    metrics: pd.DataFrame
    profile: pd.DataFrame
    references: pd.DataFrame = field(default_factory=_no_references)


def _json(text: Any) -> dict:
    try:
        out = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def row_label(method: str, overrides: dict) -> str:
    """``dpersona`` or ``dpersona (beta=1.0, k=10)`` (overrides sorted by key)."""
    if not overrides:
        return str(method)
    return f"{method} ({', '.join(f'{k}={_value(v)}' for k, v in sorted(overrides.items()))})"


def annotate(runs: pd.DataFrame) -> pd.DataFrame:
    """Add experiment, overrides, overrides_key, row and the metric settings (module doc)."""
    runs = runs.copy()
    for col in ("preset", "protocol", "convention", "capabilities"):
        runs[col] = runs[col].fillna("") if col in runs else ""
    runs["protocol"] = runs["protocol"].replace("", "default")
    runs["convention"] = runs["convention"].replace("", "standard")
    exp = runs["experiment"] if "experiment" in runs else pd.Series(None, index=runs.index)
    runs["experiment"] = exp.where(exp.notna() & (exp.astype(str) != ""), runs["preset"]).astype(str)
    raw = runs["overrides_json"] if "overrides_json" in runs else pd.Series(None, index=runs.index)
    runs["overrides"] = [_json(t) for t in raw]
    runs["overrides_key"] = [json.dumps(o, sort_keys=True) for o in runs["overrides"]]
    runs["row"] = [row_label(m, o) for m, o in zip(runs["method"], runs["overrides"], strict=True)]
    cfgs = [_json(t).get("run", {}) for t in runs.get("config_json", pd.Series(None, index=runs.index))]
    for key, default in METRIC_SETTINGS.items():
        runs[key] = [c.get(key, default) if isinstance(c, dict) else default for c in cfgs]
    runs["threshold"] = runs["threshold"].astype(float)
    return runs


def label_data(runs: pd.DataFrame) -> pd.DataFrame:
    """A dataset name whose runs hold several data fingerprints (two user ``folder`` datasets
    in one experiment) is shown as ``<name>@<first 8 hex digits of the fingerprint>`` per
    fingerprint, so distinct data never share a table or a row."""
    if runs.empty or "data_fingerprint" not in runs:
        return runs
    runs = runs.copy()
    fp = runs["data_fingerprint"].fillna("").astype(str)
    several = fp.groupby(runs["dataset"]).transform("nunique") > 1
    short = fp.str.removeprefix("sha256:").str[:8]
    runs.loc[several, "dataset"] = runs.loc[several, "dataset"] + "@" + short[several]
    return runs


def experiment_choices(runs: pd.DataFrame) -> str:
    counts = runs.groupby("experiment")["run_id"].count()
    return ", ".join(f"{name!r} ({n} run{'s' if n != 1 else ''})" for name, n in counts.items())


def select_experiment(runs: pd.DataFrame, experiment: str | None, where: str) -> pd.DataFrame:
    """The runs of ``experiment``; None: the only one (SelectionError when several or absent)."""
    names = sorted(set(runs["experiment"]))
    if experiment is None:
        if len(names) > 1:
            raise SelectionError(f"{where} holds several experiments: {experiment_choices(runs)}; "
                                 "choose one with --experiment NAME")
        return runs
    if experiment not in names:
        raise SelectionError(f"{where}: no finished runs of experiment {experiment!r}; "
                             f"choices: {experiment_choices(runs) or '(none)'}")
    return runs[runs["experiment"] == experiment].reset_index(drop=True)


IDENTITY_COLUMNS = ("experiment", "overrides_json")


def _with_identity_columns(runs: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Add the ``experiment`` / ``overrides_json`` columns when the store has them but its
    ``RUN_COLUMNS`` do not list them yet (read-only query; absent columns stay absent)."""
    import sqlite3

    missing = [c for c in IDENTITY_COLUMNS if c not in runs.columns]
    if not missing or runs.empty:
        return runs
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        have = {r[1] for r in con.execute("PRAGMA table_info(runs)").fetchall()}
        cols = [c for c in missing if c in have]
        if not cols:
            return runs
        extra = pd.DataFrame(con.execute(f"SELECT run_id, {', '.join(cols)} FROM runs").fetchall(),
                             columns=["run_id", *cols])
    finally:
        con.close()
    return runs.merge(extra, on="run_id", how="left")


def load_results(store_path: str | Path, experiment: str | None = None,
                 all_experiments: bool = False) -> Results:
    """Selected done runs of the store at ``store_path`` and their metric and profile rows
    (``all_experiments=True``: every experiment, no selection).

    A missing file raises FileNotFoundError (the store is never created by reading);
    a file that is not a results store raises ValueError naming it.
    """
    from ..store import ALL_EXPERIMENTS, ResultsStore

    path = Path(store_path)
    if not path.is_file():
        raise FileNotFoundError(f"results store {path}: no such file")
    store = ResultsStore(path, readonly=True)
    try:
        # the store's rule: one run per distinct config (data fingerprint included) and seed
        runs = _with_identity_columns(store.select_runs(experiment=ALL_EXPERIMENTS), path)
        runs = label_data(annotate(runs))
        if not runs.empty and not all_experiments:
            runs = select_experiment(runs, experiment, f"results store {path}")
        ids = runs["run_id"].tolist()
        metrics = store.metrics(ids)
        profile = store.profile(ids)
    finally:
        store.close()
    from ..references import split_reference_rows

    metrics, references = split_reference_rows(metrics)
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    references["value"] = pd.to_numeric(references["value"], errors="coerce").astype(float)
    references["rater"] = references["rater"].astype("Int64")
    metrics["value"] = pd.to_numeric(metrics["value"], errors="coerce").astype(float)
    metrics["rater"] = metrics["rater"].astype("Int64")
    profile["value"] = pd.to_numeric(profile["value"], errors="coerce").astype(float)
    return Results(runs=runs, metrics=metrics, profile=profile, references=references)
