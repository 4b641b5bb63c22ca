"""The executor contract: ``execute(name, specs, out, options) -> list[TaskOutcome]``.

An executor is a function ``f(specs, out, options, progress) -> list[TaskOutcome]`` registered
in ``EXECUTORS`` (``@register_executor("name")``, like methods and metrics). It calls a worker
on each JSON spec: a module-level function ``worker(spec: dict, out: str, force: bool) -> dict``
named by its dotted path (``"package.module:function"``), so that a process pool, Ray and
submitit can ship it to another process by name. Its return value is a small JSON-able summary
(``status``, ``run_dir``, ``error``); an exception raised by the worker becomes a ``failed``
outcome and the grid goes on (``interrupts.RunInterrupted`` and ``KeyboardInterrupt`` stop it).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import Registry

#: the unit of work every executor runs (claims the folder, trains, writes result.json)
DEFAULT_WORKER = "mrseg_bench.run.worker:run_spec"


@dataclass
class LocalOptions:
    """``jobs``: runs at once on this machine (1: one after another in this process; N > 1: N
    worker processes); ``threads``: torch threads per worker process (None:
    ``engine.threads.thread_budget``; a run's own ``run.num_threads`` wins); ``gpus``: the
    visible GPU count the N processes are placed on (None: ``torch.cuda.device_count()``; tests
    fake it); ``one_gpu``: every process on that GPU instead of round-robin. With ``jobs = 1``
    and a ``log``, the worker is called with ``quiet`` and ``log`` (progress bars, its messages)."""

    jobs: int = 1
    threads: int | None = None
    gpus: int | None = None
    one_gpu: int | None = None
    quiet: bool = True
    log: Callable[[str], None] | None = None


@dataclass
class RayOptions:
    """``address``: "auto", "HOST:PORT" or None (start a local cluster); ``num_cpus`` /
    ``num_gpus`` per task (None: 1 GPU per task when the cluster has GPUs, else 0);
    ``local_num_cpus``: CPUs of a local cluster started here (None: Ray's default)."""

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None
    local_num_cpus: int | None = None


@dataclass
class SlurmOptions:
    """The job array: ``partition``, ``gpus_per_task``, ``cpus_per_task``, ``time_min``,
    ``array_parallelism``; ``cluster``: "slurm" ("local" runs the jobs as local processes
    through submitit's LocalExecutor, which is how the tests run it)."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 4
    time_min: int = 240
    array_parallelism: int = 16
    cluster: str = "slurm"


@dataclass
class ExecutorOptions:
    """Options of every executor: the ``worker`` path, ``force`` (rerun done runs, each swapped
    in only when it succeeds) and one section per executor."""

    worker: str = DEFAULT_WORKER
    force: bool = False
    local: LocalOptions = field(default_factory=LocalOptions)
    ray: RayOptions = field(default_factory=RayOptions)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


@dataclass
class TaskOutcome:
    """What came back for one spec: ``status`` done | failed | skipped | cancelled."""

    spec: dict[str, Any]
    status: str
    run_dir: str | None = None
    error: str | None = None
    run_id: str | None = None
    note: str | None = None
    result: dict[str, Any] | None = None  # the run's result.json content, when the worker returns it


Executor = Callable[[list[dict[str, Any]], str, ExecutorOptions, Callable[[TaskOutcome], None]], list[TaskOutcome]]
EXECUTORS: Registry[Executor] = Registry("executor")


def register_executor(name: str):
    """Register an executor ``f(specs, out, options, progress) -> list[TaskOutcome]``."""
    return EXECUTORS.register(name)


def resolve_worker(path: str) -> Callable[..., dict[str, Any]]:
    """Import ``"package.module:function"``; ValueError naming the path when it does not exist."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"worker {path!r}: expected 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"worker {path!r}: {exc}") from None
    if not callable(fn):
        raise ValueError(f"worker {path!r}: not callable")
    return fn


def call_worker(path: str, spec: dict[str, Any], out: str, force: bool = False, **kw: Any) -> dict[str, Any]:
    """Run one spec in the current process (what a pool process, a Ray task or a submitit job
    executes); ``kw`` goes to the worker (the local executor's ``quiet``/``log``)."""
    return resolve_worker(path)(spec, out, force=force, **kw)


def outcome_from(spec: dict[str, Any], result: Any) -> TaskOutcome:
    """A TaskOutcome from a worker's return value (a dict with status/run_dir/error)."""
    if not isinstance(result, dict):
        return TaskOutcome(spec, "failed", error=f"worker returned {type(result).__name__}, not a dict")
    res = result.get("result")
    return TaskOutcome(spec, str(result.get("status", "failed")), result.get("run_dir"), result.get("error"),
                       result.get("run_id"), result.get("note"), res if isinstance(res, dict) else None)


_EXC_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt)): .*")


def failed(spec: dict[str, Any], exc: BaseException) -> TaskOutcome:
    """A failed outcome whose error is the worker's own exception line when the engine wrapped
    it in a traceback text (submitit's FailedJobError, Ray's RayTaskError)."""
    lines = str(exc).strip().splitlines()
    inner = [m.group(0).strip() for m in map(_EXC_LINE.match, lines) if m]
    return TaskOutcome(spec, "failed", error=inner[-1] if inner else f"{type(exc).__name__}: {lines[0] if lines else ''}")


def execute(name: str, specs: Sequence[dict[str, Any]], out: str | Path,
            options: ExecutorOptions | None = None,
            progress: Callable[[TaskOutcome], None] | None = None) -> list[TaskOutcome]:
    """Run every spec with executor ``name``; one outcome per spec, in the order of ``specs``.
    ``progress`` is called (in this process) as each run finishes. ValueError for an unknown
    executor or worker."""
    options = options or ExecutorOptions()
    if name not in EXECUTORS:
        raise ValueError(f"executor {name!r}: choose one of {', '.join(EXECUTORS.names())}")
    resolve_worker(options.worker)  # a bad worker fails before anything is submitted
    return EXECUTORS.get(name)(list(specs), str(Path(out)), options, progress or (lambda o: None))
