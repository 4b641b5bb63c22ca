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
from .references import add_reference_rows, diversity_reference_frame, reference_frame
from .significance import paired_pvalues

TITLES = {
    "diversity": "Diversity: the set of samples vs the set of raters",
    "diversity_match": "Diversity: samples matched to raters",
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
BOLD_MARGIN = 0.05  # with fewer seeds, bold needs a lead of more than 5% (relative)
MAX_COLUMNS = 8  # value columns per table; wider tables are split (SPLITS) or transposed
# a wide table split in parts: kind -> {part kind: metric names}; N goes with every part
SPLITS = {"diversity": {"diversity": ("ged", "dice_soft", "hm_iou", "ncc", "sample_diversity",
                                      "rater_disagreement"),
                        "diversity_match": ("dice_match", "dice_max", "dice_max_reverse",
                                            "sample_rater_dice_mean")}}
# the column rows are ordered by (after the reference row); default: the first ranked column
PRIMARY = {"diversity": "ged", "diversity_match": "dice_match", "personalization": "per_rater_dice_mean",
           "consensus": "consensus_dice", "cost": "infer_images_per_s"}
SMALL_SPLIT = 10  # fewer test cases per run: the tables warn
BUSY_LOAD_PER_CPU = 0.75  # load average per CPU above which the cost caption warns


def bold_rule(alpha: float) -> str:
    """The emphasis rule, as the caption states it."""
    return (f"Bold: the best method (rows with ≥ {MIN_SEEDS_FOR_SIGNIFICANCE} seeds: Welch p < {alpha:g} "
            f"against each other row; fewer seeds: ahead of each by > {BOLD_MARGIN:.0%}); tied leaders are "
            "all bold.")


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
    rater_names: list[str] | None = None  # the dataset's rater names (None: not recorded)
    transposed: bool = False  # rendered with one column per method (too wide otherwise)
    machine: pd.DataFrame | None = None  # cost tables: per row device, threads, load (CSV columns)

    @property
    def name(self) -> str:
        stem = self.group or (f"{self.dataset}_{self.preset}" if self.preset else str(self.dataset))
        return f"{stem}_{self.kind}"

    @property
    def title(self) -> str:
        return title(self.kind)

    def best(self) -> pd.DataFrame:
        """Bool mask of bold cells (``bold_rule``): per ranked column with at least two method
        values, the rows not told apart from the leader (``_tied``), when they lead at least one
        other row; columns without a direction, text columns, unavailable cells and reference
        rows are never bold."""
        out = pd.DataFrame(False, index=self.mean.index, columns=self.mean.columns)
        for col in self.columns:
            if col.text or col.higher_is_better is None:
                continue
            vals = self.mean[col.key].where(self.available[col.key])
            vals = vals.where(~vals.index.isin(self.reference_rows)).dropna()
            if len(vals) < 2:
                continue
            lead = vals.idxmax() if col.higher_is_better else vals.idxmin()
            top = [r for r in vals.index if r == lead or self._tied(col, lead, r)]
            if len(top) < len(vals):
                out.loc[top, col.key] = True
        return out

    def _tied(self, col: Column, a: str, b: str) -> bool:
        """Rows ``a`` and ``b`` not told apart in column ``col``: the same printed value; with
        ``MIN_SEEDS_FOR_SIGNIFICANCE`` seeds each, Welch's t-test p >= alpha; otherwise a gap of
        at most ``BOLD_MARGIN`` of the larger magnitude."""
        from scipy.stats import ttest_ind_from_stats

        ma, mb = float(self.mean.at[a, col.key]), float(self.mean.at[b, col.key])
        if format(ma / col.scale, col.fmt) == format(mb / col.scale, col.fmt):
            return True
        na, nb = int(self.n.at[a, col.key]), int(self.n.at[b, col.key])
        if min(na, nb) >= MIN_SEEDS_FOR_SIGNIFICANCE:
            sa, sb = float(self.std.at[a, col.key]), float(self.std.at[b, col.key])
            if not (np.isfinite(sa) and np.isfinite(sb)) or sa + sb == 0:
                return False  # no spread at all: different means are different
            p = float(ttest_ind_from_stats(ma, sa, na, mb, sb, nb, equal_var=False).pvalue)
            return not p < self.alpha
        return abs(ma - mb) <= BOLD_MARGIN * max(abs(ma), abs(mb))

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
    """The reference row (the method under study) first, then the others alphabetically."""
    return ([reference] if reference in methods else []) + sorted(m for m in set(methods) if m != reference)


def rank_rows(rows: list[str], mean: pd.DataFrame, columns: list[Column], kind: str,
              reference: str | None) -> list[str]:
    """The reference row first, then by the table's primary column (``PRIMARY``, else its first
    ranked column), best first; rows without a value last; ties by name."""
    ranked = [c for c in columns if not c.text and c.higher_is_better is not None]
    col = next((c for c in ranked if c.key == PRIMARY.get(kind)), ranked[0] if ranked else None)
    rest = sorted(r for r in rows if r != reference)
    if col is not None:
        sign = -1.0 if col.higher_is_better else 1.0
        vals = mean[col.key]
        rest.sort(key=lambda r: (bool(pd.isna(vals.get(r))),
                                 sign * float(vals.get(r)) if pd.notna(vals.get(r)) else 0.0))
    return ([reference] if reference in rows else []) + rest


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
    where = [f"experiment {key['experiment']}"] if str(key["experiment"]) != "default" else []
    if proto != "default":
        where.append(f"protocol {proto}" + (f": {LEAK_TEXT[proto]}" if proto in LEAK_TEXT else ""))
    parts = [f"{title(kind)} on {key['dataset']}" + (f" ({'; '.join(where)})" if where else "") + "."]
    if kind in ("diversity", "diversity_match"):
        parts.append(f"GED: {GED_ESTIMATOR_TEXT.get(key['ged_estimator'], key['ged_estimator'])}, "
                     f"convention {key['convention']}; NCC: {NCC_TEXT.get(key['ncc_maps'], key['ncc_maps'])}.")
        parts.append(convention_caption(str(key["convention"]), n_values))
    elif not kind.startswith("cost") and key["convention"] != "standard":
        parts.append(f"Convention {key['convention']}.")
    seeds = pd.Series(dtype=float) if seeds is None else seeds
    parts.append(f"{_seed_text(seeds)}.")
    if len(seeds) >= 2:
        parts.append(bold_rule(alpha))
    others = [r for r in seeds.index if r != reference]
    if significance and reference and others:
        if tested is not None and not tested:
            parts.append(f"No significance markers: they need ≥ {MIN_SEEDS_FOR_SIGNIFICANCE} seeds per row.")
        else:
            some = tested is not None and len(tested) < len(others)
            parts.append(f"† p < {alpha:g} vs {reference} (paired Wilcoxon"
                         + (f"; rows with ≥ {MIN_SEEDS_FOR_SIGNIFICANCE} seeds only" if some else "") + ").")
    return " ".join(parts)


def title(kind: str) -> str:
    """The table's heading: ``TITLES``, else the kind in words."""
    return TITLES.get(kind, kind.replace("_", " ").capitalize())


def _notes(kind: str, key: dict, runs: pd.DataFrame, cases: pd.DataFrame, left_out: list[str],
           raters: str = "") -> list[str]:
    """Longer notes shown under the table (LaTeX) and after it (Markdown)."""
    seeds = runs.groupby("row")["seed"].nunique()
    notes: list[str] = []
    if not kind.startswith("cost"):
        ncases = cases.groupby("run_id")["case_id"].nunique() if len(cases) else pd.Series([0])
        notes.append(f"Per case, then mean over the {_count_range(ncases)} test cases of each run, then "
                     f"mean ± std (ddof=1) over seeds ({_count_range(seeds)} per row; no ± with one "
                     "seed). — : the method does not produce this output.")
        notes.append(f"Convention {key['convention']}: {CONVENTION_TEXT.get(key['convention'], '')}.")
        if len(cases) and int(ncases.min()) < SMALL_SPLIT:
            notes.insert(0, f"Warning: only {_count_range(ncases)} test cases per run (fewer than {SMALL_SPLIT}): "
                            "these means are noisy; use a larger test split to compare methods.")
    else:
        notes.append(f"Mean ± std over seeds ({_count_range(seeds)} per row).")
    if kind == "personalization":
        notes.append((raters + " " if raters else "") + "Mean: mean over raters per case; "
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
                     "the raters).")
    if kind == "diversity_match":
        notes.append("Dice_match: samples matched one-to-one to raters (Hungarian), raters left without "
                     "a sample (N < R) score 0; Dice_max: each rater's best sample; Dice_max_rev: each "
                     "sample's best rater; Dice fixed: sample i vs rater i.")
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


def _rater_columns(columns: list[Column], names: list[str] | None) -> list[Column]:
    """Per-rater columns labelled by the dataset's short rater names (``raters.short_names``)."""
    from dataclasses import replace

    from .columns import rater_index
    from .raters import short_names

    if names is None:
        return columns
    short = short_names(names)
    return [replace(c, label=short[r]) if (r := rater_index(c.key)) is not None and r < len(short) else c
            for c in columns]


def _table(kind: str, key: dict, rows: list[str], columns: list[Column], stats: pd.DataFrame,
           pvals: pd.DataFrame, caps: dict[str, set[str]], text: pd.DataFrame | None,
           reference: str | None, alpha: float, runs: pd.DataFrame, cases: pd.DataFrame,
           requested: str | None = None, names: list[str] | None = None) -> Table | None:
    from .columns import rater_index
    from .raters import rater_legend

    keys = [c.key for c in columns]
    columns = _rater_columns(columns, names)
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
    shown = rank_rows(shown, mean.where(available), columns, kind, reference)
    idx = pd.Index(shown, name="method")
    mean, available, txt = mean.loc[shown], available.loc[shown], txt.loc[shown]
    std = grid(stats, "std").loc[shown]
    n = grid(stats, "n").loc[shown].fillna(0).astype(int)
    pvalue = grid(pvals, "p").loc[shown].copy() if not pvals.empty else pd.DataFrame(np.nan, index=idx, columns=keys)
    ref = reference if reference in shown else None
    seeds = runs[runs["row"].isin(shown)].groupby("row")["seed"].nunique().reindex(shown).fillna(0)
    tested = [r for r in shown if r != ref and seeds[r] >= MIN_SEEDS_FOR_SIGNIFICANCE] \
        if ref is not None and seeds[ref] >= MIN_SEEDS_FOR_SIGNIFICANCE else []
    # a paired test over cases says nothing about seed-to-seed variation, so fewer than
    # MIN_SEEDS_FOR_SIGNIFICANCE seeds per row give no test (p NaN, no marker)
    pvalue.loc[~pvalue.index.isin(tested)] = np.nan
    significance = any(c.significance for c in columns)
    per_rater = [k for k in keys if rater_index(k) is not None]
    legend = rater_legend(names, len(per_rater)) if per_rater else ""
    notes = _notes(kind, key, runs[runs["row"].isin(shown)], cases, left_out, legend)
    if per_rater and kind != "personalization" and legend:
        notes.insert(0, legend)
    marks: dict[str, str] = {}
    n_values: list[int] | None = None
    if kind in ("diversity", "diversity_match"):
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
                 ref, alpha, notes, marks, _group_stem(key), rater_names=names)


