"""A small deterministic results store (no training) for tests, docs and trying the report.

Per-case value of metric m for method M, seed s, case c (0-based):
``base[M][m] + 0.02 * s + 0.01 * c`` (per-rater: ``+ 0.05 * r`` for rater r). So the run mean
is ``base + 0.02 s + 0.005 (n_cases - 1)`` and, over seeds {0, 1}, the std is
``0.02 / sqrt(2)``. Methods without a capability get no rows for its metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

DEMO_BASE: dict[str, dict[str, float]] = {
    "dpersona": {"ged": 0.30, "dice_soft": 0.70, "dice_match": 0.66, "dice_max": 0.72,
                 "hm_iou": 0.55, "sample_diversity": 0.25, "per_rater_dice": 0.70},
    "probunet": {"ged": 0.40, "dice_soft": 0.72, "dice_match": 0.60, "dice_max": 0.70,
                 "hm_iou": 0.50, "sample_diversity": 0.15},
    "fusion.soft": {"consensus_dice": 0.75},
}
DEMO_CAPS = {"dpersona": "diverse,personalized", "probunet": "diverse", "fusion.soft": "consensus"}
DEMO_PROFILE = {
    "dpersona": {"params": 28.455e6, "flops_per_image": 3.2e9, "train_images_per_s": 20.0,
                 "infer_images_per_s": 50.0, "latency_p50_ms": 20.0, "peak_memory_mb": 900.0,
                 "peak_memory_train_mb": 900.0, "peak_memory_predict_mb": 650.0,
                 "train_images_per_s_stage1": 15.0, "train_images_per_s_stage2": 40.0,
                 "wall_s_stage1": 120.0, "wall_s_stage2": 45.0},
    "probunet": {"params": 20.0e6, "flops_per_image": 2.1e9, "train_images_per_s": 30.0,
                 "infer_images_per_s": 80.0, "latency_p50_ms": 12.5, "peak_memory_mb": 700.0,
                 "peak_memory_train_mb": 700.0, "peak_memory_predict_mb": 500.0,
                 "train_images_per_s_train": 30.0, "wall_s_train": 90.0},
    "fusion.soft": {"params": 24.4e6, "flops_per_image": 1.0e9, "train_images_per_s": 45.0,
                    "infer_images_per_s": 200.0, "latency_p50_ms": 5.0, "peak_memory_mb": 500.0},
}


def demo_value(method: str, metric: str, seed: int, case: int, rater: int | None = None) -> float:
    v = DEMO_BASE[method][metric] + 0.02 * seed + 0.01 * case
    return v + (0.05 * rater if rater is not None else 0.0)


def write_demo_store(path: str | Path, methods: tuple[str, ...] = ("dpersona", "probunet"),
                     seeds: tuple[int, ...] = (0, 1), n_cases: int = 6, n_raters: int = 3,
                     dataset: str = "synthetic", preset: str = "smoke",
                     convention: str = "standard", run_dir: str | Path | None = None) -> Path:
    """Write a demo store at ``path`` (see module doc for the values); returns ``path``."""
    from ..store import ResultsStore

    path = Path(path)
    with ResultsStore(path) as store:
        for k, method in enumerate(methods):
            base = DEMO_BASE.get(method, DEMO_BASE["probunet"])
            caps = DEMO_CAPS.get(method, "diverse")
            for seed in seeds:
                rows = []
                for c in range(n_cases):
                    case_id = f"case{c:03d}"
                    for metric in base:
                        if metric == "per_rater_dice":
                            per = [demo_value(method, metric, seed, c, r) for r in range(n_raters)]
                            rows += [{"case_id": case_id, "metric": metric, "rater": r, "value": v}
                                     for r, v in enumerate(per)]
                            rows.append({"case_id": case_id, "metric": "per_rater_dice_mean",
                                         "rater": None, "value": sum(per) / n_raters})
                        else:
                            rows.append({"case_id": case_id, "metric": metric, "rater": None,
                                         "value": (DEMO_BASE.get(method) or DEMO_BASE["probunet"])[metric]
                                         + 0.02 * seed + 0.01 * c})
                prof = DEMO_PROFILE.get(method, DEMO_PROFILE["probunet"])
                profile = [{"name": n, "value": v * (1 + 0.1 * seed) if n.endswith("_per_s") else v,
                            "unit": ""} for n, v in prof.items()]
                run_id = f"{method}-{dataset}-{preset}-s{seed}"
                store.write_run({
                    "run_id": run_id, "method": method, "dataset": dataset, "seed": seed,
                    "preset": preset, "protocol": "default",
                    "config_json": json.dumps({"method": method}), "config_hash": f"hash-{run_id}",
                    "status": "done", "capabilities": caps, "convention": convention,
                    "n_samples": 10, "env_json": json.dumps({"device_name": "cpu", "torch": "2"}),
                    "run_dir": str(Path(run_dir) / run_id) if run_dir else "",
                    "started_at": f"2026-01-01T00:{k:02d}:{seed:02d}Z",
                    "finished_at": f"2026-01-01T01:{k:02d}:{seed:02d}Z", "wall_s": 1.0,
                }, rows, profile)
    return path
