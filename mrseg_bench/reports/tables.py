"""Report tables as numbers: one ``Table`` per (dataset, preset) and kind.

Kinds: ``diversity`` (GED, Dice_soft, Dice_match, Dice_max, HM-IoU, sample diversity),
``personalization`` (per-rater Dice for each rater and their mean), ``consensus``
(consensus Dice) and ``cost`` (params, FLOPs, throughput, latency, memory, device). A table
holds means, stds, seed counts and p-values as DataFrames (index: methods, columns: keys);
renderers (latex.py, markdown.py, CSV) only format them. A cell is "—" when the method does not
declare the capability the column requires (``runs.capabilities``) or has no value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from .aggregate import case_values, profile_values, run_means, seed_stats
from .columns import Column, cost_column, metric_column, required_capability
from .loader import Results
from .significance import paired_pvalues

DIVERSITY_KEYS = ("ged", "dice_soft", "dice_match", "dice_max", "hm_iou", "sample_rater_dice_mean",
                  "sample_diversity")
CONSENSUS_KEYS = ("consensus_dice", "consensus_dice_soft")
COST_KEYS = ("params", "flops_per_image", "train_images_per_s", "infer_images_per_s",
             "latency_p50_ms", "peak_memory_mb", "device")
TITLES = {
    "diversity": "Diversity (samples vs all raters)",
    "personalization": "Personalisation (per-rater Dice, output r vs rater r)",
    "consensus": "Consensus",
    "cost": "Cost",
}
GED_CONVENTIONS = {
    "standard": "GED convention standard: d = 1 - IoU, two empty masks have IoU 1",
    "dpersona": "GED convention dpersona: IoU = inter / (union + 1e-8), so two empty masks "
                "have d = 1 (reproduces the D-Persona code)",
}


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
    reference: str = "dpersona"
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        # a user preset's name is its path: slugged, never a file name as it is
        from ..identity import experiment_slug

        return (f"{self.dataset}_{experiment_slug(self.preset)}_{self.kind}" if self.preset
                else f"{self.dataset}_{self.kind}")

    def best(self) -> pd.DataFrame:
        """Bool mask: the best mean per column by its direction, plus cells that print the
        same as the best (ties); columns without a direction, text columns and unavailable
        cells are never best."""
        out = pd.DataFrame(False, index=self.mean.index, columns=self.mean.columns)
        for col in self.columns:
            if col.text or col.higher_is_better is None:
                continue
            vals = self.mean[col.key].where(self.available[col.key])
            if vals.notna().sum() == 0:
                continue
            best = vals.max() if col.higher_is_better else vals.min()
            # ties: equal numbers, or equal at the printed precision (what a reader sees)
            shown = vals.map(lambda v, c=col: format(v / c.scale, c.fmt) if pd.notna(v) else "")
            out[col.key] = ((vals == best) | (shown == format(best / col.scale, col.fmt))).fillna(False)
        return out

    def significant(self) -> pd.DataFrame:
        """Bool mask: p < alpha against the reference method."""
        return (self.pvalue < self.alpha).fillna(False)


def _capabilities(runs: pd.DataFrame) -> dict[str, set[str]]:
    """Capabilities every run of a method declares (intersection over its runs)."""
    caps: dict[str, set[str]] = {}
    for method, cap in zip(runs["method"], runs["capabilities"], strict=True):
        here = {c.strip() for c in str(cap or "").split(",") if c.strip()}
        caps[method] = caps[method] & here if method in caps else here
    return caps


def device_name(env_json: str | None) -> str:
    """Device name from a run's ``env_json`` ("" when absent or unreadable)."""
    try:
        env = json.loads(env_json or "{}")
    except (TypeError, ValueError):
        return ""
    if not isinstance(env, dict):
        return ""
    for key in ("device_name", "device", "gpu", "cpu", "processor"):
        if env.get(key):
            return str(env[key])
    return ""


def method_order(methods: list[str], reference: str) -> list[str]:
    """Baselines alphabetically, the method under study last."""
    return sorted(m for m in set(methods) if m != reference) + ([reference] if reference in methods else [])


