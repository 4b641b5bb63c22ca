"""The unit of work shipped to Ray tasks and submitit jobs: run one spec into ``out``."""

from __future__ import annotations

from typing import Any


def run_spec_worker(spec: dict[str, Any], out: str, force: bool = False) -> dict[str, Any]:
    """Claim, train, evaluate and write ``result.json`` for one run spec (``spec.run_spec``)."""
    from ..spec import run_spec  # imported in the worker process

    return run_spec(spec, out, force=force)
