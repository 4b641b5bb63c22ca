"""The run pipeline: plan a grid, describe each run as JSON, execute one run.

Imports go one way: ``overrides`` <- ``spec`` <- ``plan`` <- ``worker``; ``executors`` run the
worker on each spec and ``executors.grid`` indexes the results. Nothing here imports ``reports``.

- ``overrides``: ``--set`` routing, dataset options, ``UsageError``;
- ``spec``: ``RunSpec`` (JSON data), ``Status``, ``Outcome``, ``spec_to_json`` / ``spec_from_json``;
- ``plan``: ``plan_grid`` -> ``Plan(specs, experiment, datasets, splits)``;
- ``worker``: ``execute(spec, out)``: claim, train, evaluate, profile, ``result.json``.
"""

from __future__ import annotations

from .overrides import UsageError
from .plan import Plan, plan_grid
from .spec import Outcome, RunSpec, Status, spec_from_json, spec_to_json

__all__ = ["Outcome", "Plan", "RunSpec", "Status", "UsageError", "plan_grid", "spec_from_json", "spec_to_json"]
