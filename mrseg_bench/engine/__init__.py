"""The engine: training loop (``train``), evaluation (``evaluate``), profiling (``profile_method``)
and the settings they share (``RunConfig``). See docs/design.md "Engine, store, reports"."""

from .evaluate import evaluate, mean_metric, metric_suite
from .profile import count_parameters, flops_per_image, profile_method
from .run_config import RunConfig
from .train import NonFiniteLossError, TrainResult, checkpoint_path, train

__all__ = [
    "NonFiniteLossError", "RunConfig", "TrainResult", "checkpoint_path", "count_parameters", "evaluate",
    "flops_per_image", "mean_metric", "metric_suite", "profile_method", "train",
]
