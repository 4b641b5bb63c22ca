"""The ``local`` executor: the runs on this machine.

``jobs = 1``: one after another in this process (a signal between two runs stops the grid with
``RunInterrupted``; one during a run is handled by the worker: it writes ``last`` and stops).
``jobs = N > 1``: N worker processes (``spawn``: each starts a fresh interpreter, so no torch
state is shared through ``fork``), each limited to ``threads`` torch threads (default
``engine.threads.thread_budget(cores, N)``; a run's ``run.num_threads`` wins); a worker
process imports the plugin modules of this one (``plugin_modules``), so a method registered on
import of its module runs there too (one registered by a function call does not). With GPUs
visible and every run on ``auto``/``cuda``, worker process ``k`` sees one GPU
(``CUDA_VISIBLE_DEVICES``, ``gpu_slots``): ``engine.placement`` round-robin over them, or the one
``one_gpu`` names, so N runs at once share the GPUs instead of all landing on the first; each
run's peak memory stays its own (one process each). ``progress`` is
called in this process as each run ends. On Ctrl-C the runs not started are cancelled, the running
ones (which got the signal too) write their ``last`` checkpoint, and the interruption is raised;
finished runs have been reported already.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from ..engine.hardware import GRID_LOAD_ENV, current_load
from ..engine.placement import place_runs, visible_gpus
from ..engine.threads import available_cores, thread_budget
from ..interrupts import RunInterrupted, catch_signals
from .base import TaskOutcome, call_worker, failed, outcome_from, register_executor


def _label(spec) -> str:
    return f"{spec.get('method', '?')} {spec.get('dataset', '?')} seed {spec.get('seed', '?')}"


def _one(worker: str, spec, out: str, force: bool, **kw) -> TaskOutcome:
    try:
        return outcome_from(spec, call_worker(worker, spec, out, force, **kw))
    except Exception as exc:  # noqa: BLE001 - one failing run must not stop the grid
        return failed(spec, exc)


def _in_process(specs, out, options, progress) -> list[TaskOutcome]:
    outcomes = []
    with catch_signals() as flag:
        for spec in specs:
            if flag.signum is not None:
                raise RunInterrupted(f"the grid before {_label(spec)}", Path(out) / str(spec.get("run_dir", "")),
                                     None, flag.exit_code)
            kw = {} if options.local.log is None else {"quiet": options.local.quiet, "log": options.local.log}
            o = _one(options.worker, spec, out, options.force, **kw)
            progress(o)
            outcomes.append(o)
    return outcomes


def plugin_modules() -> list[str]:
    """Modules outside the package that registered methods or datasets in this process (a
    plugin, a test's tiny method): a worker process imports them to see the same registry."""
    from ..registry import DATASETS, METHODS

    mods = {getattr(e, "factory", e).__module__ for _, e in METHODS.items()}
    mods |= {getattr(f, "__module__", "") for _, f in DATASETS.items()}
    return sorted(m for m in mods if m and m != "__main__" and not m.startswith("mrseg_bench."))


def gpu_slots(specs, jobs: int, n_gpus: int, one_gpu: int | None = None) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` of each of ``jobs`` pool processes: GPU ``place_runs(jobs,
    "cuda", n_gpus, one_gpu)[k]`` for process ``k`` (an index into this process's own
    ``CUDA_VISIBLE_DEVICES`` where that is set), so its runs' ``cuda`` is that GPU. All None
    (left as they are) without GPUs or when a spec names another device (``cpu``, ``cuda:1``)."""
    devices = {str(s.get("device", "auto")).strip().lower() for s in specs}
    if n_gpus < 1 or not devices <= {"auto", "cuda"}:
        return [None] * jobs
    parent = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    ids = [int(dev.partition(":")[2]) for dev in place_runs(jobs, "cuda", n_gpus, one_gpu)]
    return [parent[k] if k < len(parent) else str(k) for k in ids]


def _init_process(threads: int, modules: list[str], slots=None, gpus: list[str | None] | None = None) -> None:
    """A pool process's start: its GPU (the next free slot of ``slots``, see ``gpu_slots``) and
    thread budget (before torch starts), then the plugin modules of the submitting process
    (those that register on import)."""
    import importlib

    if slots is not None and gpus:
        gpu = gpus[slots.get()]
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - its runs fail naming the unknown method instead
            pass


def _in_pool(specs, out, options, progress) -> list[TaskOutcome]:
    jobs = min(options.local.jobs, len(specs))
    threads = options.local.threads or thread_budget(available_cores(), jobs)
    n_gpus = visible_gpus() if options.local.gpus is None else options.local.gpus
    gpus = gpu_slots(specs, jobs, n_gpus, options.local.one_gpu)
    ctx = multiprocessing.get_context("spawn")
    slots = ctx.Queue()
    for k in range(jobs):
        slots.put(k)
    outcomes: list[TaskOutcome | None] = [None] * len(specs)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_process,
                               initargs=(threads, plugin_modules(), slots, gpus))
    futures: dict[Future, int] = {}
    try:
        futures = {pool.submit(_one, options.worker, spec, out, options.force): i for i, spec in enumerate(specs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=futures.__getitem__):
                i = futures[fut]
                try:
                    o = fut.result()
                    o.spec = specs[i]  # the caller's object, not the pool's copy
                except Exception as exc:  # noqa: BLE001 - a crashed worker process is a failed run
                    o = failed(specs[i], exc)
                outcomes[i] = o
                progress(o)
    except BaseException:
        for fut in futures:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)  # running runs write `last` and stop
        for fut, i in futures.items():  # a run that finished meanwhile is still reported
            if outcomes[i] is None and fut.done() and not fut.cancelled() and fut.exception() is None:
                outcomes[i] = fut.result()
                outcomes[i].spec = specs[i]
                progress(outcomes[i])
        raise
    pool.shutdown(wait=True)
    return [o for o in outcomes if o is not None]


@register_executor("local")
def run_local(specs, out, options, progress) -> list[TaskOutcome]:
    """The specs on this machine, ``options.local.jobs`` at a time (see the module docstring)."""
    if options.local.jobs < 1:
        raise ValueError(f"--jobs {options.local.jobs}: must be at least 1")
    previous = os.environ.get(GRID_LOAD_ENV)
    if previous is None and (load := current_load()) is not None:
        os.environ[GRID_LOAD_ENV] = str(load)  # the load before this grid, read by every run (and pool process)
    try:
        if options.local.jobs == 1 or len(specs) <= 1:
            return _in_process(specs, out, options, progress)
        return _in_pool(specs, out, options, progress)
    finally:
        if previous is None:
            os.environ.pop(GRID_LOAD_ENV, None)
