"""The ``local`` executor: the specs one after another in this process."""

from __future__ import annotations

from .base import TaskOutcome, call_worker, failed, outcome_from


def run_local(specs, out, options, progress) -> list[TaskOutcome]:
    outcomes = []
    for spec in specs:
        try:
            o = outcome_from(spec, call_worker(options.worker, spec, out, options.force))
        except Exception as exc:  # noqa: BLE001 - one failing run must not stop the grid
            o = failed(spec, exc)
        progress(o)
        outcomes.append(o)
    return outcomes
