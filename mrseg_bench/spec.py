"""A run spec as JSON: what ``mrseg-bench plan --json`` prints and ``run-one`` / executors run.

``spec_to_json(spec)`` and ``spec_from_json(data)`` are the only places that know the format::

    {"schema": 1, "method": str, "dataset": str, "seed": int, "preset": str,
     "config_hash": str, "config": {the hashed config, as planned},
     "method_config": {...}, "dataset_options": {...}, "data_root": str | null,
     "run_config": {every RunConfig field}, "device": "cpu" | "cuda" | ..., "precision": str,
     "experiment": str, "overrides": {...}, "data_fingerprint": str, "code": {...},
     "reuse_hash": str,
     "run_dir": "<dataset>/<method>/<experiment>_seed<k>_<hash8>"  (relative to --out)}

The spec is rebuilt from ``method``, ``method_config``, ``dataset``, ``dataset_options``,
``data_root``, ``run_config``, ``seed``, ``device`` and ``precision``; ``config`` and
``config_hash`` are the run's identity, carried unchanged into its result. A spec whose hash
does not match its config, or whose parts disagree with the config, is refused (edited by hand).

``run_spec(spec_json, out)`` runs one spec (``worker.execute``) and returns a JSON-able outcome:
the entry point for a Ray task or a submitit job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import apply_overrides
from .engine.device import resolve_device, resolve_precision
from .engine.run_config import RunConfig
from .interrupts import StopFlag, catch_signals
from .registry import DATASETS, METHODS, RegistryError
from .runner import Outcome, RunSpec, UsageError, _jsonable, config_hash

SPEC_SCHEMA = 1


def spec_to_json(spec: RunSpec) -> dict[str, Any]:
    """The JSON form of ``spec`` (see the module docstring)."""
    return {
        "schema": SPEC_SCHEMA, "method": spec.method, "dataset": spec.dataset, "seed": spec.seed,
        "preset": spec.preset, "config_hash": spec.config_hash, "config": spec.config,
        "method_config": _jsonable(spec.method_obj.cfg), "dataset_options": _jsonable(spec.dataset_options),
        "data_root": spec.data_root, "run_config": _jsonable(dataclasses.asdict(spec.run_cfg)),
        "device": str(spec.device), "precision": spec.precision,
        "experiment": spec.experiment, "overrides": _jsonable(spec.overrides),
        "data_fingerprint": spec.data_fingerprint, "code": _jsonable(spec.code), "reuse_hash": spec.reuse_hash,
        "run_dir": spec.run_dir(Path()).as_posix(),
    }


def spec_from_json(data: Any) -> RunSpec:
    """Rebuild a RunSpec from its JSON form; UsageError (one line, "spec: ...") when it is not one."""
    if not isinstance(data, dict) or data.get("schema") != SPEC_SCHEMA:
        raise UsageError(f"spec: expected a JSON object with schema {SPEC_SCHEMA} (one item of plan --json)")
    need = {"method": str, "dataset": str, "seed": int, "preset": str, "config_hash": str, "config": dict,
            "method_config": dict, "dataset_options": dict, "run_config": dict, "device": str, "precision": str}
    for key, tp in need.items():
        if not isinstance(data.get(key), tp) or isinstance(data.get(key), bool):
            raise UsageError(f"spec: {key!r} is missing or not a {tp.__name__}")
    if data.get("data_root") is not None and not isinstance(data["data_root"], str):
        raise UsageError("spec: 'data_root' must be a string or null")
    for key in ("method", "dataset"):  # they become folder names (the experiment is slugged)  TODO: paths.check_name (harden)
        v = data[key]
        if not v or v in (".", "..") or "/" in v or "\\" in v or any(ord(c) < 32 for c in v):
            raise UsageError(f"spec: {key} {v!r} is not a valid name (no /, \\, .., control characters)")
    config = data["config"]
    if config_hash(config) != data["config_hash"]:
        raise UsageError("spec: config_hash does not match its config (edited by hand?)")
    identity_parts = {k: data[k] for k in ("experiment", "data_fingerprint") if k in data}
    if isinstance(data.get("code"), dict) and "code" in config:  # the hashed part of the stored identity
        from .identity import hashed_code

        identity_parts["code"] = hashed_code(data["code"])
    for key, part in (("method", data["method"]), ("dataset", data["dataset"]), ("seed", data["seed"]),
                      ("method_config", data["method_config"]), *identity_parts.items()):
        if key in config and config[key] != part:
            raise UsageError(f"spec: {key!r} differs from the one in its config (edited by hand?)")
    try:
        factory = METHODS.get(data["method"])
        cfg = apply_overrides(factory().cfg, data["method_config"], where=f"spec method {data['method']!r}")
        method_obj = factory(cfg)
        if _jsonable(method_obj.cfg) != data["method_config"]:
            raise UsageError(f"spec: method {data['method']!r} config does not round-trip")
        from .runner import _canonical_options

        canon = _jsonable(_canonical_options(DATASETS.get(data["dataset"]), dict(data["dataset_options"])))
        if "dataset_options" in config and config["dataset_options"] != canon:
            raise UsageError("spec: 'dataset_options' differs from the one in its config (edited by hand?)")
        run_cfg = apply_overrides(RunConfig(), data["run_config"], where="spec run_config")
        device = resolve_device(data["device"])
        precision = resolve_precision(data["precision"], device)
    except UsageError:
        raise
    except (RegistryError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"spec: {str(exc) or type(exc).__name__}") from None
    spec = RunSpec(data["method"], data["dataset"], data["seed"], data["preset"], method_obj,
                   dict(data["dataset_options"]), run_cfg, device, precision, config=config,
                   config_hash=data["config_hash"], data_root=data.get("data_root"),
                   experiment=str(config.get("experiment") or data["preset"]),
                   overrides=dict(data.get("overrides") or {}),
                   data_fingerprint=str(config.get("data_fingerprint") or ""),
                   code=dict(data.get("code") or config.get("code") or {}),
                   reuse_hash=str(data.get("reuse_hash") or ""))
    if "run_dir" in data and data["run_dir"] != spec.run_dir(Path()).as_posix():
        raise UsageError(f"spec: run_dir {data['run_dir']!r} does not match its method, dataset, seed and hash")
    return spec


def build_dataset(spec: RunSpec):
    """The spec's dataset (its factory with ``root`` and options); UsageError on failure."""
    try:
        root = None if spec.data_root is None else Path(spec.data_root)
        return DATASETS.get(spec.dataset)(root=root, **spec.dataset_options)
    except (RegistryError, ValueError, TypeError, OSError, KeyError) as exc:
        raise UsageError(f"spec: dataset {spec.dataset!r}: {str(exc) or type(exc).__name__}") from None


