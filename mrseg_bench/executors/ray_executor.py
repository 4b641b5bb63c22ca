"""The ``ray`` executor: one Ray task per run.

``ray.init(address=...)`` joins a running cluster (``"auto"`` or ``"HOST:PORT"``) or, with no
address, starts a local one. Each task asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (default:
1 when the cluster has GPUs, else 0) and runs ``call_worker(worker, spec, out)`` on whichever
node Ray picks, so ``out`` must be on storage every node shares. Tasks are not retried by Ray
(``max_retries=0``): a failed run is recorded failed and the grid goes on; rerunning the grid
resumes it from its ``last`` checkpoint. Ctrl-C cancels the tasks still pending or running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .base import TaskOutcome, call_worker, failed, outcome_from, register_executor


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError('--executor ray needs Ray: pip install "mrseg-bench[ray]"') from None
    return ray


def task_resources(ray, options) -> dict[str, float]:
    """CPUs and GPUs one run asks for (GPUs: 1 when the cluster has any, unless set; a fraction
    packs several runs on one GPU, each in its own worker process)."""
    gpus = options.ray.num_gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    check_gpu_share(gpus)
    return {"num_cpus": float(options.ray.num_cpus), "num_gpus": float(gpus)}


def gpu_share_ok(gpus: float) -> bool:
    """Ray takes a fraction of one GPU (0 <= x <= 1) or a whole number of GPUs."""
    return gpus >= 0 and (gpus <= 1 or gpus == int(gpus))


def check_gpu_share(gpus: float) -> None:
    """ValueError naming the option unless ``gpu_share_ok(gpus)``."""
    if not gpu_share_ok(gpus):
        raise ValueError(f"--gpus-per-run {gpus:g}: give a fraction of one GPU (0 < x < 1, e.g. 0.25 "
                         "packs four runs per GPU) or a whole number of GPUs")


def connect(options) -> bool:
    """Join or start the cluster of ``options.ray`` unless this process is connected already;
    True when this call connected (the caller then shuts it down)."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here and options.ray.address is None:
        # a local cluster: Ray runs its workers at niceness 15 by default, which starves training
        # runs next to any other work on the machine; give them the normal priority
        os.environ.setdefault("RAY_worker_niceness", "0")
    if started_here:
        init: dict[str, Any] = {"address": options.ray.address, "include_dashboard": False,
                                "log_to_driver": False, "configure_logging": False}
        if options.ray.address is None and options.ray.local_num_cpus is not None:
            init["num_cpus"] = int(options.ray.local_num_cpus)
        ray.init(**init)
    return started_here


@contextmanager
def session(options) -> Iterator[None]:
    """One connection for several grids (``tune``'s batches): grids inside reuse it."""
    started_here = connect(options)
    try:
        yield
    finally:
        if started_here:
            _import_ray().shutdown()


@register_executor("ray")
def run_ray(specs: list[dict[str, Any]], out: str, options, progress) -> list[TaskOutcome]:
    ray = _import_ray()
    started_here = connect(options)
    try:
        remote = ray.remote(max_retries=0, **task_resources(ray, options))(call_worker)
        refs = [remote.remote(options.worker, spec, out, options.force) for spec in specs]
        index = {ref: i for i, ref in enumerate(refs)}
        outcomes: list[TaskOutcome | None] = [None] * len(specs)
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    i = index[ref]
                    try:
                        o = outcome_from(specs[i], ray.get(ref))
                    except ray.exceptions.RayTaskError as exc:
                        o = failed(specs[i], exc.cause if getattr(exc, "cause", None) else exc)
                    except ray.exceptions.RayError as exc:  # worker crashed, task cancelled, ...
                        o = failed(specs[i], exc)
                    outcomes[i] = o
                    progress(o)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return [o for o in outcomes if o is not None]
    finally:
        if started_here:
            ray.shutdown()
