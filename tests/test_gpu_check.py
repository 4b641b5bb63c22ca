"""The GPU check (scripts/gpu_check.sh, mrseg_bench.gpucheck): its JSON schema catches what is
wrong, the test counts come from pytest's junit file, a step past its time box is killed with its
children and recorded, a budget too short still leaves a valid file, and the dry run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrseg_bench.gpucheck import driver, schema

REPO = Path(__file__).resolve().parents[1]


def _doc() -> dict:
    profile = {"method": "dpersona", "precision": "bf16", "preset": "paper", "n_samples": 50, "error": None,
               "params": 1.0e7, "flops_per_image": 2.0e9, "train_images_per_s": 300.0,
               "infer_images_per_s": 900.0, "latency_p50_ms": 4.0, "latency_p95_ms": 5.0,
               "peak_memory_train_mb": 2000.0, "peak_memory_predict_mb": None}
    return {"schema": schema.SCHEMA, "version": 1, "mode": "cuda", "status": "partial",
            "started_at": "2026-12-03T18:00:00+00:00", "finished_at": "2026-12-03T18:07:00+00:00",
            "wall_s": 420.0, "budget_s": 450.0,
            "environment": {"python": "3.12.3", "torch": "2.11.0", "cuda_available": True, "device": "cuda",
                            "cpu_count": 16, "gpu_name": "NVIDIA H200", "torch_cuda": "13.0",
                            "gpu_memory_gib": 139.8, "mrseg_bench": "0.1.0"},
            "steps": [{"name": "tests", "status": "ok", "wall_s": 30.0, "timeout_s": 180.0, "error": None}],
            "tests": {"exit_code": 0, "passed": 4, "failed": 0, "skipped": 0, "errors": 0,
                      "cases": [{"name": "test_x", "outcome": "passed", "message": None}]},
            "quickstart": [{"label": "fp32", "precision": "fp32", "compile": False, "channels_last": False,
                            "exit_code": 0, "wall_s": 60.0,
                            "runs": [{"method": "dpersona", "status": "done", "wall_s": 30.0,
                                      "train_images_per_s_run": 500.0, "peak_memory_train_mb": 900.0,
                                      "peak_memory_predict_mb": 300.0}]}],
            "profiles": [profile],
            "ratios": {"device": "cuda", "rounds": 7, "timing": "wall", "values": {"a/b": 1.5, "c/d": None},
                       "errors": {"c/d": "RuntimeError: x"}}}


def test_schema_accepts_a_full_document_and_names_each_problem():
    assert schema.validate(_doc()) == []
    assert schema.validate(json.loads(json.dumps(_doc()))) == []
    cases = [
        (lambda d: d.pop("profiles"), "$.profiles: missing"),
        (lambda d: d.update(version=2), "expected schema"),
        (lambda d: d.update(status="great"), "$.status: 'great'"),
        (lambda d: d["steps"][0].update(status="done"), "$.steps[0].status"),
        (lambda d: d["profiles"][0].update(train_images_per_s="fast"), "$.profiles[0].train_images_per_s"),
        (lambda d: d["profiles"][0].update(n_samples=True), "$.profiles[0].n_samples: expected"),
        (lambda d: d["environment"].pop("torch"), "$.environment.torch: missing"),
        (lambda d: d["quickstart"][0]["runs"][0].pop("status"), "$.quickstart[0].runs[0].status: missing"),
        (lambda d: d["ratios"]["values"].update(x="1.2"), "$.ratios.values.x"),
        (lambda d: d["tests"]["cases"].append("passed"), "$.tests.cases[1]: expected an object"),
    ]
    for mutate, expected in cases:
        doc = _doc()
        mutate(doc)
        problems = schema.validate(doc)
        assert len(problems) == 1 and expected in problems[0], (expected, problems)
    assert schema.validate([]) == ["$: expected an object, got list"]


def test_junit_counts(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text("""<?xml version="1.0"?><testsuites><testsuite>
      <testcase classname="t" name="a"/>
      <testcase classname="t" name="b"><failure message="assert 1 == 2">tb</failure></testcase>
      <testcase classname="t" name="c"><skipped message="needs a CUDA GPU"/></testcase>
      <testcase classname="t" name="d"><skipped message="needs a CUDA GPU"/></testcase>
      <testcase classname="t" name="e"><error message="fixture broke"/></testcase>
    </testsuite></testsuites>""")
    res = driver.junit_counts(xml, 1)
    assert (res["passed"], res["failed"], res["skipped"], res["errors"]) == (1, 1, 2, 1)
    assert [c["outcome"] for c in res["cases"]] == ["passed", "failed", "skipped", "skipped", "error"]
    assert res["cases"][1]["message"] == "assert 1 == 2"
    assert schema.validate({**_doc(), "tests": res}) == []
    empty = driver.junit_counts(tmp_path / "missing.xml", None)
    assert (empty["passed"], empty["cases"]) == (0, [])


def _gone(pid: int, wait_s: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie waiting for its new parent to reap it)."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_a_step_past_its_box_is_killed_with_its_children(tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "MIN_STEP_S", 0.5)
    monkeypatch.setattr(driver, "RESERVE_S", 0.0)
    p = driver.plan(True, budget_s=60)
    c = driver.Check(p, tmp_path / "out", tmp_path, sys.executable)
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; g = subprocess.Popen(['sleep', '60']); "
            f"open({str(pidfile)!r}, 'w').write(str(g.pid)); time.sleep(60)")
    t = time.monotonic()
    step = c.command("hang", [sys.executable, "-c", code], box=3.0)
    assert time.monotonic() - t < 20
    assert step["status"] == "timeout" and "time box (3 s)" in step["error"]
    assert _gone(int(pidfile.read_text()))  # the whole process group went
    ok = c.command("quick", [sys.executable, "-c", "print('hi')"], box=30.0)
    bad = c.command("bad", [sys.executable, "-c", "raise SystemExit(3)"], box=30.0)
    assert (ok["status"], ok["exit_code"]) == ("ok", 0)
    assert (bad["status"], bad["exit_code"]) == ("failed", 3)
    c.save()
    c.log.close()
    doc = json.loads((tmp_path / "out" / driver.JSON_NAME).read_text())
    assert doc["status"] == "failed"  # no environment: nothing is known about the machine
    assert [s["name"] for s in doc["steps"]] == ["hang", "quick", "bad"]
    assert "hi" in (tmp_path / "out" / driver.LOG_NAME).read_text()


def test_budget_too_short_still_writes_a_valid_file(tmp_path):
    out = tmp_path / "out"
    doc = driver.run_check(driver.plan(True, budget_s=driver.MIN_STEP_S + driver.RESERVE_S + 0.5), out,
                           tmp_path / "work")
    on_disk = json.loads((out / driver.JSON_NAME).read_text())
    assert on_disk == doc and schema.validate(doc) == []
    assert doc["status"] in ("partial", "failed")
    skipped = [s for s in doc["steps"] if s["status"] == "skipped"]
    assert any("out of time budget" in (s["error"] or "") for s in skipped)
    assert {s["name"] for s in doc["steps"]} >= {"environment", "tests", "profile_all", "ratios"}
    assert (out / driver.TEXT_NAME).read_text().startswith(f"GPU check (dry-run): {doc['status'].upper()}")


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    """The shell script on the CPU: every step but the GPU-only ones runs and succeeds, and the
    JSON matches its schema (a generous budget: the shared test machine is slow)."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--budget-s", "900"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / driver.JSON_NAME).read_text())
    assert schema.validate(doc) == [] and doc["mode"] == "dry-run" and doc["status"] == "ok"
    status = {s["name"]: s["status"] for s in doc["steps"]}
    assert status == {"environment": "ok", "tests": "ok", "profile_all": "ok", "quickstart_fp32": "ok",
                      "quickstart_channels_last": "ok", "quickstart_bf16": "skipped",
                      "quickstart_compile": "skipped", "ratios": "ok"}
    assert doc["tests"]["skipped"] == len(doc["tests"]["cases"]) >= 4  # no CUDA here
    assert {r["method"] for r in doc["profiles"]} == set(driver.PROFILE_METHODS)
    for r in doc["profiles"]:
        assert r["error"] is None and r["params"] > 0 and r["flops_per_image"] > 0
        assert r["latency_p95_ms"] >= r["latency_p50_ms"] > 0 and r["train_images_per_s"] > 0
    for q in doc["quickstart"]:
        assert q["exit_code"] == 0 and [r["status"] for r in q["runs"]] == ["done"]
    assert all(v is not None and v > 0 for v in doc["ratios"]["values"].values())
    assert sorted(p.name for p in out.iterdir()) == sorted([driver.LOG_NAME, driver.JSON_NAME, driver.TEXT_NAME])
    assert proc.stdout.count("GPU check (dry-run): OK") == 1


def test_a_larger_budget_scales_the_boxes():
    base, slow = driver.plan(True), driver.plan(True, budget_s=440)
    assert base.budget_s == 110 and slow.budget_s == 440
    assert all(slow.boxes[k] == pytest.approx(4 * v) for k, v in base.boxes.items())
    assert driver.plan(True, budget_s=50).boxes == base.boxes  # a smaller budget only cuts time left
    gpu = driver.plan(False)
    assert (gpu.mode, gpu.device, gpu.profile_preset, gpu.n_samples) == ("cuda", "cuda", "paper", 50)
    assert gpu.precisions == ("fp32", "bf16") and gpu.compile_methods == "dpersona"
