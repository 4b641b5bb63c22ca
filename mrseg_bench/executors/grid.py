"""A planned grid on an executor, ended by ``collect``: what ``mrseg-bench run --executor`` does.

``run_grid_with(name, plan, out, store_path, options)``: the plan's specs go to the executor as
JSON (``spec.spec_to_json``), each task runs ``spec.run_spec`` where the engine puts it and
writes ``result.json`` into its run folder, and this process, the submitting one, rebuilds the
store's index from the folders (``collect``) — the same store and report whichever executor ran
the grid. Returns one ``runner.Outcome`` per spec, in plan order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..collect import collect
from ..runner import Outcome, Plan
from ..spec import spec_to_json
from .base import ExecutorOptions, TaskOutcome, execute


def run_grid_with(name: str, plan: Plan, out: str | Path, store_path: str | Path,
                  options: ExecutorOptions | None = None,
                  progress: Callable[[TaskOutcome], None] | None = None,
                  log: Callable[[str], None] = lambda s: None) -> list[Outcome]:
    out = Path(out)
    options = options or ExecutorOptions()
    tasks = execute(name, [spec_to_json(s) for s in plan.specs], out, options, progress)
    rep = collect(out, store_path)
    for line in rep.errors:
        log(f"collect: skipped {line}")
    outcomes = []
    for spec, task in zip(plan.specs, tasks, strict=True):
        o = Outcome(spec, task.status, task.run_id, task.error, spec.run_dir(out), note=task.note)
        label = f"{spec.method} {spec.dataset} seed {spec.seed}"
        if task.status == "failed":
            log(f"FAILED {label}: {task.error}")
        elif task.status == "skipped":
            log(f"skip {label}: {task.note or 'done'}")
        else:
            log(f"done {label} -> {o.run_dir}")
        outcomes.append(o)
    return outcomes