def _count_range(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _caption(kind: str, dataset: str, preset: str, runs: pd.DataFrame, cases: pd.DataFrame,
             reference: str, alpha: float) -> str:
    seeds = runs.groupby("method")["seed"].nunique()
    protocols = ", ".join(sorted({str(p) for p in runs["protocol"] if p})) or "default"
    parts = [f"{TITLES[kind]} on {dataset} (preset {preset or '-'}, protocol {protocols})."]
    if kind == "cost":
        parts.append(f"Mean ± std over seeds ({_count_range(seeds)} per method; no ± with one seed).")
        parts.append("↑/↓: higher/lower is better; bold: best per column.")
        return " ".join(parts)
    ncases = cases.groupby("run_id")["case_id"].nunique() if len(cases) else pd.Series([0])
    parts.append(
        f"Per case, then mean over the {_count_range(ncases)} test cases of each run, then "
        f"mean ± std (ddof=1) over seeds ({_count_range(seeds)} per method; no ± with one seed).")
    parts.append("↑/↓: higher/lower is better; bold: best per column; — : the method does not "
                 "produce this output.")
    parts.append(f"† p < {alpha:g}, two-sided paired Wilcoxon signed-rank test over test cases "
                 f"against {reference} (per-case values averaged over shared seeds).")
    if kind == "personalization":
        parts.append("Rk: rater k (1-based, the dataset's rater order); Mean: mean over raters "
                     "per case; Matched: Hungarian-matched outputs (the D-Persona protocol). Per-rater "
                     "scores measure personalisation only where rater identity is fixed across "
                     "cases (not LIDC, whose raters are anonymous).")
    if kind == "diversity":
        conventions = sorted({str(c) for c in runs["convention"] if c}) or ["standard"]
        parts.append("GED: squared generalised energy distance; "
                     + "; ".join(GED_CONVENTIONS.get(c, f"GED convention {c}") for c in conventions)
                     + ".")
    return " ".join(parts)


def _table(kind: str, dataset: str, preset: str, methods: list[str], columns: list[Column],
           stats: pd.DataFrame, pvals: pd.DataFrame, caps: dict[str, set[str]],
           text: pd.DataFrame | None, caption: str, reference: str, alpha: float) -> Table:
    keys = [c.key for c in columns]
    idx = pd.Index(methods, name="method")

    def grid(frame: pd.DataFrame, value: str, fill=np.nan) -> pd.DataFrame:
        if frame.empty:
            return pd.DataFrame(fill, index=idx, columns=keys, dtype=float)
        wide = frame.pivot_table(index="method", columns="key", values=value, aggfunc="first", dropna=False)
        return wide.reindex(index=idx, columns=keys).astype(float)

    mean = grid(stats, "mean")
    std = grid(stats, "std")
    n = grid(stats, "n").fillna(0).astype(int)
    pvalue = grid(pvals, "p") if not pvals.empty else pd.DataFrame(np.nan, index=idx, columns=keys)
    available = pd.DataFrame(True, index=idx, columns=keys)
    for col in columns:
        req = required_capability(col.key)
        have = [req is None or req.value in caps.get(m, set()) for m in methods]
        available[col.key] = np.asarray(have) & (mean[col.key].notna().to_numpy() | col.text)
    txt = pd.DataFrame("", index=idx, columns=keys, dtype=object)
    if text is not None:
        for key in text.columns:
            if key in keys:
                txt[key] = text[key].reindex(idx).fillna("")
                available[key] = txt[key] != ""
    return Table(kind, dataset, preset, methods, columns, mean, std, n, pvalue, available, txt,
                 caption, reference, alpha)


def build_tables(results: Results, reference: str = "dpersona", alpha: float = 0.05) -> list[Table]:
    """All tables for every (dataset, preset) in ``results`` (latest done runs only)."""
    runs = results.runs
    if runs.empty:
        return []
    per_run = run_means(results)
    cases_all = case_values(results)
    prof = profile_values(results)
    tables: list[Table] = []
    for (dataset, preset), group in runs.groupby(["dataset", "preset"], sort=True, dropna=False):
        methods = method_order(group["method"].tolist(), reference)
        caps = _capabilities(group)
        ids = set(group["run_id"])
        stats = seed_stats(per_run[per_run["run_id"].isin(ids)])
        cases = cases_all[cases_all["run_id"].isin(ids)]
        pvals = paired_pvalues(cases, reference)
        present = set(stats["key"])

        cap = partial(_caption, dataset=str(dataset), preset=str(preset), runs=group, cases=cases,
                      reference=reference, alpha=alpha)

        div_keys = [k for k in DIVERSITY_KEYS if k in present]
        if div_keys:
            tables.append(_table("diversity", dataset, preset, methods,
                                 [metric_column(k) for k in div_keys], stats, pvals, caps, None,
                                 cap("diversity"), reference, alpha))
        rater_keys = sorted((k for k in present if k.startswith("per_rater_dice[")),
                            key=lambda k: int(k[len("per_rater_dice["):-1]))
        pers_keys = rater_keys + [k for k in ("per_rater_dice_mean", "per_rater_dice_matched")
                                  if k in present]
        if pers_keys:
            tables.append(_table("personalization", dataset, preset, methods,
                                 [metric_column(k) for k in pers_keys], stats, pvals, caps, None,
                                 cap("personalization"), reference, alpha))
        cons_keys = [k for k in CONSENSUS_KEYS if k in present]
        if cons_keys:
            tables.append(_table("consensus", dataset, preset, methods,
                                 [metric_column(k) for k in cons_keys], stats, pvals, caps, None,
                                 cap("consensus"), reference, alpha))
        pstats = seed_stats(prof[prof["run_id"].isin(ids)])
        devices = group.assign(device=group["env_json"].map(device_name))
        dev = devices.groupby("method")["device"].agg(
            lambda s: " / ".join(sorted({d for d in s if d})))
        cost_keys = [k for k in COST_KEYS if k == "device" or k in set(pstats["key"])]
        if len(cost_keys) > 1 or dev.str.len().sum() > 0:
            tables.append(_table("cost", dataset, preset, methods,
                                 [cost_column(k) for k in cost_keys], pstats,
                                 pd.DataFrame(columns=["method", "key", "p"]), caps,
                                 dev.to_frame("device"), cap("cost"), reference, alpha))
    return tables
