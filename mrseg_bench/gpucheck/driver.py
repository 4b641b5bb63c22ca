"""The GPU check's driver: runs each step in a child process under a time box and writes
``gpu_check.json`` (schema: ``gpucheck.schema``, docs/gpu-check.md), ``gpu_check.txt`` (a short
summary) and ``gpu_check.log`` (every child's output) into the output folder after EVERY step,
so a check cut short still leaves what it measured.

    python -m mrseg_bench.gpucheck --out DIR [--dry-run] [--budget-s S]

Steps, in this order (the most wanted figures first): environment; the ``gpu`` tests
(tests/test_gpu.py); profiles of dpersona, probunet, pionono and per_rater.multihead at the
``paper`` preset's sizes, N = 50, fp32 and bf16; the quick start with ``--device cuda`` in fp32
and bf16; the speed gate's ratios on the GPU; the quick start with ``--compile
--channels-last``. Each step gets ``min(its box, the time left)``; a step that would start with
less than ``MIN_STEP_S`` left is skipped. ``--dry-run`` runs the same steps on the CPU at tiny
sizes (smoke preset, N = 4, one ratio round, no ``--compile``) in well under two minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import schema
from .probes import REPO, quickstart_runs

JSON_NAME, TEXT_NAME, LOG_NAME = "gpu_check.json", "gpu_check.txt", "gpu_check.log"
MIN_STEP_S = 8.0
RESERVE_S = 5.0
PROFILE_METHODS = ("dpersona", "probunet", "pionono", "per_rater.multihead")


@dataclass
class Plan:
    """What one check runs; ``plan(dry_run)`` gives the two standard ones."""

    mode: str
    device: str
    budget_s: float
    profile_preset: str
    n_samples: int
    precisions: tuple[str, ...] = ("fp32", "bf16")
    profile_sets: tuple[str, ...] = ()
    group_profiles: bool = False  # one child process for every method (the dry run: fewer imports)
    quick_preset: str = "default"
    quick_sets: tuple[str, ...] = ()
    quick_methods: str = "dpersona,probunet"
    compile_methods: str | None = "dpersona"  # None: the compile variant is not run
    ratio_rounds: int = 7
    boxes: dict[str, float] = field(default_factory=dict)


DEFAULT_BUDGET_S = {"dry-run": 110.0, "cuda": 450.0}


def plan(dry_run: bool, budget_s: float | None = None) -> Plan:
    """The dry-run or the CUDA plan. A budget above the default scales every step's box by the
    same factor (a slow machine gets proportionally longer steps); a smaller one only cuts the
    time left, so the last steps are skipped."""
    mode = "dry-run" if dry_run else "cuda"
    budget = budget_s or DEFAULT_BUDGET_S[mode]
    scale = max(budget / DEFAULT_BUDGET_S[mode], 1.0)
    if dry_run:  # bf16 and compile are GPU paths (CPU bf16 is emulated: minutes here)
        boxes = {"environment": 30, "tests": 40, "profile": 60, "quickstart": 60, "ratios": 60}
        p = Plan(mode, "cpu", budget, "smoke", 4, precisions=("fp32",),
                 profile_sets=("run.batch_size=4", "run.eval_batch_size=4"), group_profiles=True,
                 quick_preset="smoke", quick_sets=("run.max_eval_cases=4",), quick_methods="dpersona",
                 compile_methods=None, ratio_rounds=1)
    else:  # the quick start's default preset with 3 epochs (of 30): every CUDA path, in about a minute
        boxes = {"environment": 90, "tests": 180, "profile": 100, "quickstart": 120, "ratios": 90, "compile": 240}
        p = Plan(mode, "cuda", budget, "paper", 50, quick_sets=("epochs=3",))
    p.boxes = {k: v * scale for k, v in boxes.items()}
    return p


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Check:
    """One check in progress: the document, the clock, the log."""

    def __init__(self, p: Plan, out: Path, work: Path, python: str) -> None:
        self.p, self.out, self.work, self.python = p, out, work, python
        self.t0 = time.monotonic()
        self.over_budget = False
        self.doc: dict[str, Any] = {
            "schema": schema.SCHEMA, "version": schema.VERSION, "mode": p.mode, "status": "failed",
            "started_at": _now(), "finished_at": _now(), "wall_s": 0.0, "budget_s": float(p.budget_s),
            "environment": None, "steps": [], "tests": None, "quickstart": [], "profiles": [], "ratios": None}
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / LOG_NAME, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
                    "PYTHONPATH": os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH")) if x),
                    # CPU peak memory needs a child process per profile: not what this check measures
                    "MRSEG_PROFILE_MEMORY": "off" if p.mode == "dry-run" else "auto"}

    def left(self) -> float:
        return self.p.budget_s - (time.monotonic() - self.t0)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(f"\n=== {text}\n")
        self.log.flush()

    def command(self, name: str, argv: list[str], box: float) -> dict[str, Any]:
        """Run ``argv`` as a step (its own process group, killed at the time box); the step record."""
        limit = min(box, self.left() - RESERVE_S)
        step = {"name": name, "status": "skipped", "wall_s": 0.0, "timeout_s": round(max(limit, 0.0), 1),
                "error": None, "exit_code": None}
        self.doc["steps"].append(step)
        if limit < MIN_STEP_S:
            step["error"] = f"out of time budget ({max(self.left(), 0):.0f} s left of {self.p.budget_s:.0f})"
            self.over_budget = True
            self.say(f"{name}: skipped ({step['error']})")
            return step
        self.say(f"{name}: {' '.join(argv[1:])} (time box {limit:.0f} s)")
        t = time.monotonic()
        proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(REPO), env=self.env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            step.update(status="ok" if rc == 0 else "failed", exit_code=rc,
                        error=None if rc == 0 else f"exit code {rc} (see {LOG_NAME})")
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait()
            step.update(status="timeout", error=f"stopped at its time box ({limit:.0f} s)")
        step["wall_s"] = round(time.monotonic() - t, 2)
        self.say(f"{name}: {step['status']} in {step['wall_s']:.1f} s")
        return step

    def probe(self, name: str, probe: str, args: dict[str, Any], box: float) -> Any:
        """A ``probes`` function in a child process; its value, or None (the step says why)."""
        dest = self.work / f"{name}.result.json"
        dest.unlink(missing_ok=True)
        step = self.command(name, [self.python, "-m", "mrseg_bench.gpucheck.probes", probe, json.dumps(args),
                                   str(dest)], box)
        if not dest.is_file():
            return None
        try:
            res = json.loads(dest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            step.update(status="failed", error=f"unreadable probe result ({exc})")
            return None
        if not res.get("ok"):
            step.update(status="failed", error=res.get("error"))
            return None
        return res.get("value")

    def skip(self, name: str, why: str) -> None:
        self.doc["steps"].append({"name": name, "status": "skipped", "wall_s": 0.0, "timeout_s": 0.0,
                                  "error": why, "exit_code": None})

    def save(self) -> None:
        """Write the JSON and the summary (atomically: a reader never sees half a file)."""
        doc = self.doc
        doc["finished_at"], doc["wall_s"] = _now(), round(time.monotonic() - self.t0, 2)
        bad = [s for s in doc["steps"] if s["status"] in ("failed", "timeout")]
        ok = [s for s in doc["steps"] if s["status"] == "ok"]
        if doc["environment"] is None or not ok:
            doc["status"] = "failed"
        else:
            doc["status"] = "partial" if bad or self.over_budget else "ok"
        for name, text in ((JSON_NAME, json.dumps(doc, indent=1, allow_nan=False) + "\n"),
                           (TEXT_NAME, summary(doc))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.out / name)


def junit_counts(path: Path, exit_code: int | None) -> dict[str, Any]:
    """Counts and cases of a pytest ``--junitxml`` file (zeros when it is missing or unreadable)."""
    res: dict[str, Any] = {"exit_code": exit_code, "passed": 0, "failed": 0, "skipped": 0, "errors": 0,
                           "cases": []}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return res
    for case in root.iter("testcase"):
        outcome, counter, message = "passed", "passed", None
        for child, outcome_, counter_ in (("failure", "failed", "failed"), ("error", "error", "errors"),
                                          ("skipped", "skipped", "skipped")):
            el = case.find(child)
            if el is not None:
                outcome, counter, message = outcome_, counter_, (el.get("message") or "")[:300]
                break
        res[counter] += 1
        res["cases"].append({"name": case.get("name", "?"), "outcome": outcome, "message": message})
    return res


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def summary(doc: dict[str, Any]) -> str:
    """A few lines for a human: environment, step statuses, profiles, quick starts, ratios."""
    env = doc.get("environment") or {}
    lines = [f"GPU check ({doc['mode']}): {doc['status'].upper()} in {doc['wall_s']:.0f} s "
             f"(budget {doc['budget_s']:.0f} s), {doc['finished_at']}",
             f"device {env.get('device')} {env.get('gpu_name') or env.get('cpu_model') or ''}; torch {env.get('torch')}"
             f" (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}); driver {env.get('driver')}; "
             f"Python {env.get('python')}", "", "steps:"]
    for s in doc["steps"]:
        lines.append(f"  {s['name']:<28} {s['status']:<8} {s['wall_s']:7.1f} s" + (f"  {s['error']}" if s["error"] else ""))
    t = doc.get("tests")
    if t:
        lines.append(f"gpu tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped, "
                     f"{t['errors']} errors")
    if doc["profiles"]:
        lines += ["", "profiles (untrained; train/infer images/s, latency ms, peak MB train/predict):",
                  "  method               prec  params    GFLOP/img  train  infer  p50    p95    mem_train mem_pred"]
        for r in doc["profiles"]:
            fl = None if r.get("flops_per_image") is None else r["flops_per_image"] / 1e9
            lines.append(f"  {r['method']:<20} {r['precision']:<5} {_fmt(r.get('params'))!s:<9} {_fmt(fl)!s:<10} "
                         f"{_fmt(r.get('train_images_per_s'))!s:<6} {_fmt(r.get('infer_images_per_s'))!s:<6} "
                         f"{_fmt(r.get('latency_p50_ms'))!s:<6} {_fmt(r.get('latency_p95_ms'))!s:<6} "
                         f"{_fmt(r.get('peak_memory_train_mb'))!s:<9} {_fmt(r.get('peak_memory_predict_mb'))}"
                         + (f"  ERROR {r['error']}" if r.get("error") else ""))
    for q in doc["quickstart"]:
        runs = ", ".join(f"{r['method']} {r['status']} {_fmt(r.get('train_images_per_s_run'))} img/s"
                         for r in q["runs"]) or "no run finished"
        lines.append(f"quick start {q['label']}: exit {q['exit_code']}, {_fmt(q['wall_s'])} s; {runs}")
    r = doc.get("ratios")
    if r:
        lines.append(f"ratios ({r['device']}, {r['timing']} time): "
                     + ", ".join(f"{k} {_fmt(v)}" for k, v in r["values"].items()))
    return "\n".join(lines) + "\n"


def _quickstart(c: Check, label: str, precision: str, methods: str, extra: list[str], box: float) -> None:
    p = c.p
    out = c.work / f"quickstart-{label}"
    argv = [c.python, "-m", "mrseg_bench.cli", "run", "--methods", methods, "--preset", p.quick_preset,
            "--device", p.device, "--precision", precision, "--out", str(out), "--no-report", "-q", *extra]
    for s in p.quick_sets:
        argv += ["--set", s]
    step = c.command(f"quickstart_{label}", argv, box)
    runs = quickstart_runs(out) if out.is_dir() else []
    c.doc["quickstart"].append({"label": label, "precision": precision, "compile": "--compile" in extra,
                                "channels_last": "--channels-last" in extra, "methods": methods,
                                "preset": p.quick_preset, "sets": list(p.quick_sets),
                                "exit_code": step["exit_code"],
                                "wall_s": step["wall_s"] if step["status"] != "skipped" else None, "runs": runs})


def run_check(p: Plan, out: Path, work: Path | None = None, python: str | None = None) -> dict[str, Any]:
    """Every step of ``p``; returns the document (also written under ``out``)."""
    work = Path(work or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    c = Check(p, Path(out), work, python or sys.executable)
    try:
        c.doc["environment"] = c.probe("environment", "environment", {"device": p.device}, p.boxes["environment"])
        c.save()
        env = c.doc["environment"] or {}
        if p.mode == "cuda" and not env.get("cuda_available"):
            c.skip("all CUDA steps", "CUDA is not available here (torch "
                   f"{env.get('torch')}, built for CUDA {env.get('torch_cuda')}): nothing to measure")
            return c.doc
        tests = REPO / "tests" / "test_gpu.py"
        if tests.is_file():
            junit = work / "junit.xml"
            step = c.command("tests", [c.python, "-m", "pytest", "-m", "gpu", str(tests), "-q", "-p",
                                       "no:cacheprovider", f"--junitxml={junit}"], p.boxes["tests"])
            c.doc["tests"] = junit_counts(junit, step["exit_code"])
        else:
            c.skip("tests", f"{tests} is absent (installed without the repository)")
        c.save()
        groups = [list(PROFILE_METHODS)] if p.group_profiles else [[m] for m in PROFILE_METHODS]
        for methods in groups:
            box = p.boxes["profile"] * (len(methods) if p.group_profiles else 1)
            recs = c.probe("profile_" + ("all" if len(methods) > 1 else methods[0]), "profile",
                           {"methods": methods, "preset": p.profile_preset, "precisions": list(p.precisions),
                            "n_samples": p.n_samples, "device": p.device, "sets": list(p.profile_sets)}, box)
            for rec in recs or []:
                c.doc["profiles"].append(rec)
                if rec.get("error") and c.doc["steps"][-1]["status"] == "ok":
                    c.doc["steps"][-1].update(status="failed",
                                              error=f"{rec['method']} {rec['precision']}: {rec['error']}")
            c.save()
        for precision in p.precisions:
            _quickstart(c, precision, precision, p.quick_methods, [], p.boxes["quickstart"])
            c.save()
        if p.mode == "dry-run":
            _quickstart(c, "channels_last", "fp32", p.quick_methods, ["--channels-last"], p.boxes["quickstart"])
            c.skip("quickstart_bf16", "dry-run: bf16 autocast is measured on the GPU (emulated on this CPU)")
            c.skip("quickstart_compile", "dry-run: torch.compile runs on the GPU check only (minutes of C++ "
                   "compilation on a CPU)")
        c.save()
        c.doc["ratios"] = c.probe("ratios", "ratios", {"device": p.device, "rounds": p.ratio_rounds},
                                  p.boxes["ratios"])
        c.save()
        if p.compile_methods is not None:
            _quickstart(c, "compile_channels_last", "bf16", p.compile_methods, ["--compile", "--channels-last"],
                        p.boxes["compile"])
        return c.doc
    finally:
        c.save()
        c.log.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mrseg_bench.gpucheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else ./gpu_check)")
    ap.add_argument("--dry-run", action="store_true", help="everything but CUDA, on the CPU, tiny sizes")
    ap.add_argument("--budget-s", type=float, default=None, help="whole-check time budget (450 s; dry run 110 s)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder for the quick-start runs (temporary)")
    a = ap.parse_args(argv)
    if a.budget_s is not None and a.budget_s < MIN_STEP_S + RESERVE_S:
        ap.error(f"--budget-s {a.budget_s:g}: at least {MIN_STEP_S + RESERVE_S:g} s")
    out = a.out or Path(os.environ.get("OUT") or "gpu_check")
    if out.exists() and not out.is_dir():
        ap.error(f"--out {out}: is a file, not a folder")
    doc = run_check(plan(a.dry_run, a.budget_s), out, a.work)
    print((out / TEXT_NAME).read_text(encoding="utf-8"), end="")
    problems = schema.validate(doc)
    if problems:
        print(f"{JSON_NAME}: does not match its schema: " + "; ".join(problems[:5]), file=sys.stderr)
        return 2
    return 0 if doc["status"] == "ok" else 1
