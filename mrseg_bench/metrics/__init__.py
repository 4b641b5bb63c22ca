"""Multi-rater metrics: functional, batched torch metrics and the capability-driven suite.

Importing this package registers the built-in metrics in ``mrseg_bench.registry.METRICS``.
"""

from .context import GED_ESTIMATORS, NCC_MAPS, SOFT_THRESHOLDS, MetricContext
from .conventions import (
    CONVENTION_NAMES,
    CONVENTION_SPECS,
    Convention,
    convention_caption,
    resolve_convention,
)
from .functional import (
    consensus_dice,
    consensus_dice_soft,
    dice_soft,
    ged,
    ncc,
    per_rater_dice,
    per_rater_dice_mean,
    rater_disagreement,
    sample_diversity,
)
from .matching import (
    dice_match,
    dice_max,
    dice_max_reverse,
    hm_iou,
    per_rater_dice_matched,
    sample_rater_dice,
    sample_rater_dice_mean,
)
from .pairwise import CONVENTIONS, dice_matrix, iou_matrix
from .suite import (
    BUILTIN_SPECS,
    CAPABILITY_TABLES,
    N_SAMPLES_METRIC,
    MetricSpec,
    MetricSuite,
    metric_specs,
)
from .validation import validate_inputs, validate_weights

__all__ = [
    "BUILTIN_SPECS", "CAPABILITY_TABLES", "CONVENTIONS", "CONVENTION_NAMES", "CONVENTION_SPECS", "Convention",
    "convention_caption", "resolve_convention", "GED_ESTIMATORS", "NCC_MAPS",
    "N_SAMPLES_METRIC", "SOFT_THRESHOLDS", "MetricContext", "MetricSpec",
    "MetricSuite", "consensus_dice", "consensus_dice_soft", "dice_match", "dice_matrix",
    "dice_max", "dice_max_reverse", "dice_soft", "ged", "hm_iou", "iou_matrix", "ncc",
    "per_rater_dice", "per_rater_dice_matched", "per_rater_dice_mean", "rater_disagreement",
    "metric_specs", "sample_diversity", "sample_rater_dice", "sample_rater_dice_mean",
    "validate_inputs", "validate_weights",
]