def _constant_n(keys: list[str], stats: pd.DataFrame) -> tuple[list[str], str]:
    """Without the N column when every row has the same N (> 1): it goes to a note instead."""
    from ..metrics import N_SAMPLES_METRIC

    if N_SAMPLES_METRIC not in keys:
        return keys, ""
    n = stats.loc[stats["key"] == N_SAMPLES_METRIC, "mean"].dropna().round()
    if n.nunique() != 1 or float(n.iloc[0]) <= 1:
        return keys, ""
    return [k for k in keys if k != N_SAMPLES_METRIC], f"N = {n.iloc[0]:.0f} samples per case for every row."


def _parts(kind: str, keys: list[str]) -> list[tuple[str, list[str]]]:
    """A table's columns in parts of at most ``MAX_COLUMNS`` (``SPLITS`` where the kind has a
    split, N first in each part; else in order)."""
    from ..metrics import N_SAMPLES_METRIC

    if len(keys) <= MAX_COLUMNS:
        return [(kind, keys)] if keys else []
    lead = [k for k in keys if k == N_SAMPLES_METRIC]
    rest = [k for k in keys if k not in lead]
    if kind in SPLITS:
        named = {k for ks in SPLITS[kind].values() for k in ks}
        parts = [(name, lead + [k for k in rest if k in ks]) for name, ks in SPLITS[kind].items()]
        other = [k for k in rest if k not in named]  # plugin metrics: the first part while it has room
        room = max(0, MAX_COLUMNS - len(parts[0][1]))
        parts[0] = (parts[0][0], parts[0][1] + other[:room])
        if other[room:]:
            parts.append((f"{kind}_other", lead + other[room:]))
    else:
        size = MAX_COLUMNS - len(lead)
        parts = [(kind if i == 0 else f"{kind}_{i // size + 1}", lead + rest[i:i + size])
                 for i in range(0, len(rest), size)]
    return [(name, ks) for name, ks in parts if len(ks) > len(lead)]


