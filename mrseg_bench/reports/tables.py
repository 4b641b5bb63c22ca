"""Report tables as numbers: one ``Table`` per table group and kind.

A table group never mixes datasets, experiments, protocols or metric settings (convention, GED
estimator, NCC maps, threshold). Kinds: the tables the metrics name in their ``MetricSpec``
(diversity, personalization, consensus, and any a plugin names), then ``cost`` (profile values
and device). Rows are configurations (``runs["row"]``: method plus overrides). A table holds
means, stds, seed counts and p-values as DataFrames (index: rows, columns: keys); renderers
(latex.py, markdown.py, CSV) only format them. A cell is "—" when the row does not declare the
capability the column requires (``runs.capabilities``) or has no value; a row with no value in
any column of a table is left out of it and named in a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics.conventions import convention_caption
from .aggregate import case_values, profile_values, run_means, seed_stats
from .columns import (
    Column,
    cost_column,
    cost_table,
    metric_column,
    metric_tables,
    profile_keys,
    required_capability,
    table_keys,
)
from .loader import METRIC_SETTINGS, Results
from .references import add_reference_rows, reference_frame
from .significance import paired_pvalues

TITLES = {
    "diversity": "Diversity (samples vs all raters)",
    "personalization": "Personalisation (output r vs rater r)",
    "consensus": "Consensus",
    "cost": "Cost",
    "cost_detail": "Cost per phase and stage",
}
GED_ESTIMATOR_TEXT = {"all_pairs": "all pairs, i = i' included", "distinct": "distinct pairs only"}
NCC_TEXT = {"soft": "soft sample maps (PHiSeg)", "binary": "binarised samples"}
CONVENTION_TEXT = {
    "standard": "two empty masks have IoU 1",
    "dpersona": "IoU = inter / (union + 1e-8), as the D-Persona code",
}
LEAK_TEXT = {"dpersona": "checkpoint chosen on the test fold; not a clean estimate"}
GROUP_KEYS = ["dataset", "experiment", "protocol", "convention", *METRIC_SETTINGS]
DEFAULT_REFERENCE = "dpersona"
MIN_SEEDS_FOR_SIGNIFICANCE = 3  # fewer seeds per row: no † markers (and no p-values)


@dataclass
class Table:
    kind: str
    dataset: str
    preset: str
    methods: list[str]
    columns: list[Column]
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    pvalue: pd.DataFrame
    available: pd.DataFrame
    text: pd.DataFrame
    caption: str = ""
    reference: str | None = DEFAULT_REFERENCE
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)
    marks: dict[str, str] = field(default_factory=dict)  # row -> footnote mark
    group: str = ""  # file stem of the table group, e.g. "synthetic_smoke"
    reference_rows: list[str] = field(default_factory=list)  # rows that are not methods (oracle)

    @property
    def name(self) -> str:
        stem = self.group or (f"{self.dataset}_{self.preset}" if self.preset else str(self.dataset))
        return f"{stem}_{self.kind}"

    def best(self) -> pd.DataFrame:
        """Bool mask: the best mean per column by its direction, plus cells that print the
        same as the best (ties); columns without a direction, text columns and unavailable
        cells are never best."""
        out = pd.DataFrame(False, index=self.mean.index, columns=self.mean.columns)
        for col in self.columns:
            if col.text or col.higher_is_better is None:
                continue
            vals = self.mean[col.key].where(self.available[col.key])
            vals = vals.where(~vals.index.isin(self.reference_rows))  # reference rows are not ranked
            if vals.notna().sum() == 0:
                continue
            best = vals.max() if col.higher_is_better else vals.min()
            # ties: equal numbers, or equal at the printed precision (what a reader sees)
            shown = vals.map(lambda v, c=col: format(v / c.scale, c.fmt) if pd.notna(v) else "")
            out[col.key] = ((vals == best) | (shown == format(best / col.scale, col.fmt))).fillna(False)
        return out

    def significant(self) -> pd.DataFrame:
        """Bool mask: p < alpha against the reference row."""
        return (self.pvalue < self.alpha).fillna(False)


def _capabilities(runs: pd.DataFrame) -> dict[str, set[str]]:
    """Capabilities every run of a row declares (intersection over its runs)."""
    caps: dict[str, set[str]] = {}
    for row, cap in zip(runs["row"], runs["capabilities"], strict=True):
        here = {c.strip() for c in str(cap or "").split(",") if c.strip()}
        caps[row] = caps[row] & here if row in caps else here
    return caps


def device_name(env_json: str | None) -> str:
    """Device name from a run's ``env_json`` ("" when absent or unreadable)."""
    try:
        env = json.loads(env_json or "{}")
    except (TypeError, ValueError):
        return ""
    if not isinstance(env, dict):
        return ""
    for key in ("device_name", "gpu_name", "cpu_model", "device", "gpu", "cpu", "processor"):
        if env.get(key):
            return str(env[key])
    return ""


