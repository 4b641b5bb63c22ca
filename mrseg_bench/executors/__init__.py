"""Executors: where the runs of a planned grid execute.

Every executor takes the same input, the JSON run specs of ``mrseg-bench plan --json`` (one per
run), and calls the same unit of work on each, ``run_spec(spec, out)``, which claims the run's
folder, trains, evaluates and writes ``result.json`` there. Results therefore come back through
the run folders, never through the engine, and every executor ends with the same ``collect``.

- ``local``: the specs one after another in this process (the default).
- ``ray``: one Ray task per run (``pip install "mrseg-bench[ray]"``).
- ``slurm``: one submitit job array (``pip install "mrseg-bench[slurm]"``).

No scheduling happens here: Ray and Slurm decide where and when each run executes.
"""

from __future__ import annotations

from .base import EXECUTORS, ExecutorOptions, TaskOutcome, execute

__all__ = ["EXECUTORS", "ExecutorOptions", "TaskOutcome", "execute"]
