"""The unit of work shipped to Ray tasks and submitit jobs: run one spec into ``out``."""

from __future__ import annotations

from typing import Any


def run_spec_worker(spec: dict[str, Any], out: str) -> dict[str, Any]:
    """Claim, train, evaluate and write ``result.json`` for one run spec (see runner.run_spec)."""
    from ..runner import run_spec  # noqa: PLC0415 - imported in the worker process

    return run_spec(spec, out)
