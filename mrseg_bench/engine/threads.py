"""Torch intra-op threads per run, so that runs sharing a machine do not fight over its cores.

- ``thread_budget(cores, concurrent, requested)``: ``requested`` (``run.num_threads``) when it
  is >= 1; otherwise ``max(1, cores // concurrent)``: the cores split evenly between the runs
  that execute at once. Oversubscribed threads spin instead of working (a quick start beside two
  other jobs on 2 cores took 33 CPU-minutes against 7.5 idle).
- ``available_cores()``: ``OMP_NUM_THREADS`` when it is set to a positive integer (what Ray sets
  to a task's CPUs, or the user's word), else the CPUs this process may run on
  (``os.sched_getaffinity``; ``os.cpu_count`` where that does not exist).
- ``concurrent_runs()``: ``MRSEG_BENCH_CONCURRENT_RUNS`` (an executor that starts N runs at once
  sets it for them), else 1.
- ``busy_message(load, cores)``: one line when the 1-minute load average is above the machine's
  logical CPU count (the machine was already busy before this command started), else None;
  ``warn_if_busy`` reads ``os.getloadavg`` and prints it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

CONCURRENT_ENV = "MRSEG_BENCH_CONCURRENT_RUNS"


def thread_budget(cores: int, concurrent: int = 1, requested: int = 0) -> int:
    """Threads for one run: ``requested`` if >= 1, else ``max(1, cores // concurrent)``."""
    if requested >= 1:
        return int(requested)
    return max(1, int(cores or 1) // max(int(concurrent), 1))


def _positive_int(value: str | None) -> int | None:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n >= 1 else None


def available_cores() -> int:
    """The cores this process should use (see the module doc)."""
    omp = _positive_int(os.environ.get("OMP_NUM_THREADS"))
    if omp is not None:
        return omp
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def concurrent_runs() -> int:
    """Runs executing at once beside this one, this one included (``MRSEG_BENCH_CONCURRENT_RUNS``, default 1)."""
    return _positive_int(os.environ.get(CONCURRENT_ENV)) or 1


def set_run_threads(requested: int, concurrent: int | None = None) -> int:
    """``torch.set_num_threads(thread_budget(available_cores(), concurrent, requested))``; returns it."""
    import torch

    n = thread_budget(available_cores(), concurrent_runs() if concurrent is None else concurrent, requested)
    torch.set_num_threads(n)
    return n


def busy_message(load: float, cores: int) -> str | None:
    """One line when ``load`` (1-minute load average) is above ``cores``, else None."""
    if load <= cores:
        return None
    return (f"note: this machine is already busy (load average {load:.1f} on {cores} cores): runs "
            "will share the cores with other work; if this is slow, run fewer at once (--jobs) "
            "or fewer threads each (--set run.num_threads=1)")


def warn_if_busy(emit: Callable[[str], None], cores: int | None = None,
                 loadavg: Callable[[], tuple[float, float, float]] | None = None) -> str | None:
    """``emit`` the busy line when the machine is busy now; returns it (None where the load
    average is unknown, e.g. on Windows)."""
    try:
        load = (loadavg or os.getloadavg)()[0]
    except (AttributeError, OSError):
        return None
    msg = busy_message(load, (os.cpu_count() or 1) if cores is None else cores)
    if msg:
        emit(msg)
    return msg
