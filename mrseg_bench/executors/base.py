"""The executor contract: ``execute(name, specs, out, options) -> list[TaskOutcome]``.

A worker is a module-level function ``worker(spec: dict, out: str, force: bool) -> dict`` named by its dotted
path (``"package.module:function"``), so that Ray and submitit can ship it to another process by
name. Its return value is a small JSON-able summary (``status``, ``run_dir``, ``error``); an
exception raised by the worker becomes a ``failed`` outcome and the grid goes on.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the unit of work every executor runs (claims the folder, trains, writes result.json)
DEFAULT_WORKER = "mrseg_bench.executors.worker:run_spec_worker"


@dataclass
class ExecutorOptions:
    """Engine options. Ray: ``ray_address`` ("auto", "HOST:PORT" or None for a new local
    cluster), ``num_cpus`` / ``num_gpus`` per task (None: 1 GPU per task when the cluster has
    GPUs, else 0). Slurm: ``slurm_partition``, ``slurm_gpus_per_task``, ``slurm_time_min``,
    ``slurm_array_parallelism``, ``slurm_cluster`` ("slurm"; "local" runs the jobs as local
    processes through submitit's LocalExecutor, which is how the tests run it). ``force``: rerun
    done runs (each swapped in only when it succeeds)."""

    worker: str = DEFAULT_WORKER
    ray_address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None
    slurm_partition: str | None = None
    slurm_gpus_per_task: int = 0
    slurm_time_min: int = 240
    slurm_array_parallelism: int = 16
    slurm_cpus_per_task: int = 4
    slurm_cluster: str = "slurm"
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskOutcome:
    """What came back for one spec: ``status`` done | failed | skipped | cancelled."""

    spec: dict[str, Any]
    status: str
    run_dir: str | None = None
    error: str | None = None
    run_id: str | None = None
    note: str | None = None


def resolve_worker(path: str) -> Callable[[dict[str, Any], str], dict[str, Any]]:
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


def call_worker(path: str, spec: dict[str, Any], out: str, force: bool = False) -> dict[str, Any]:
    """Run one spec in the current process (what a Ray task or a submitit job executes)."""
    return resolve_worker(path)(spec, out, force=force)


def outcome_from(spec: dict[str, Any], result: Any) -> TaskOutcome:
    """A TaskOutcome from a worker's return value (a dict with status/run_dir/error)."""
    if not isinstance(result, dict):
        return TaskOutcome(spec, "failed", error=f"worker returned {type(result).__name__}, not a dict")
    return TaskOutcome(spec, str(result.get("status", "failed")), result.get("run_dir"), result.get("error"),
                       result.get("run_id"), result.get("note"))


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
    """Run every spec with executor ``name`` (local | ray | slurm); one outcome per spec, in
    the order of ``specs``. ``progress`` is called as each run finishes."""
    options = options or ExecutorOptions()
    resolve_worker(options.worker)  # a bad worker fails before anything is submitted
    if name not in EXECUTORS:
        raise ValueError(f"executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name](list(specs), str(Path(out)), options, progress or (lambda o: None))


def _local(specs, out, options, progress):
    from .local import run_local

    return run_local(specs, out, options, progress)


def _ray(specs, out, options, progress):
    from .ray_executor import run_ray

    return run_ray(specs, out, options, progress)


def _slurm(specs, out, options, progress):
    from .slurm_executor import run_slurm

    return run_slurm(specs, out, options, progress)


EXECUTORS: dict[str, Callable[..., list[TaskOutcome]]] = {"local": _local, "ray": _ray, "slurm": _slurm}
