"""A planned grid on an executor: what ``mrseg-bench run`` does, whichever executor runs it.

``run_grid(plan, out, store_path, executor="local", options=...)``:

1. a spec the store already holds as done (same config hash; with ``reuse_results`` also a run
   whose config differs only in the code identity) is skipped, unless ``force``;
2. the other specs go to the executor as JSON (``run.spec.spec_to_json``); each task runs
   ``run.worker.run_spec`` where the executor puts it and writes ``result.json`` into its run
   folder;
3. this process, the submitting one, indexes each result in the store as its run ends (read
   back from the worker or its run folder), so an interrupted grid keeps every finished run; a result that
   cannot be indexed stays in its folder (``Outcome.store_error``; ``mrseg-bench collect``).

Returns one ``run.spec.Outcome`` per spec, in plan order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..collect import index_result
from ..run.plan import Plan
from ..run.spec import Outcome, RunSpec, Status, spec_to_json
from ..run_folder import RESULT_FILE, read_result
from ..store import ResultsStore
from .base import ExecutorOptions, TaskOutcome, execute


def done_run_id(store: ResultsStore, spec: RunSpec, reuse_results: bool = False) -> str | None:
    """The done run that makes ``spec`` a skip: one with the same config hash, or with
    ``reuse_results`` one whose config differs only in the code identity; None: run it."""
    done = store.done_run_id(spec.config_hash)
    if done is None and reuse_results and spec.reuse_hash:
        done = store.reusable_run_id(spec.reuse_hash, spec.method, spec.dataset, spec.seed)
    return done


def _index(store: ResultsStore, o: Outcome, result: dict | None, log: Callable[[str], None]) -> None:
    """Index the run's result: the one the worker returned, else the one its folder holds."""
    if o.run_id is None or o.run_dir is None:
        return
    try:
        if result is None:
            result = read_result(Path(o.run_dir) / RESULT_FILE)
        if result["run"]["run_id"] != o.run_id:
            return
        o.result = result
        index_result(store, result)
    except Exception as exc:  # noqa: BLE001 - the result stays in its folder; collect recovers it
        o.store_error = f"{type(exc).__name__}: {exc}"
        log(f"warning: {o.spec.label}: the store could not index the result ({o.store_error}); it is kept in "
            f"{o.run_dir}/result.json; run mrseg-bench collect")


def run_grid(plan: Plan, out: str | Path = "runs", store_path: str | Path = "runs/results.sqlite", *,
             executor: str = "local", options: ExecutorOptions | None = None, force: bool = False,
             reuse_results: bool = False, log: Callable[[str], None] = lambda s: None,
             progress: Callable[[Outcome], None] | None = None, quiet: bool = True) -> list[Outcome]:
    """Run ``plan`` with ``executor`` (see the module docstring); ``progress`` is called as each
    run ends. Raises ``interrupts.RunInterrupted`` / ``KeyboardInterrupt`` when interrupted (the
    finished runs are indexed) and ValueError for an unknown executor or one not installed."""
    out = Path(out)
    options = options or ExecutorOptions()
    options.force = options.force or force
    outcomes: list[Outcome | None] = [None] * len(plan.specs)
    todo: list[int] = []
    with ResultsStore(store_path) as store:
        for i, spec in enumerate(plan.specs):
            try:
                done = None if options.force else done_run_id(store, spec, reuse_results)
            except Exception as exc:  # noqa: BLE001 - the run folder still says whether it is done
                log(f"warning: the store {store_path} cannot be read ({type(exc).__name__}: {exc})")
                done = None
            if done is None:
                todo.append(i)
                continue
            log(f"skip {spec.label}: done as {done}")
            outcomes[i] = Outcome(plan.specs[i], Status.SKIPPED, done, run_dir=spec.run_dir(out), note="done")
            if progress:
                progress(outcomes[i])
        here = executor == "local" and options.local.jobs == 1
        if here:  # in this process: the planner's data, and the worker logs itself
            from ..run.worker import remember_dataset

            options.local.quiet, options.local.log = quiet, log

            for spec in plan.specs:
                if spec.dataset in plan.datasets:
                    remember_dataset(spec, plan.datasets[spec.dataset])
        jsons = [spec_to_json(plan.specs[i]) for i in todo]
        where = {id(j): i for j, i in zip(jsons, todo, strict=True)}

        def ended(task: TaskOutcome) -> None:
            i = where[id(task.spec)]
            spec = plan.specs[i]
            o = Outcome(spec, Status(task.status), task.run_id, task.error,
                        Path(task.run_dir) if task.run_dir else spec.run_dir(out), note=task.note)
            if here:
                pass
            elif o.status is Status.FAILED:
                log(f"FAILED {spec.label}: {task.error}")
            elif o.status is Status.SKIPPED:
                log(f"skip {spec.label}: {task.note or 'done'}")
            else:
                log(f"done {spec.label} -> {o.run_dir}")
            _index(store, o, task.result, log)
            outcomes[i] = o
            if progress:
                progress(o)

        execute(executor, jsons, out, options, ended)
    return [o for o in outcomes if o is not None]
