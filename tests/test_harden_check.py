"""Baseline file validation and check's exit codes (issue 12.15)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.reports.check import load_baseline
from mrseg_bench.reports.demo import write_demo_store
from mrseg_bench.store import ResultsStore

ENTRY = {"method": "probunet", "dataset": "synthetic", "preset": "smoke", "seed": 0, "metric": "ged", "value": 0.5}


@pytest.mark.parametrize("body, match", [
    ({"version": 1, "entries": []}, r"\"entries\" is empty"),
    ({"version": 1, "entries": [ENTRY, dict(ENTRY, value=0.7)]}, r"entries\[1\] repeats entries\[0\]"),
    ('{"version": 1, "tolerance": {"default": Infinity}, "entries": [ENTRY]}', "Infinity is not allowed"),
    ('{"version": 1, "entries": [dict(ENTRY, value=NaN)]}', "NaN is not allowed"),
    ('{"version": 1, "entries": [dict(ENTRY, value=1e999)]}', r"entries\[0\]\.value must be a finite number"),
    ({"version": 1, "entries": [ENTRY], "throughput": {"entries": [
        {"method": "m", "dataset": "d", "preset": "p", "seed": 0, "value": 1.0}] * 2}},
     r"throughput\.entries\[1\] repeats"),
])
def test_bad_baselines_are_refused_naming_the_file(tmp_path, body, match):
    path = tmp_path / "base.json"
    if isinstance(body, str):
        body = body.replace("dict(ENTRY, value=NaN)", json.dumps(ENTRY).replace("0.5", "NaN"))
        body = body.replace("dict(ENTRY, value=1e999)", json.dumps(ENTRY).replace("0.5", "1e999"))
        body = body.replace("[ENTRY]", json.dumps([ENTRY]))
        path.write_text(body)
    else:
        path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match=match) as err:
        load_baseline(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_check_cli_bad_baseline_exits_2(tmp_path):
    store = write_demo_store(tmp_path / "s.sqlite", methods=("probunet",), seeds=(0,))
    base = tmp_path / "base.json"
    base.write_text('{"version": 1, "entries": []}')
    res = CliRunner().invoke(app, ["check", "--store", str(store), "--baseline", str(base)])
    assert res.exit_code == 2 and "base.json" in res.output


@pytest.mark.parametrize("failed_only", [False, True])
def test_check_on_empty_or_failed_only_store_exits_2(tmp_path, failed_only):
    store = tmp_path / "s.sqlite"
    with ResultsStore(store) as s:
        if failed_only:
            s.write_run({"run_id": "x", "method": "probunet", "dataset": "synthetic", "seed": 0, "preset": "smoke",
                         "config_hash": "h", "status": "failed", "error": "boom"})
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"version": 1, "entries": [ENTRY]}))
    res = CliRunner().invoke(app, ["check", "--store", str(store), "--baseline", str(base)])
    assert res.exit_code == 2, res.output
    assert "no finished runs with metrics to check" in res.output
