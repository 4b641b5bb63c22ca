"""How many torch threads one run gets when several share a machine."""

from __future__ import annotations


def thread_budget(cores: int | None, concurrent: int) -> int:
    """Threads per run for ``concurrent`` runs on ``cores`` CPU cores: ``cores // concurrent``,
    at least 1 (``cores`` None, as ``os.cpu_count()`` may return: 1). A run's explicit
    ``run.num_threads`` overrides it."""
    return max(1, (cores or 1) // max(1, int(concurrent)))
