"""The load average a run records is the machine's before its local grid started, so the cost
caption's busy warning does not count the runs of the same grid that ran just before it."""

from __future__ import annotations

import os

from mrseg_bench.engine import hardware
from mrseg_bench.executors import local
from mrseg_bench.executors.base import ExecutorOptions


def test_load_average_prefers_the_grid_start_value(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 1.0, 0.5))
    monkeypatch.delenv(hardware.GRID_LOAD_ENV, raising=False)
    assert hardware.load_average() == 1.9
    monkeypatch.setenv(hardware.GRID_LOAD_ENV, "0.25")
    assert hardware.load_average() == 0.25


def test_local_grid_records_the_load_before_its_first_run(monkeypatch):
    loads = iter([0.3, 1.9, 1.9])  # before the grid; then while its own runs have loaded the machine
    monkeypatch.setattr(os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.delenv(hardware.GRID_LOAD_ENV, raising=False)
    seen = []

    def fake_in_process(specs, out, options, progress):
        seen.extend(hardware.load_average() for _ in specs)
        return []

    monkeypatch.setattr(local, "_in_process", fake_in_process)
    local.run_local(["a", "b"], "out", ExecutorOptions(), lambda o: None)
    assert seen == [0.3, 0.3]
    assert hardware.GRID_LOAD_ENV not in os.environ  # restored after the grid