def method_order(methods: list[str], reference: str | None) -> list[str]:
    """Rows alphabetically, the reference row (the method under study) last."""
    return sorted(m for m in set(methods) if m != reference) + ([reference] if reference in methods else [])


def resolve_reference(rows_of_method: pd.DataFrame, reference: str | None, explicit: bool) -> str | None:
    """The reference row label. ``reference`` may be a row label or a method name; a method
    with several rows resolves to its row without overrides. Not found or ambiguous: an
    explicit reference raises ValueError listing the rows, the default gives None."""
    rows = sorted(set(rows_of_method["row"]))
    if reference is None:
        return None
    if reference in rows:
        return reference
    mine = rows_of_method[rows_of_method["method"] == reference]
    plain = sorted(set(mine.loc[mine["overrides_key"] == "{}", "row"]))
    cands = sorted(set(mine["row"]))
    if len(cands) == 1:
        return cands[0]
    if len(plain) == 1:
        return plain[0]
    if explicit:
        raise ValueError(f"--reference {reference!r} matches {'no row' if not cands else 'several rows'}; "
                         f"rows: {', '.join(rows)}")
    return None


def _count_range(values: pd.Series) -> str:
    if len(values) == 0:
        return "0"
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _group_stem(key: dict) -> str:
    """File stem: dataset_experiment, plus the settings that differ from their defaults."""
    import re

    parts = [str(key["dataset"]), str(key["experiment"])]
    if key["protocol"] != "default":
        parts.append(str(key["protocol"]))
    if key["convention"] != "standard":
        parts.append(str(key["convention"]))
    for k, default in METRIC_SETTINGS.items():
        if key[k] != default:
            parts.append(f"{k}-{key[k]}")
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(p.strip("/") for p in parts if p)).strip("-")


def _seed_text(seeds: pd.Series) -> str:
    """"Mean ± std over 3 seeds" / "One seed per row (no ± std)" / "... over seeds (1-3 per row)"."""
    if len(seeds) == 0 or int(seeds.max()) <= 1:
        return "One seed per row (no ± std)"
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"Mean ± std over {lo} seeds" if lo == hi else f"Mean ± std over seeds ({lo}-{hi} per row)"


