"""One planned run as plain JSON data: ``RunSpec``, its ``Status`` and ``Outcome``.

A ``RunSpec`` holds only JSON values, so ``spec_to_json`` / ``spec_from_json`` (the only places
that know the format) are the whole contract between the planner, ``mrseg-bench plan --json``,
``run-one`` and every executor::

    {"schema": 1, "method": str, "dataset": str, "seed": int, "preset": str,
     "config_hash": str, "config": {the hashed config, as planned},
     "method_config": {...}, "dataset_options": {...}, "data_root": str | null,
     "run_config": {every RunConfig field}, "device": "cpu" | "cuda" | ..., "precision": str,
     "experiment": str, "overrides": {...}, "data_fingerprint": str, "code": {...},
     "reuse_hash": str, "trial": {a tune trial: storage, study, number, ...} | null,
     "run_dir": "<dataset>/<method>/<experiment>_seed<k>_<hash8>"  (relative to --out)}

``config`` and ``config_hash`` are the run's identity (``identity.config_hash``), carried
unchanged into its result. ``spec_from_json`` refuses a spec whose hash does not match its
config or whose parts disagree with the config (edited by hand), and checks the method config
against the method's registered config class without building the method or a model. The
typed views ``run_cfg``, ``method_obj`` and ``torch_device`` are built on first use.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..config import apply_overrides
from ..engine.device import resolve_device, resolve_precision
from ..engine.run_config import RunConfig
from ..identity import config_hash, experiment_slug, hashed_code, hashed_fields, jsonable
from ..method import Method
from ..paths import check_name
from ..registry import METHODS, RegistryError
from .checks import check_seeds
from .overrides import UsageError, canonical_options

SPEC_SCHEMA = 1


class Status(str, enum.Enum):
    """What became of a run (stored in ``result.json`` and the store as its value)."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # done before, or claimed by another worker
    CANCELLED = "cancelled"  # an executor cancelled it (Ctrl-C)

    def __str__(self) -> str:
        return self.value


@dataclass
class RunSpec:
    """One run of a grid; every field is JSON data (see the module docstring)."""

    method: str
    dataset: str
    seed: int
    preset: str
    method_config: dict[str, Any]
    dataset_options: dict[str, Any]
    run_config: dict[str, Any]
    device: str
    precision: str
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    experiment: str = ""  # the grid's label (default: the preset's name; a user preset: its path)
    overrides: dict[str, Any] = field(default_factory=dict)  # what --set changed vs the preset
    data_fingerprint: str = ""  # identity.data_fingerprint of the dataset
    code: dict[str, Any] = field(default_factory=dict)  # identity.code_identity()
    reuse_hash: str = ""  # identity.reuse_hash(config): the config hash without the code identity
    data_root: str | None = None
    trial: dict[str, Any] | None = None  # a tune trial (mrseg_bench.tune.hook); not in the identity

    def run_dir(self, out: str | Path) -> Path:
        name = experiment_slug(self.experiment or self.preset)
        return Path(out) / self.dataset / self.method / f"{name}_seed{self.seed}_{self.config_hash[:8]}"

    @property
    def label(self) -> str:
        return f"{self.method} {self.dataset} seed {self.seed}"

    @cached_property
    def run_cfg(self) -> RunConfig:
        return apply_overrides(RunConfig(), self.run_config, where="spec run_config")

    @cached_property
    def method_obj(self) -> Method:
        """The method with this spec's config (built once per spec; no model is built)."""
        entry = METHODS.get(self.method)
        return entry(apply_overrides(entry.default_config(), self.method_config, where=f"method {self.method!r}"))

    @cached_property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


@dataclass
class Outcome:
    """What became of one spec: its ``status``, run id, folder, and the result written."""

    spec: RunSpec
    status: Status
    run_id: str | None = None
    error: str | None = None
    run_dir: Path | None = None
    note: str | None = None  # why skipped: "done", "claimed by ...", "claim lost"
    result: dict[str, Any] | None = None  # what result.json holds (done/failed)
    store_error: str | None = None  # the store could not index the result (it stays in the folder)

    def summary(self) -> dict[str, Any]:
        """A JSON-able outcome (what a worker returns to its executor), with the result it wrote
        (``result``: also when the disk refused ``result.json``)."""
        return {"status": Status(self.status).value, "run_id": self.run_id, "error": self.error, "note": self.note,
                "run_dir": None if self.run_dir is None else str(self.run_dir), "method": self.spec.method,
                "dataset": self.spec.dataset, "seed": self.spec.seed, "config_hash": self.spec.config_hash,
                "result": self.result}


