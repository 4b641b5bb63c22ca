"""What each report column is: label, direction (higher/lower is better), required capability,
format, table.

Metric columns come from the registered ``MetricSpec``s (``mrseg_bench.metrics.suite``): label,
direction, format, table, per-rater expansion, significance, summary flag, so a plugin metric
gets its column without any report code. Descriptive metrics (``MetricSpec.descriptive``) get
direction ``None``: no arrow, no bold. ``PROFILE_COLUMNS`` describes the profile (cost) values.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..types import Capability


@dataclass(frozen=True)
class ProfileColumn:
    key: str
    label: str
    higher_is_better: bool | None
    fmt: str = ".3g"
    scale: float = 1.0
    summary: bool = False
    table: str = "cost"  # "cost" (the summary) or "cost_detail" (per phase, per stage)


PROFILE_COLUMNS: tuple[ProfileColumn, ...] = (
    ProfileColumn("params", "Params (M)", False, ".2f", 1e6, summary=True),
    ProfileColumn("flops_per_image", "GFLOPs/img", False, ".3g", 1e9, summary=True),
    ProfileColumn("train_images_per_s", "Train img/s", True, ".1f", summary=True),
    ProfileColumn("infer_images_per_s", "Infer img/s", True, ".1f", summary=True),
    ProfileColumn("latency_p50_ms", "Latency p50 (ms)", False, ".1f", summary=True),
    ProfileColumn("latency_p95_ms", "Latency p95 (ms)", False, ".1f"),
    ProfileColumn("peak_memory_mb", "Peak mem (MB)", False, ".0f"),
    ProfileColumn("eval_wall_s", "Eval (s)", False, ".1f"),
    # the per-phase and per-run figures behind the summary
    ProfileColumn("peak_memory_predict_mb", "Peak mem predict (MB)", False, ".0f", table="cost_detail"),
    ProfileColumn("peak_memory_train_mb", "Peak mem train (MB)", False, ".0f", table="cost_detail"),
    ProfileColumn("peak_memory_baseline_mb", "Mem baseline (MB)", None, ".0f", table="cost_detail"),
    ProfileColumn("train_images_per_s_run", "Run train img/s", True, ".1f", table="cost_detail"),
    # iterative samplers (CCDM): ms per sample at the preset's and at the published step count
    ProfileColumn("sample_ms", "Sample (ms, preset steps)", False, ".1f", table="cost_detail"),
    ProfileColumn("sample_ms_published_steps", "Sample (ms, published steps)", False, ".1f", table="cost_detail"),
)
_PROFILE = {c.key: c for c in PROFILE_COLUMNS}
_STAGE_PREFIXES = {"train_images_per_s_": ("Train img/s {} (profiled)", True, ".1f"),
                   "wall_s_": ("Wall {} (s)", False, ".0f")}


def _stage_column(key: str) -> ProfileColumn | None:
    """``train_images_per_s_<stage>`` / ``wall_s_<stage>`` (keys the profile makes per stage)."""
    for prefix, (text, better, fmt) in _STAGE_PREFIXES.items():
        if key.startswith(prefix) and key not in _PROFILE:
            return ProfileColumn(key, text.format(key[len(prefix):]), better, fmt, table="cost_detail")
    return None


def profile_column(key: str) -> ProfileColumn | None:
    """The description of profile key ``key`` (None when unknown)."""
    return _PROFILE.get(key) or _stage_column(key)


def cost_table(key: str) -> str:
    """The table a profile column goes to: ``"cost"`` (the summary, and the device) or
    ``"cost_detail"`` (per phase and per stage, and keys no column describes)."""
    col = profile_column(key)
    return "cost" if key == "device" else ("cost_detail" if col is None else col.table)


def base_metric(key: str) -> str:
    """``"per_rater_dice[2]"`` -> ``"per_rater_dice"``; other keys unchanged."""
    return key.split("[", 1)[0]


def rater_index(key: str) -> int | None:
    """``"per_rater_dice[2]"`` -> 2; None for keys without a rater."""
    if "[" in key and key.endswith("]"):
        return int(key[key.index("[") + 1:-1])
    return None


def metric_spec(name: str):
    """The registered ``MetricSpec`` for ``name``, or None for non-metric (profile) columns."""
    from ..metrics import MetricSpec
    from ..registry import METRICS

    if name not in METRICS:
        return None
    spec = METRICS.get(name)
    return spec if isinstance(spec, MetricSpec) else None


def higher_is_better(key: str) -> bool | None:
    """True / False, or None for descriptive (``MetricSpec.descriptive``) or unknown columns
    (no arrow, no bold)."""
    name = base_metric(key)
    spec = metric_spec(name)
    if spec is not None:
        return None if spec.descriptive else bool(spec.higher_is_better)
    col = profile_column(name)
    return None if col is None else col.higher_is_better


def required_capability(key: str) -> Capability | None:
    """The capability a method must declare for this metric column (None: any method)."""
    spec = metric_spec(base_metric(key))
    return None if spec is None else Capability(spec.requires)


def label(key: str) -> str:
    """Plain-text column label (renderers escape it)."""
    spec = metric_spec(base_metric(key))
    if spec is not None:
        r = rater_index(key)
        return spec.column_label if r is None else f"{spec.column_label}{r + 1}"
    col = profile_column(key)
    if key == "device":
        return "Device"
    return key if col is None else col.label


@dataclass(frozen=True)
class Column:
    """One numeric or text column of a report table; ``scale`` divides values for display."""

    key: str
    label: str
    higher_is_better: bool | None
    fmt: str = ".3f"
    scale: float = 1.0
    text: bool = False
    significance: bool = False


def metric_column(key: str) -> Column:
    spec = metric_spec(base_metric(key))
    fmt = spec.fmt if spec is not None else ".3f"
    sig = spec.significance if spec is not None else True
    return Column(key, label(key), higher_is_better(key), fmt=fmt, significance=sig)


def table_keys(table: str, present: set[str]) -> list[str]:
    """The metric keys of ``table`` found in ``present``, in the specs' column order: a
    per-rater spec with ``rater_columns`` gives ``name[0]``, ``name[1]``, ...; any other spec
    gives ``name`` (for a per-rater spec: its mean over raters)."""
    from ..metrics import metric_specs

    keys: list[str] = []
    for spec in metric_specs():
        if not spec.show or spec.table_name != table:
            continue
        if spec.per_rater and spec.rater_columns:
            raters = sorted((k for k in present if base_metric(k) == spec.name and rater_index(k) is not None),
                            key=rater_index)
            keys += raters
        elif spec.name in present:
            keys.append(spec.name)
    return keys


def metric_tables() -> list[str]:
    """Table names in order: the capability tables, then any table a plugin names."""
    from ..metrics import CAPABILITY_TABLES, metric_specs

    names = list(CAPABILITY_TABLES.values())
    extra = sorted({s.table_name for s in metric_specs() if s.show} - set(names))
    return names + extra


def profile_keys(present: set[str]) -> list[str]:
    """Profile columns found in ``present``: the known ones in order, then others by name."""
    known = [c.key for c in PROFILE_COLUMNS if c.key in present]
    return known + sorted(k for k in present if k not in _PROFILE)


def cost_column(key: str) -> Column:
    if key == "device":
        return Column("device", label("device"), None, text=True)
    col = profile_column(key)
    fmt, scale = (col.fmt, col.scale) if col else (".3g", 1.0)
    return Column(key, label(key), higher_is_better(key), fmt=fmt, scale=scale)
