"""The ``slurm`` executor: one submitit job array, one array task per run.

Each task runs ``call_worker(worker, spec, out)``. Jobs are ``Checkpointable``: when Slurm
preempts a task or its time limit comes (submitit asks Slurm for a signal before the end), the
task is requeued with the same spec and resumes from the run's ``last`` checkpoint (written at a
time interval, so at most that much training is repeated). ``slurm_cluster="local"`` runs the
same jobs as local processes through submitit's LocalExecutor (the tests use it). The submitit
logs go to ``<out>/.submitit/<job id>/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .base import TaskOutcome, call_worker, failed, outcome_from, register_executor


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ValueError('--executor slurm needs submitit: pip install "mrseg-bench[slurm]"') from None
    return submitit


def make_executor(submitit, out: str, options):
    """A submitit executor with the Slurm options (ignored by the local cluster)."""
    cluster = None if options.slurm.cluster == "slurm" else options.slurm.cluster
    if cluster is None and submitit.AutoExecutor.which() != "slurm":
        raise ValueError("--executor slurm: no Slurm found on this machine (sbatch is not on PATH)")
    ex = submitit.AutoExecutor(folder=Path(out) / ".submitit" / "%j", cluster=cluster)
    params: dict[str, Any] = {"name": "mrseg-bench", "timeout_min": int(options.slurm.time_min),
                              "gpus_per_node": int(options.slurm.gpus_per_task), "tasks_per_node": 1,
                              "cpus_per_task": int(options.slurm.cpus_per_task),
                              "slurm_array_parallelism": int(options.slurm.array_parallelism)}
    if options.slurm.partition:
        params["slurm_partition"] = options.slurm.partition
    ex.update_parameters(**params)
    return ex


def _job_class(submitit):
    class SpecJob(submitit.helpers.Checkpointable):
        """Runs one spec; on preemption or time-out submitit requeues it with the same args."""

        def __call__(self, worker: str, spec: dict[str, Any], out: str, force: bool) -> dict[str, Any]:
            return call_worker(worker, spec, out, force)

    return SpecJob


@register_executor("slurm")
def run_slurm(specs: list[dict[str, Any]], out: str, options, progress,
              poll_s: float = 1.0) -> list[TaskOutcome]:
    submitit = _import_submitit()
    ex = make_executor(submitit, out, options)
    n = len(specs)
    jobs = ex.map_array(_job_class(submitit)(), [options.worker] * n, list(specs), [out] * n,
                        [options.force] * n)
    outcomes: list[TaskOutcome | None] = [None] * n
    pending = set(range(n))
    try:
        while pending:
            for i in sorted(pending):
                if not jobs[i].done():
                    continue
                try:
                    o = outcome_from(specs[i], jobs[i].result())
                except Exception as exc:  # noqa: BLE001 - a failed job is a failed run
                    o = failed(specs[i], exc)
                outcomes[i] = o
                pending.discard(i)
                progress(o)
            if pending:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for i in pending:
            jobs[i].cancel(check=False)
        raise
    return [o for o in outcomes if o is not None]
