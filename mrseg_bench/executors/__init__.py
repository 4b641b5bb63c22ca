"""Executors: where the runs of a planned grid execute.

Every executor takes the same input, the JSON run specs of ``mrseg-bench plan --json`` (one per
run), and calls the same unit of work on each, ``run.worker.run_spec(spec, out)``, which claims
the run's folder, trains, evaluates and writes ``result.json`` there. Results therefore come back
through the run folders, and ``grid.run_grid`` indexes each in the store as it ends.

- ``local``: this machine, ``--jobs N`` runs at a time (default 1, in this process).
- ``ray``: one Ray task per run (``pip install "mrseg-bench[ray]"``).
- ``slurm``: one submitit job array (``pip install "mrseg-bench[slurm]"``).

Executors register in ``EXECUTORS`` (``@register_executor``). No scheduling happens here: the
process pool, Ray or Slurm decide where and when each run executes.
"""

from __future__ import annotations

from . import local, ray_executor, slurm_executor  # noqa: E402, F401 - the built-in executors register here
from .base import (
    EXECUTORS,
    ExecutorOptions,
    LocalOptions,
    RayOptions,
    SlurmOptions,
    TaskOutcome,
    execute,
    register_executor,
)

__all__ = ["EXECUTORS", "ExecutorOptions", "LocalOptions", "RayOptions", "SlurmOptions", "TaskOutcome", "execute",
           "register_executor"]
