"""The regression gate: passes on its own baseline, fails on a worse result or a missing run."""

from __future__ import annotations

import json

import pytest

from mrseg_bench.reports.check import load_baseline, run_check
from mrseg_bench.reports.demo import write_demo_store
from mrseg_bench.store import ResultsStore


@pytest.fixture()
def store(tmp_path):
    return write_demo_store(tmp_path / "s.sqlite", n_cases=4)


def _rerun(store, method, seed, metric_values: dict[str, float], n_cases=4, finished="2026-02-01T00:00:00Z",
           infer=None):
    """A later done run of (method, synthetic, smoke, seed) with constant per-case values."""
    rows = [{"case_id": f"case{c:03d}", "metric": m, "rater": None, "value": v}
            for c in range(n_cases) for m, v in metric_values.items()]
    prof = [] if infer is None else [{"name": "infer_images_per_s", "value": infer, "unit": "img/s"}]
    with ResultsStore(store) as s:
        s.write_run({"run_id": f"re-{method}-{seed}-{finished}", "method": method, "dataset": "synthetic",
                     "seed": seed, "preset": "smoke", "config_hash": f"re-{method}-{seed}-{finished}",
                     "config_json": {"method": method},  # the demo run's config: a rerun of it
                     "status": "done", "capabilities": "diverse", "started_at": finished,
                     "finished_at": finished}, rows, prof)


def _value(baseline, method, seed, metric):
    return next(e["value"] for e in baseline["entries"]
                if (e["method"], e["seed"], e["metric"]) == (method, seed, metric))


def test_update_then_check_passes(store, tmp_path):
    base = tmp_path / "baseline.json"
    ok, text = run_check(store, base, update=True)
    assert ok and "written" in text
    data = json.loads(base.read_text())
    assert data["version"] == 1 and data["tolerance"] == {"default": 0.02, "per_rater_dice_matched": 0.05}
    # per-run mean over cases: ged of probunet seed 1 = 0.40 + 0.02 + 0.01 * mean(0..3)
    assert _value(data, "probunet", 1, "ged") == pytest.approx(0.435)
    assert _value(data, "dpersona", 0, "per_rater_dice[2]") == pytest.approx(0.70 + 0.10 + 0.015)
    assert data["throughput"]["enabled"] is False and len(data["throughput"]["entries"]) == 4
    ok, text = run_check(store, base)
    assert ok, text
    assert "PASS" in text and "0 failing" in text


def test_worse_result_fails_with_readable_diff(store, tmp_path):
    base = tmp_path / "baseline.json"
    run_check(store, base, update=True)
    old = _value(json.loads(base.read_text()), "probunet", 0, "ged")  # 0.415
    # GED is lower-is-better: +0.05 is worse than the 0.02 tolerance
    _rerun(store, "probunet", 0, {"ged": old + 0.05, "dice_soft": 0.745, "dice_match": 0.615,
                                  "dice_max": 0.715, "hm_iou": 0.515, "sample_diversity": 0.165})
    ok, text = run_check(store, base)
    assert not ok
    line = next(x for x in text.splitlines() if x.startswith("probunet") and " ged " in x)
    assert "WORSE" in line and "0.415" in line and "0.465" in line and "+0.05" in line and "0.02" in line
    assert sum("WORSE" in x for x in text.splitlines()) == 1  # the other metrics are unchanged
    # a wider tolerance lets it through
    ok, _ = run_check(store, base, tolerance=0.06)
    assert ok
    # update=True locks the new value in, then the check passes
    ok, _ = run_check(store, base, update=True)
    assert ok and run_check(store, base)[0]
    assert _value(json.loads(base.read_text()), "probunet", 0, "ged") == pytest.approx(old + 0.05)