def _caption(kind: str, key: dict, reference: str | None, alpha: float, significance: bool,
             seeds: pd.Series | None = None, tested: list[str] | None = None,
             n_values: list[int] | None = None) -> str:
    """Short caption: what, where, and the settings a reader must know. ``seeds``: seeds per
    row; ``tested``: the rows tested against ``reference`` (None: every row); ``n_values``: the
    rows' sample counts N (diversity)."""
    proto = str(key["protocol"])
    leak = f": {LEAK_TEXT[proto]}" if proto in LEAK_TEXT else ""
    parts = [f"{TITLES.get(kind, kind.replace('_', ' ').capitalize())} on {key['dataset']} "
             f"(experiment {key['experiment']}; protocol {proto}{leak})."]
    if kind == "diversity":
        parts.append(f"GED: {GED_ESTIMATOR_TEXT.get(key['ged_estimator'], key['ged_estimator'])}, "
                     f"convention {key['convention']}; NCC: {NCC_TEXT.get(key['ncc_maps'], key['ncc_maps'])}.")
        parts.append(convention_caption(str(key["convention"]), n_values))
    elif not kind.startswith("cost") and key["convention"] != "standard":
        parts.append(f"Convention {key['convention']}.")
    seeds = pd.Series(dtype=float) if seeds is None else seeds
    parts.append(f"{_seed_text(seeds)}; bold: best.")
    others = [r for r in seeds.index if r != reference]
    if significance and reference and others:
        if tested is not None and not tested:
            parts.append(f"No significance markers: they need ≥ {MIN_SEEDS_FOR_SIGNIFICANCE} seeds per row.")
        else:
            some = tested is not None and len(tested) < len(others)
            parts.append(f"† p < {alpha:g} vs {reference} (paired Wilcoxon"
                         + (f"; rows with ≥ {MIN_SEEDS_FOR_SIGNIFICANCE} seeds only" if some else "") + ").")
    return " ".join(parts)


def _notes(kind: str, key: dict, runs: pd.DataFrame, cases: pd.DataFrame, left_out: list[str]) -> list[str]:
    """Longer notes shown under the table (LaTeX) and after it (Markdown)."""
    seeds = runs.groupby("row")["seed"].nunique()
    notes: list[str] = []
    if not kind.startswith("cost"):
        ncases = cases.groupby("run_id")["case_id"].nunique() if len(cases) else pd.Series([0])
        notes.append(f"Per case, then mean over the {_count_range(ncases)} test cases of each run, then "
                     f"mean ± std (ddof=1) over seeds ({_count_range(seeds)} per row; no ± with one "
                     "seed). — : the method does not produce this output.")
        notes.append(f"Convention {key['convention']}: {CONVENTION_TEXT.get(key['convention'], '')}.")
    else:
        notes.append(f"Mean ± std over seeds ({_count_range(seeds)} per row).")
    if kind == "personalization":
        notes.append("Rk: rater k (the dataset's rater order); Mean: mean over raters per case; "
                     "Matched: outputs matched to raters by the Hungarian algorithm (the D-Persona "
                     "protocol). Per-rater scores measure personalisation only where rater identity "
                     "is fixed across cases (not LIDC).")
    if kind == "cost_detail":
        notes.append("Peak mem predict / train: the peak during that phase (CPU: resident set of a "
                     "fresh process, baseline included; CUDA: max_memory_allocated); Mem baseline: that "
                     "process before the phases. Train img/s <stage> (profiled): timed steps on a copy "
                     "of the model; Run train img/s: the run's own training images / training seconds; "
                     "Wall <stage>: the run's wall time in that stage.")
    if kind == "diversity":
        notes.append("Sample div. (spread of the samples) is read against Rater disagr. (spread of "
                     "the raters). Dice_match: raters left without a sample (N < R) score 0.")
    if left_out:
        notes.append(f"Not shown (no {kind} output): {', '.join(left_out)}.")
    return notes


def _n_marks(mean: pd.DataFrame, rows: list[str]) -> tuple[dict[str, str], str]:
    """Rows whose N differs from the most common N, or N = 1: marks and a note."""
    from ..metrics import N_SAMPLES_METRIC

    if N_SAMPLES_METRIC not in mean.columns:
        return {}, ""
    n = mean.loc[rows, N_SAMPLES_METRIC].dropna()
    if n.empty:
        return {}, ""
    common = n.round().mode().min()
    odd = [r for r in n.index if round(n[r]) != common or round(n[r]) == 1]
    if not odd:
        return {}, ""
    desc = ", ".join(f"{r} (N = {n[r]:.0f})" for r in odd)
    return ({r: "*" for r in odd},
            f"* N differs from the other rows (N = {common:.0f}) or is 1: {desc}. GED (all pairs) "
            "and Dice_match depend on N, so these rows are not directly comparable.")


