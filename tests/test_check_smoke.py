"""The CI regression gate end to end: a fresh ``ci``-preset run must match benchmarks/baseline.json.

The baseline is produced by ``scripts/update_baseline.sh`` (dpersona, probunet, fusion.soft,
per_rater.multihead; preset ci; seed 0; CPU) together with a one-step "chance" run: values at
the floor or within 0.1 of chance are marked ``"gated": false`` (reports/gating.py). The ci run
is seeded and deterministic on CPU, so a method change that moves a gated metric in its bad
direction by more than the baseline's tolerance fails here with a readable diff
(tests/test_gate_fails.py shows that it does).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrseg_bench.reports.check import load_baseline, run_check
from mrseg_bench.reports.columns import higher_is_better
from mrseg_bench.reports.gating import GATE_MARGIN

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "benchmarks" / "baseline.json"
METHODS = "dpersona,probunet,fusion.soft,per_rater.multihead"


def test_baseline_file_is_valid_and_covers_the_ci_grid():
    data = load_baseline(BASELINE)
    runs = {(e["method"], e["dataset"], e["preset"], e["seed"]) for e in data["entries"]}
    assert runs == {(m, "synthetic", "ci", 0) for m in METHODS.split(",")}
    gated = {(e["method"], e["metric"]) for e in data["entries"] if e.get("gated") is True}
    main = {"dpersona": {"ged", "dice_match", "per_rater_dice_mean"},  # each method's main metrics
            "probunet": {"ged", "dice_match"}, "fusion.soft": {"consensus_dice"},
            "per_rater.multihead": {"dice_match", "per_rater_dice_mean"}}
    missing = sorted((m, k) for m, ks in main.items() for k in ks if (m, k) not in gated)
    assert not missing, f"main metrics not gated (at floor or chance?): {missing}"
    assert data["throughput"]["enabled"] is False  # shared CI machines are too noisy


def test_no_gated_baseline_value_at_the_floor_or_at_chance():
    for e in load_baseline(BASELINE)["entries"]:
        assert "gated" in e, f"{e}: written without the gating rule (scripts/update_baseline.sh)"
        if not e["gated"]:
            continue
        assert e["value"] is not None and "chance" in e, e
        hib = higher_is_better(e["metric"])
        gain = {True: e["value"] - e["chance"], False: e["chance"] - e["value"],
                None: abs(e["value"] - e["chance"])}[hib]
        assert gain >= GATE_MARGIN, e
        if hib:
            assert e["value"] >= GATE_MARGIN, e


@pytest.mark.slow
def test_ci_run_passes_the_committed_baseline(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, "-m", "mrseg_bench.cli", "run", "--methods", METHODS, "--preset", "ci",
           "--seeds", "0", "--device", "cpu", "--out", str(tmp_path), "--no-report", "--quiet"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ok, text = run_check(tmp_path / "results.sqlite", BASELINE)
    assert ok, text