def test_better_result_passes_and_is_reported(store, tmp_path):
    base = tmp_path / "baseline.json"
    run_check(store, base, update=True)
    _rerun(store, "probunet", 1, {"ged": 0.30, "dice_soft": 0.755, "dice_match": 0.635,
                                  "dice_max": 0.735, "hm_iou": 0.535, "sample_diversity": 0.185})
    ok, text = run_check(store, base)
    assert ok, text
    assert "1 better" in text and "better" in next(x for x in text.splitlines() if " ged " in x)


def test_descriptive_metric_changes_fail_both_ways(store, tmp_path):
    base = tmp_path / "baseline.json"
    run_check(store, base, update=True)
    _rerun(store, "probunet", 1, {"ged": 0.435, "dice_soft": 0.755, "dice_match": 0.635,
                                  "dice_max": 0.735, "hm_iou": 0.535, "sample_diversity": 0.90})
    ok, text = run_check(store, base)
    assert not ok and "CHANGED" in text and "sample_diversity" in text


def test_missing_run_and_missing_metric_fail(store, tmp_path):
    base = tmp_path / "baseline.json"
    run_check(store, base, update=True)
    data = json.loads(base.read_text())
    extra = dict(data["entries"][0], seed=7)
    data["entries"].append(extra)
    data["entries"].append(dict(data["entries"][0], metric="ncc"))
    base.write_text(json.dumps(data))
    ok, text = run_check(store, base)
    assert not ok
    assert "MISSING RUN" in text and "MISSING METRIC" in text


def test_throughput_gate_only_when_enabled(store, tmp_path):
    base = tmp_path / "baseline.json"
    run_check(store, base, update=True)
    _rerun(store, "probunet", 0, {"ged": 0.415, "dice_soft": 0.745, "dice_match": 0.615,
                                  "dice_max": 0.715, "hm_iou": 0.515, "sample_diversity": 0.165},
           infer=10.0)  # baseline 80 img/s
    assert run_check(store, base)[0]  # off by default
    data = json.loads(base.read_text())
    data["throughput"]["enabled"] = True
    base.write_text(json.dumps(data))
    ok, text = run_check(store, base)
    assert not ok and "SLOWER" in text
    # update keeps the tolerance and throughput settings
    data["tolerance"]["ged"] = 0.05
    base.write_text(json.dumps(data))
    run_check(store, base, update=True)
    kept = load_baseline(base)
    assert kept["tolerance"]["ged"] == 0.05 and kept["throughput"]["enabled"] is True


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ('{"version": 2, "entries": []}', "version"),
    ('{"version": 1, "entries": [{"method": "x"}]}', "entries\\[0\\]"),
    ('{"version": 1, "tolerance": {"default": -1}, "entries": []}', "tolerance"),
])
def test_bad_baseline_names_the_file(store, tmp_path, content, match):
    base = tmp_path / "bad_baseline.json"
    base.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        run_check(store, base)
    assert "bad_baseline.json" in str(err.value)


def test_missing_files(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        run_check(store, tmp_path / "nothere.json")
    with pytest.raises(FileNotFoundError, match="nostore.sqlite"):
        run_check(tmp_path / "nostore.sqlite", tmp_path / "b.json", update=True)
    with pytest.raises(ValueError, match="tolerance"):
        run_check(store, tmp_path / "b.json", tolerance=-0.1)


def test_per_metric_tolerance_by_base_name(store, tmp_path):
    base = tmp_path / "baseline.json"
    run_check(store, base, update=True)
    data = json.loads(base.read_text())
    data["tolerance"] = {"default": 0.02, "ged": 0.1}
    base.write_text(json.dumps(data))
    _rerun(store, "probunet", 0, {"ged": 0.415 + 0.05, "dice_soft": 0.745, "dice_match": 0.615,
                                  "dice_max": 0.715, "hm_iou": 0.515, "sample_diversity": 0.165})
    assert run_check(store, base)[0]  # 0.05 worse GED is within ged's 0.1
    ok, text = run_check(store, base, tolerance=0.02)  # the override applies to all metrics
    assert not ok and "WORSE" in text