def _table(kind: str, key: dict, rows: list[str], columns: list[Column], stats: pd.DataFrame,
           pvals: pd.DataFrame, caps: dict[str, set[str]], text: pd.DataFrame | None,
           reference: str | None, alpha: float, runs: pd.DataFrame, cases: pd.DataFrame,
           requested: str | None = None) -> Table | None:
    keys = [c.key for c in columns]
    idx = pd.Index(rows, name="method")

    def grid(frame: pd.DataFrame, value: str) -> pd.DataFrame:
        if frame.empty:
            return pd.DataFrame(np.nan, index=idx, columns=keys, dtype=float)
        wide = frame.pivot_table(index="method", columns="key", values=value, aggfunc="first", dropna=False)
        return wide.reindex(index=idx, columns=keys).astype(float)

    mean = grid(stats, "mean")
    available = pd.DataFrame(True, index=idx, columns=keys)
    for col in columns:
        req = required_capability(col.key)
        have = [req is None or req.value in caps.get(m, set()) for m in rows]
        available[col.key] = np.asarray(have) & (mean[col.key].notna().to_numpy() | col.text)
    txt = pd.DataFrame("", index=idx, columns=keys, dtype=object)
    if text is not None:
        for k in text.columns:
            if k in keys:
                txt[k] = text[k].reindex(idx).fillna("")
                available[k] = txt[k] != ""
    numeric = [c.key for c in columns if not c.text]
    shown = [r for r in rows if bool(available.loc[r, numeric].any())] if numeric else rows
    if not shown:
        return None
    left_out = [r for r in rows if r not in shown]
    idx = pd.Index(shown, name="method")
    mean, available, txt = mean.loc[shown], available.loc[shown], txt.loc[shown]
    std = grid(stats, "std").loc[shown]
    n = grid(stats, "n").loc[shown].fillna(0).astype(int)
    pvalue = grid(pvals, "p").loc[shown].copy() if not pvals.empty else pd.DataFrame(np.nan, index=idx, columns=keys)
    ref = reference if reference in shown else None
    seeds = runs[runs["row"].isin(shown)].groupby("row")["seed"].nunique().reindex(shown).fillna(0)
    tested = [r for r in shown if r != ref and seeds[r] >= MIN_SEEDS_FOR_SIGNIFICANCE] \
        if ref is not None and seeds[ref] >= MIN_SEEDS_FOR_SIGNIFICANCE else []
    # issue 17: a paired test over cases says nothing about seed-to-seed variation, so fewer
    # than MIN_SEEDS_FOR_SIGNIFICANCE seeds per row give no test (p NaN, no marker)
    pvalue.loc[~pvalue.index.isin(tested)] = np.nan
    significance = any(c.significance for c in columns)
    notes = _notes(kind, key, runs[runs["row"].isin(shown)], cases, left_out)
    marks: dict[str, str] = {}
    n_values: list[int] | None = None
    if kind == "diversity":
        from ..metrics import N_SAMPLES_METRIC

        full = grid(stats, "mean") if N_SAMPLES_METRIC not in keys else mean
        marks, note = _n_marks(full, shown) if N_SAMPLES_METRIC in full.columns else ({}, "")
        if N_SAMPLES_METRIC in full.columns:
            n_values = [round(v) for v in full.loc[shown, N_SAMPLES_METRIC].dropna()]
        if note:
            notes.append(note)
    if significance and ref is None and (requested or reference):
        why = "has several rows (choose one with --reference)" if reference is None and requested \
            and (runs["method"] == requested).sum() and runs[runs["method"] == requested]["row"].nunique() > 1 \
            else "is not in this table"
        notes.append(f"No significance test: the reference {requested or reference} {why}.")
    untested = [r for r in shown if r != ref and r not in tested]
    if significance and tested and untested:
        notes.append(f"No significance test (fewer than {MIN_SEEDS_FOR_SIGNIFICANCE} seeds): {', '.join(untested)}.")
    return Table(kind, str(key["dataset"]), str(key["experiment"]), shown, columns, mean, std, n,
                 pvalue, available, txt, _caption(kind, key, ref, alpha, significance and ref is not None,
                                                  seeds, tested, n_values),
                 ref, alpha, notes, marks, _group_stem(key))


