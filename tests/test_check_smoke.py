"""The CI regression gate end to end: a fresh smoke run must match benchmarks/baseline.json.

The baseline was produced by ``scripts/update_baseline.sh`` (dpersona, probunet, fusion.soft,
per_rater.multihead; preset smoke; seed 0; CPU). The smoke run is seeded and deterministic on
CPU, so a method change that moves a metric in its bad direction by more than the baseline's
tolerance fails here with a readable diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrseg_bench.reports.check import load_baseline, run_check

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "benchmarks" / "baseline.json"
METHODS = "dpersona,probunet,fusion.soft,per_rater.multihead"


def test_baseline_file_is_valid_and_covers_the_smoke_grid():
    data = load_baseline(BASELINE)
    runs = {(e["method"], e["dataset"], e["preset"], e["seed"]) for e in data["entries"]}
    assert runs == {(m, "synthetic", "smoke", 0) for m in METHODS.split(",")}
    metrics = {e["metric"] for e in data["entries"] if e["method"] == "dpersona"}
    assert {"ged", "dice_soft", "dice_match", "per_rater_dice_mean"} <= metrics
    assert data["throughput"]["enabled"] is False  # shared CI machines are too noisy


@pytest.mark.slow
def test_smoke_run_passes_the_committed_baseline(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, "-m", "mrseg_bench.cli", "run", "--methods", METHODS, "--preset", "smoke",
           "--seeds", "0", "--device", "cpu", "--out", str(tmp_path), "--no-report", "--quiet"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ok, text = run_check(tmp_path / "results.sqlite", BASELINE)
    assert ok, text
