"""What each report column is: label, direction (higher/lower is better), required capability.

Metric directions and required capabilities come from the registered ``MetricSpec``s (a
plugin metric gets them too); the table below covers the profile columns. Descriptive metrics
(``sample_diversity``, ``rater_disagreement``) get direction ``None``: no arrow, no bold — a good
method matches the raters' disagreement, it does not maximise diversity.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..types import Capability

# directions of the profile (cost) columns; metric directions come from the metric registry
_PROFILE_HIGHER: dict[str, bool] = {
    "params": False,
    "flops_per_image": False,
    "train_images_per_s": True,
    "infer_images_per_s": True,
    "latency_p50_ms": False,
    "latency_p95_ms": False,
    "peak_memory_mb": False,
    "eval_wall_s": False,
}

LABELS: dict[str, str] = {
    "ged": "GED",
    "dice_soft": "Dice_soft",
    "dice_max": "Dice_max",
    "dice_max_reverse": "Dice_max_rev",
    "dice_match": "Dice_match",
    "hm_iou": "HM-IoU",
    "ncc": "NCC",
    "sample_diversity": "Sample div.",
    "rater_disagreement": "Rater disagr.",
    "per_rater_dice_mean": "Mean",
    "sample_rater_dice_mean": "Dice fixed sample",
    "per_rater_dice_matched": "Matched",
    "consensus_dice": "Consensus Dice",
    "consensus_dice_soft": "Consensus Dice_soft",
    "params": "Params (M)",
    "flops_per_image": "GFLOPs/img",
    "train_images_per_s": "Train img/s",
    "infer_images_per_s": "Infer img/s",
    "latency_p50_ms": "Latency p50 (ms)",
    "peak_memory_mb": "Peak mem (MB)",
    "device": "Device",
}


def base_metric(key: str) -> str:
    """``"per_rater_dice[2]"`` -> ``"per_rater_dice"``; other keys unchanged."""
    return key.split("[", 1)[0]


def _metric_spec(name: str):
    """The registered ``MetricSpec`` for ``name``, or None for non-metric (profile) columns."""
    from ..registry import METRICS

    return METRICS.get(name) if name in METRICS else None


def higher_is_better(key: str) -> bool | None:
    """True / False, or None for descriptive (``MetricSpec.descriptive``) or unknown columns
    (no arrow, no bold)."""
    name = base_metric(key)
    spec = _metric_spec(name)
    if spec is not None:
        return None if spec.descriptive else bool(spec.higher_is_better)
    if name.startswith("wall_s_"):
        return False
    return _PROFILE_HIGHER.get(name)


def required_capability(key: str) -> Capability | None:
    """The capability a method must declare for this metric column (None: any method)."""
    spec = _metric_spec(base_metric(key))
    return None if spec is None else Capability(spec.requires)


def label(key: str) -> str:
    """Plain-text column label (renderers escape it)."""
    if key.startswith("per_rater_dice[") and key.endswith("]"):
        return f"R{int(key[len('per_rater_dice['):-1]) + 1}"
    return LABELS.get(key, key)


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
    return Column(key, label(key), higher_is_better(key), fmt=".3f", significance=True)


COST_FORMATS: dict[str, tuple[str, float]] = {
    "params": (".2f", 1e6),
    "flops_per_image": (".3g", 1e9),
    "train_images_per_s": (".1f", 1.0),
    "infer_images_per_s": (".1f", 1.0),
    "latency_p50_ms": (".1f", 1.0),
    "peak_memory_mb": (".0f", 1.0),
}


def cost_column(key: str) -> Column:
    if key == "device":
        return Column("device", label("device"), None, text=True)
    fmt, scale = COST_FORMATS.get(key, (".3g", 1.0))
    return Column(key, label(key), higher_is_better(key), fmt=fmt, scale=scale)