def execute_spec(spec_json: dict[str, Any], out: str | Path, *, force: bool = False, quiet: bool = True,
                 log: Callable[[str], None] = lambda s: None, dataset=None, split=None,
                 stop: StopFlag | None = None) -> Outcome:
    """Rebuild the spec and run it with claims (``worker.execute``); ``dataset``/``split``: the
    planner's, to skip rebuilding them in process. Installs signal handlers unless ``stop`` is given."""
    from .worker import execute

    spec = spec_from_json(spec_json)
    ds = dataset
    if ds is None:  # a worker elsewhere: its copy of the data must be the planned one
        from .identity import data_fingerprint

        ds = build_dataset(spec)
        if spec.data_fingerprint and data_fingerprint(ds) != spec.data_fingerprint:
            raise UsageError(f"spec: the data at {spec.data_root or spec.dataset!r} differs from the data the run "
                             "was planned on (data fingerprint mismatch); plan again on this data")
    if stop is not None:
        return execute(spec, ds, out, force=force, quiet=quiet, log=log, split=split, stop=stop)
    with catch_signals() as flag:
        return execute(spec, ds, out, force=force, quiet=quiet, log=log, split=split, stop=flag)


def run_spec(spec_json: dict[str, Any], out: str, *, force: bool = False, quiet: bool = True,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run one spec into ``out`` (no store is written) and return its outcome summary:
    ``{"status": "done"|"failed"|"skipped", "run_id", "error", "note", "run_dir", "method",
    "dataset", "seed", "config_hash"}``. Raises UsageError for a bad spec and
    ``interrupts.RunInterrupted`` on SIGINT/SIGTERM (after writing the ``last`` checkpoint)."""
    return execute_spec(spec_json, out, force=force, quiet=quiet, log=log).summary()