def build_tables(results: Results, reference: str | None = None, alpha: float = 0.05) -> list[Table]:
    """All tables for every table group in ``results``.

    ``reference``: the row significance is tested against (a row label or a method name);
    None: ``dpersona`` when present (no test when it is absent or has several rows). An explicit
    reference that matches no row, or several, raises ValueError listing the rows."""
    from .loader import annotate

    runs = results.runs
    if runs.empty:
        return []
    if "row" not in runs or "experiment" not in runs:
        runs = annotate(runs)
        results = Results(runs, results.metrics, results.profile, results.references)
    explicit = reference is not None
    reference = reference if explicit else DEFAULT_REFERENCE
    if explicit and reference not in set(runs["row"]) | set(runs["method"]):
        raise ValueError(f"--reference {reference!r}: no such method or row; "
                         f"rows: {', '.join(sorted(set(runs['row'])))}")
    per_run = run_means(results, rater_means=True)
    cases_all = case_values(results, rater_means=True)
    prof = profile_values(results)
    tables: list[Table] = []
    for values, group in runs.groupby(GROUP_KEYS, sort=True, dropna=False):
        key = dict(zip(GROUP_KEYS, values, strict=True))
        ref = resolve_reference(group, reference, explicit)
        rows = method_order(group["row"].tolist(), ref)
        caps = _capabilities(group)
        ids = set(group["run_id"])
        stats = seed_stats(per_run[per_run["run_id"].isin(ids)])
        cases = cases_all[cases_all["run_id"].isin(ids)]
        pvals = paired_pvalues(cases, ref) if ref else pd.DataFrame(columns=["method", "key", "p", "n_pairs"])
        present = set(stats["key"])
        args = dict(reference=ref, alpha=alpha, runs=group, cases=cases, requested=reference)
        for kind in metric_tables():
            keys = table_keys(kind, present)
            if keys:
                t = _table(kind, key, rows, [metric_column(k) for k in keys], stats, pvals, caps,
                           None, **args)
                if t is not None and kind == "personalization":
                    t = add_reference_rows(t, *reference_frame(results.references, ids))
                if t is not None:
                    tables.append(t)
        pstats = seed_stats(prof[prof["run_id"].isin(ids)])
        devices = group.assign(device=group["env_json"].map(device_name) if "env_json" in group else "")
        dev = devices.groupby("row")["device"].agg(lambda s: " / ".join(sorted({d for d in s if d})))
        dev.index.name = "method"
        all_keys = profile_keys(set(pstats["key"])) + ["device"]
        cost_args = dict(stats=pstats, pvals=pd.DataFrame(columns=["method", "key", "p"]), caps=caps,
                         **{**args, "reference": None, "requested": None})
        cost_keys = [k for k in all_keys if cost_table(k) == "cost"]
        if len(cost_keys) > 1 or dev.str.len().sum() > 0:
            t = _table("cost", key, rows, [cost_column(k) for k in cost_keys], text=dev.to_frame("device"),
                       **cost_args)
            if t is not None:
                tables.append(t)
        # per phase and per stage: a table of its own, so the cost table stays readable
        detail_keys = [k for k in all_keys if cost_table(k) == "cost_detail"]
        if detail_keys:
            t = _table("cost_detail", key, rows, [cost_column(k) for k in detail_keys], text=None, **cost_args)
            if t is not None:
                tables.append(t)
    return tables