# short headers of the cost table (the summary table of `run` keeps the long labels), with a key
COST_SHORT = {"flops_per_image": "GFLOPs", "train_images_per_s": "Train/s", "infer_images_per_s": "Infer/s",
              "latency_p50_ms": "p50 (ms)", "latency_p95_ms": "p95 (ms)", "peak_memory_mb": "Mem (MB)"}
COST_KEY = ("GFLOPs: per image; Train/s, Infer/s: images per second (profiled); p50, p95: inference "
            "latency per batch, median and 95th percentile; Mem: peak memory; Eval: evaluation wall time.")


def _short(col: Column) -> Column:
    from dataclasses import replace

    return replace(col, label=COST_SHORT[col.key]) if col.key in COST_SHORT else col


def _number(v) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan


def machine_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Per row: device (CPU or GPU name), threads, cpu_count and the highest load average at
    the start of its runs (``env_json``; NaN / "" when not recorded)."""
    out = []
    for row, env_json in zip(runs["row"], runs.get("env_json", pd.Series("", index=runs.index)), strict=True):
        try:
            env = json.loads(env_json or "{}")
        except (TypeError, ValueError):
            env = {}
        env = env if isinstance(env, dict) else {}
        out.append({"method": row, "device": device_name(env_json), "threads": _number(env.get("threads")),
                    "cpu_count": _number(env.get("cpu_count")), "load_avg_1m": _number(env.get("load_avg_1m"))})
    frame = pd.DataFrame(out, columns=["method", "device", "threads", "cpu_count", "load_avg_1m"])
    return frame.groupby("method").agg(
        device=("device", lambda s: " / ".join(sorted({d for d in s if d}))),
        threads=("threads", "max"), cpu_count=("cpu_count", "max"), load_avg_1m=("load_avg_1m", "max"))


def machine_caption(machine: pd.DataFrame) -> str:
    """What produced the cost numbers: device, threads, load average at start; a warning when
    the load per CPU exceeded ``BUSY_LOAD_PER_CPU`` (timings then are not comparable)."""
    def span(s: pd.Series, fmt: str) -> str:
        s = s.dropna()
        if s.empty:
            return "not recorded"
        lo, hi = format(s.min(), fmt), format(s.max(), fmt)
        return lo if lo == hi else f"{lo}-{hi}"

    devices = sorted({d for ds in machine["device"] for d in str(ds).split(" / ") if d})
    parts = [f"Measured on {' / '.join(devices) or 'an unrecorded device'}; threads {span(machine['threads'], '.0f')}; "
             f"load average at start {span(machine['load_avg_1m'], '.1f')}"
             + (f" on {span(machine['cpu_count'], '.0f')} CPUs." if machine["cpu_count"].notna().any() else ".")]
    per_cpu = machine["load_avg_1m"] / machine["cpu_count"]
    busy = sorted(machine.index[per_cpu > BUSY_LOAD_PER_CPU])
    if busy:
        parts.append(f"Warning: the machine was busy when {', '.join(busy)} started (load above "
                     f"{BUSY_LOAD_PER_CPU:g} per CPU): times and rates are not comparable; rerun on an idle machine.")
    return " ".join(parts)


def build_tables(results: Results, reference: str | None = None, alpha: float = 0.05) -> list[Table]:
    """All tables for every table group in ``results``.

    ``reference``: the row significance is tested against (a row label or a method name);
    None: ``dpersona`` when present (no test when it is absent or has several rows). An explicit
    reference that matches no row, or several, raises ValueError listing the rows."""
    from .loader import annotate
    from .raters import group_rater_names

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
        names = group_rater_names(group)
        args = dict(reference=ref, alpha=alpha, runs=group, cases=cases, requested=reference, names=names)
        for kind in metric_tables():
            keys, n_note = _constant_n(table_keys(kind, present), stats)
            for part, part_keys in _parts(kind, keys):
                t = _table(part, key, rows, [metric_column(k) for k in part_keys], stats, pvals, caps,
                           None, **args)
                if t is not None and n_note:
                    t.notes.insert(0, n_note)
                if t is not None and kind == "personalization":
                    t = add_reference_rows(t, *reference_frame(results.references, ids))
                if t is not None and kind == "diversity":  # the synthetic set's ambiguity part
                    t = add_reference_rows(t, *diversity_reference_frame(results.references, ids))
                if t is not None:
                    tables.append(t)
        pstats = seed_stats(prof[prof["run_id"].isin(ids)])
        machine = machine_frame(group)
        all_keys = profile_keys(set(pstats["key"]))
        cost_args = dict(stats=pstats, pvals=pd.DataFrame(columns=["method", "key", "p"]), caps=caps,
                         **{**args, "requested": None})  # the reference only orders the rows here
        cost_keys = [k for k in all_keys if cost_table(k) == "cost"]
        if cost_keys:
            t = _table("cost", key, rows, [_short(cost_column(k)) for k in cost_keys], text=None, **cost_args)
            if t is not None:
                t.notes.append(COST_KEY)
                t.machine = machine.reindex(t.methods)
                t.caption += " " + machine_caption(t.machine)
                tables.append(t)
        # per phase and per stage: a table of its own, one column per method
        detail_keys = [k for k in all_keys if cost_table(k) == "cost_detail"]
        if detail_keys:
            t = _table("cost_detail", key, rows, [cost_column(k) for k in detail_keys], text=None, **cost_args)
            if t is not None:
                t.transposed = True
                t.machine = machine.reindex(t.methods)
                tables.append(t)
    return tables
