"""Threads per run (engine/threads.py): cores split between concurrent runs, the user's
run.num_threads kept, and the one-line note when the machine is already busy."""

from __future__ import annotations

import os

import pytest
import torch

from mrseg_bench.engine import threads as th


@pytest.mark.parametrize(("cores", "concurrent", "requested", "expected"), [
    (8, 1, 0, 8), (8, 2, 0, 4), (8, 3, 0, 2), (2, 4, 0, 1), (1, 1, 0, 1),
    (8, 4, 3, 3),  # run.num_threads is the user's word, even past the fair share
    (2, 1, 6, 6),
])
def test_thread_budget_by_hand(cores, concurrent, requested, expected):
    assert th.thread_budget(cores, concurrent, requested) == expected


def test_available_cores_prefers_omp_then_affinity(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert th.available_cores() == 3
    for bad in ("0", "x", ""):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
        assert th.available_cores() == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert th.available_cores() == 6


def test_set_run_threads_splits_the_cores_between_concurrent_runs(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    try:
        monkeypatch.setenv(th.CONCURRENT_ENV, "4")
        assert th.set_run_threads(0) == 2 and torch.get_num_threads() == 2
        assert th.set_run_threads(0, concurrent=8) == 1 and torch.get_num_threads() == 1
        assert th.set_run_threads(3) == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv(th.CONCURRENT_ENV, "junk")  # not a count: one run
        assert th.set_run_threads(0) == 8
    finally:
        torch.set_num_threads(before)


def test_busy_note_only_above_the_core_count(monkeypatch):
    said: list[str] = []
    assert th.warn_if_busy(said.append, cores=2, loadavg=lambda: (2.0, 9.0, 9.0)) is None  # 1-min load = cores
    assert said == []
    msg = th.warn_if_busy(said.append, cores=2, loadavg=lambda: (3.5, 1.0, 1.0))
    assert said == [msg] and "load average 3.5 on 2 cores" in msg
    assert "--jobs" in msg and "run.num_threads" in msg and "\n" not in msg
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "getloadavg", lambda: (15.9, 0.0, 0.0))
    assert th.warn_if_busy(said.append) is None  # defaults: os.cpu_count and os.getloadavg

    def no_loadavg():
        raise OSError("unavailable")

    assert th.warn_if_busy(said.append, loadavg=no_loadavg) is None and len(said) == 1


def test_run_prints_the_busy_note_once(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mrseg_bench.cli import app

    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    res = CliRunner().invoke(app, ["run", "--methods", "nosuch", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "already busy" not in res.output  # bad input: nothing starts
    res = CliRunner().invoke(app, ["run", "--methods", "fusion.soft", "--preset", "smoke", "--out",
                                   str(tmp_path / "o"), "--set", "epochs=1", "--set", "run.max_steps_per_epoch=1",
                                   "--set", "run.max_eval_cases=2", "--set", "run.profile=false", "--no-report", "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.count("already busy (load average 64.0") == 1