def spec_to_json(spec: RunSpec) -> dict[str, Any]:
    """The JSON form of ``spec`` (see the module docstring)."""
    data = {f.name: jsonable(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    return {"schema": SPEC_SCHEMA, **data, "run_dir": spec.run_dir(Path()).as_posix()}


def _message(exc: BaseException) -> str:
    """The whole message (layouts and problem lists span several lines), or the exception's name."""
    return str(exc) or type(exc).__name__


def _check_hashed_run(config: dict[str, Any], run_cfg: RunConfig, device: torch.device, precision: str,
                      preset: str) -> None:
    """UsageError naming the first field a worker would run with (``run_config.<field>``, device,
    precision, preset, protocol, convention) that differs from the config its hash covers: a spec
    edited by hand must not run under the planned hash."""
    rebuilt = {"run": jsonable(hashed_fields(run_cfg)), "device_type": device.type, "precision": precision,
               "preset": preset, "protocol": run_cfg.protocol, "convention": run_cfg.convention}
    for key, have in rebuilt.items():
        want = config.get(key, "<absent>")
        if want == have:
            continue
        field = "device" if key == "device_type" else key
        if key == "run" and isinstance(want, dict):
            sub = next(k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k))
            field, want, have = f"run_config.{sub}", want.get(sub, "<absent>"), have.get(sub, "<absent>")
        raise UsageError(f"spec: {field} is {have!r} but the config its hash covers says {want!r} (edited by "
                         "hand?); plan again instead of editing a spec")


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
    try:
        check_seeds([data["seed"]])
    except ValueError as exc:
        raise UsageError(f"spec: {exc}") from None
    if data.get("trial") is not None:
        from ..tune.hook import check_trial

        try:
            check_trial(data["trial"])
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    for key in ("method", "dataset"):  # they become folder names (the experiment is slugged)
        try:
            check_name(data[key], key)
        except ValueError as exc:
            raise UsageError(f"spec: not a valid name: {exc}") from None
    config = data["config"]
    if config_hash(config) != data["config_hash"]:
        raise UsageError("spec: config_hash does not match its config (edited by hand?)")
    identity_parts = {k: data[k] for k in ("experiment", "data_fingerprint") if k in data}
    if isinstance(data.get("code"), dict) and "code" in config:  # the hashed part of the stored identity
        identity_parts["code"] = hashed_code(data["code"])
    for key, part in (("method", data["method"]), ("dataset", data["dataset"]), ("seed", data["seed"]),
                      ("method_config", data["method_config"]), *identity_parts.items()):
        if key in config and config[key] != part:
            raise UsageError(f"spec: {key!r} differs from the one in its config (edited by hand?)")
    try:
        entry = METHODS.get(data["method"])
        cfg = apply_overrides(entry.default_config(), data["method_config"], where=f"spec method {data['method']!r}")
        if jsonable(cfg) != data["method_config"]:
            raise UsageError(f"spec: method {data['method']!r} config does not round-trip")
        canon = jsonable(canonical_options(data["dataset"], dict(data["dataset_options"])))
        if "dataset_options" in config and config["dataset_options"] != canon:
            raise UsageError("spec: 'dataset_options' differs from the one in its config (edited by hand?)")
        run_cfg = apply_overrides(RunConfig(), data["run_config"], where="spec run_config")
        device = resolve_device(data["device"])
        precision = resolve_precision(data["precision"], device)
    except UsageError:
        raise
    except (RegistryError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise UsageError(f"spec: {_message(exc)}") from None
    spec = RunSpec(data["method"], data["dataset"], data["seed"], data["preset"], dict(data["method_config"]),
                   dict(data["dataset_options"]), jsonable(dataclasses.asdict(run_cfg)), str(device),
                   precision, config=config, config_hash=data["config_hash"], data_root=data.get("data_root"),
                   experiment=str(config.get("experiment") or data["preset"]),
                   overrides=dict(data.get("overrides") or {}),
                   data_fingerprint=str(config.get("data_fingerprint") or ""),
                   code=dict(data.get("code") or config.get("code") or {}),
                   reuse_hash=str(data.get("reuse_hash") or ""), trial=data.get("trial"))
    spec.__dict__["run_cfg"] = run_cfg
    _check_hashed_run(config, run_cfg, device, precision, data["preset"])
    if "run_dir" in data and data["run_dir"] != spec.run_dir(Path()).as_posix():
        raise UsageError(f"spec: run_dir {data['run_dir']!r} does not match its method, dataset, seed and hash")
    return spec
