"""The grid methods x datasets x seeds: plan (validate everything, write nothing) -> for each run
train -> evaluate -> profile -> store.

Experiment folders are predictable, nnU-Net style:
``<out>/<dataset>/<method>/<experiment>_seed<k>_<hash8>/`` (``run_folder``: config.json, split.json,
checkpoints/, train_log.jsonl, metrics.csv, error.txt for a failed run, and result.json, the
record); ``<experiment>`` is ``identity.experiment_slug`` of the experiment name (a user preset's
path becomes ``<stem>-<hash6>``). The config hash is the sha256 of the canonical JSON of (method,
method config, dataset, dataset options, data fingerprint, run config incl. protocol and
convention, device type, precision, seed, preset, experiment, code identity); see
``mrseg_bench.identity``.

``run_grid`` is the local executor: each spec goes through its JSON form (``spec``) to
``worker.execute`` (claim, train, result.json), exactly as a Ray task or Slurm job would run it,
and this process, the submitting one, indexes each result in the store. A run already ``done``
(in its folder or the store) with the same hash is skipped unless ``force``; with
``reuse_results`` a done run whose config differs only in the code identity is skipped too. An
interrupted run resumes from its checkpoints. One failing run is recorded as failed and the grid
goes on.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import platform
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import identity
from .config import apply_overrides
from .engine.data import limit, make_batches, prepare
from .engine.device import resolve_device, resolve_precision
from .engine.evaluate import metric_suite
from .engine.hardware import hardware_info
from .engine.run_config import RunConfig
from .engine.select import check_selection
from .method import Method
from .presets import Preset, load_preset
from .registry import DATASETS, METHODS, RegistryError
from .store import ResultsStore

# run-config fields that do not change results (left out of the config hash)
_HASH_EXCLUDE = {"device", "precision", "num_workers", "num_threads", "checkpoint_every", "profile", "profile_warmup", "profile_steps",
                 "latency_repeats", "checkpoint_interval_s", "keep_last", "claim_heartbeat_s", "claim_stale_s",
                 "tensorboard"}


class UsageError(ValueError):
    """Bad user input found while planning (nothing has been written)."""


@dataclass
class RunSpec:
    method: str
    dataset: str
    seed: int
    preset: str
    method_obj: Method
    dataset_options: dict[str, Any]
    run_cfg: RunConfig
    device: torch.device
    precision: str
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    experiment: str = ""  # the grid's label (default: the preset's name; a user preset: its path)
    overrides: dict[str, Any] = field(default_factory=dict)  # what --set changed vs the preset
    data_fingerprint: str = ""  # identity.data_fingerprint of the dataset
    code: dict[str, Any] = field(default_factory=dict)  # identity.code_identity()
    reuse_hash: str = ""  # identity.reuse_hash(config): the config hash without the code identity
    data_root: str | None = None

    def run_dir(self, out: Path) -> Path:
        name = identity.experiment_slug(self.experiment or self.preset)
        return Path(out) / self.dataset / self.method / f"{name}_seed{self.seed}_{self.config_hash[:8]}"


@dataclass
class Plan:
    specs: list[RunSpec]
    datasets: dict[str, Any]  # name -> MultiRaterDataset
    preset: Preset
    splits: dict[str, Any] = field(default_factory=dict)  # name -> Split


@dataclass
class Outcome:
    spec: RunSpec
    status: str  # done | failed | skipped
    run_id: str | None = None
    error: str | None = None
    run_dir: Path | None = None
    note: str | None = None  # why skipped: "done", "claimed by ...", "claim lost"
    result: dict[str, Any] | None = None  # what result.json holds (done/failed)
    store_error: str | None = None  # the store could not index the result (it stays in the folder)

    def summary(self) -> dict[str, Any]:
        """A JSON-able outcome (``spec.run_spec``'s return value)."""
        return {"status": self.status, "run_id": self.run_id, "error": self.error, "note": self.note,
                "run_dir": None if self.run_dir is None else str(self.run_dir), "method": self.spec.method,
                "dataset": self.spec.dataset, "seed": self.spec.seed, "config_hash": self.spec.config_hash}


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in sorted(x.items())}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    return str(x)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, compact) of ``config``."""
    return hashlib.sha256(json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_sets(sets: Sequence[str]) -> list[tuple[str, str]]:
    """``["a=1", "dpersona.b=2"]`` -> ``[("a","1"), ("dpersona.b","2")]``; UsageError if no '='."""
    out = []
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {s!r}: expected key=value, method.key=value, dataset.key=value or run.key=value")
        out.append((key.strip(), value.strip()))
    return out


def _route_sets(pairs, methods: list[str], cfg_fields: dict[str, set[str]]):
    """Split --set pairs into run, dataset and per-method overrides."""
    run_o: dict[str, str] = {}
    ds_o: dict[str, str] = {}
    meth_o: dict[str, dict[str, str]] = {m: {} for m in methods}
    for key, value in pairs:
        scope, dot, sub = key.rpartition(".")
        if not dot:
            hits = [m for m in methods if key in cfg_fields[m]]
            if not hits:
                valid = sorted(set().union(*cfg_fields.values()))
                raise UsageError(f"--set {key}: no selected method has this key; valid: {', '.join(valid)}")
            for m in hits:
                meth_o[m][key] = value
        elif scope == "run":
            run_o[sub] = value
        elif scope == "dataset":
            ds_o[sub] = value
        else:
            hits = [m for m in methods if fnmatch.fnmatchcase(m, scope)]
            if not hits:
                raise UsageError(f"--set {key}: {scope!r} is not a selected method; selected: {', '.join(methods)}"
                                 " (or use run.KEY / dataset.KEY)")
            for m in hits:
                meth_o[m][sub] = value
    return run_o, ds_o, meth_o


def _check_options(factory: Callable, dataset: str, opts: dict[str, Any]) -> None:
    """UsageError naming the valid options if ``opts`` has a key the factory does not take."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n in params if n != "root"]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise UsageError(f"dataset {dataset!r}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")


def _differences(now: dict[str, Any], base: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{prefix + key: now[key]}`` for the keys whose value differs from ``base``'s (JSON-able)."""
    now, base = _jsonable(now), _jsonable(base)
    return {f"{prefix}{k}": v for k, v in now.items() if k not in base or base[k] != v}


def _experiment_name(experiment: str | None, preset_obj: Preset) -> str:
    """The grid's experiment name: ``experiment`` (checked: a safe name that is not another
    built-in preset's) or the preset's name (a user preset file: its path)."""
    from .presets import preset_names

    if experiment is None:
        return preset_obj.name
    try:
        identity.check_name(experiment, "--experiment")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if experiment in preset_names() and experiment != preset_obj.name:
        raise UsageError(f"--experiment {experiment!r} is the name of a built-in preset's results; "
                         f"choose another name")
    return experiment


def _canonical_options(factory: Callable, opts: dict[str, Any]) -> dict[str, Any]:
    """Every option of dataset ``factory`` with its value: the defaults, overridden by ``opts``
    converted to the annotated types (``"12"`` from ``--set`` and ``12`` from a preset are one
    config). Options the factory does not annotate are kept as given."""
    import inspect
    import typing

    from .config import _convert

    target = inspect.unwrap(factory)
    try:
        params = inspect.signature(target).parameters
        hints = typing.get_type_hints(target)
    except (TypeError, ValueError, NameError):
        return dict(opts)
    out = {n: p.default for n, p in params.items()
           if n != "root" and p.default is not inspect.Parameter.empty
           and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    for k, v in opts.items():
        out[k] = _convert(v, hints[k], k, "dataset") if k in hints else v
    return out


def plan_grid(methods: str, datasets: str = "synthetic", seeds: Sequence[int] = (0,), preset: str = "default",
              sets: Sequence[str] = (), data_root: str | Path | None = None, device: str | None = None,
              precision: str | None = None, experiment: str | None = None) -> Plan:
    """Validate every input and build the run specs (and datasets). Writes nothing (but the
    data fingerprint cache, ``identity.cache_dir()``).

    Raises UsageError (a one-line message naming the valid choices) on bad input.
    """
    try:
        preset_obj = load_preset(preset)
        experiment_name = _experiment_name(experiment, preset_obj)
        method_names = METHODS.resolve(methods)
        dataset_names = DATASETS.resolve(datasets)
        if not seeds:
            raise UsageError("--seeds: give at least one seed")
        defaults = {m: METHODS.get(m)().cfg for m in method_names}
        fields = {m: {f.name for f in dataclasses.fields(c)} for m, c in defaults.items()}
        run_o, ds_o, meth_o = _route_sets(parse_sets(sets), method_names, fields)
        run_values = {**preset_obj.run, **run_o}
        if device is not None:
            run_values["device"] = device
        if precision is not None:
            run_values["precision"] = precision
        run_cfg = apply_overrides(RunConfig(), run_values, where="run")
        from .datasets.splits import PROTOCOLS

        if run_cfg.protocol not in PROTOCOLS:
            raise UsageError(f"run.protocol={run_cfg.protocol!r} is not valid; choose {', '.join(PROTOCOLS)}")
        # the metric names and the GED convention are checked now, not when a run starts
        metric_suite([n for n in run_cfg.metrics.split(",") if n.strip()] or None,
                     run_cfg.convention, run_cfg.threshold)
        dev = resolve_device(run_cfg.device)
        prec = resolve_precision(run_cfg.precision, dev)
        built: dict[str, Any] = {}
        ds_opts: dict[str, dict[str, Any]] = {}
        canon_opts: dict[str, dict[str, Any]] = {}
        preset_opts: dict[str, dict[str, Any]] = {}
        splits: dict[str, Any] = {}
        for d in dataset_names:
            opts = {**preset_obj.dataset_options(d), **ds_o}
            if data_root is not None:
                root = Path(data_root).expanduser()
                if not root.exists():
                    raise UsageError(f"--data-root {root}: does not exist")
            else:
                root = None
            factory = DATASETS.get(d)
            _check_options(factory, d, opts)
            built[d] = factory(root=root, **opts)
            ds_opts[d] = opts
            canon_opts[d] = _canonical_options(factory, opts)
            preset_opts[d] = _canonical_options(factory, preset_obj.dataset_options(d))
            splits[d] = make_run_split(built[d], run_cfg)  # bad folds/fractions fail here, not mid-grid
            if not splits[d].test:
                raise UsageError(f"dataset {d!r}: the test split is empty (run.test_fraction="
                                 f"{run_cfg.test_fraction}, protocol {run_cfg.protocol!r}); nothing would be evaluated")
        fingerprints = {d: identity.data_fingerprint(built[d]) for d in dataset_names}
        objs: dict[str, Method] = {}
        overrides: dict[str, dict[str, Any]] = {}
        preset_run = {k: v for k, v in dataclasses.asdict(apply_overrides(RunConfig(), preset_obj.run, where="run"))
                      .items() if k not in _HASH_EXCLUDE}
        run_diff = _differences({k: v for k, v in dataclasses.asdict(run_cfg).items() if k not in _HASH_EXCLUDE},
                                preset_run, "run.")
        for m in method_names:
            over = {**preset_obj.method_overrides(m, defaults[m]), **meth_o[m]}
            cfg = apply_overrides(defaults[m], over, where=f"method {m!r}") if over else defaults[m]
            objs[m] = METHODS.get(m)(cfg)
            objs[m].validate(built[dataset_names[0]].info if dataset_names else None)
            check_selection(run_cfg.select, m, objs[m])  # run.select names metrics the method gives
            preset_cfg = apply_overrides(defaults[m], preset_obj.method_overrides(m, defaults[m]), where=f"method {m!r}")
            overrides[m] = {**_differences(dataclasses.asdict(cfg), dataclasses.asdict(preset_cfg)), **run_diff}
    except UsageError:
        raise
    except (RegistryError, ValueError, TypeError, OSError, KeyError) as exc:
        raise UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    specs = []
    code = identity.code_identity()
    for d in dataset_names:
        for m in method_names:
            ds_diff = _differences(canon_opts[d], preset_opts[d], "dataset.")
            for seed in seeds:
                run_part = {k: v for k, v in dataclasses.asdict(run_cfg).items() if k not in _HASH_EXCLUDE}
                config = _jsonable({
                    "method": m, "method_config": objs[m].cfg, "dataset": d, "dataset_options": canon_opts[d],
                    "data_fingerprint": fingerprints[d], "run": run_part, "device_type": dev.type,
                    "precision": prec, "seed": int(seed), "preset": preset_obj.name, "experiment": experiment_name,
                    "protocol": run_cfg.protocol, "convention": run_cfg.convention, "code": identity.hashed_code(code),
                })
                spec = RunSpec(m, d, int(seed), preset_obj.name, objs[m], ds_opts[d], run_cfg, dev, prec,
                               config=config, config_hash=config_hash(config), experiment=experiment_name,
                               overrides={**overrides[m], **ds_diff}, data_fingerprint=fingerprints[d],
                               code=code, reuse_hash=identity.reuse_hash(config),
                               data_root=None if data_root is None else str(Path(data_root).expanduser()))
                specs.append(spec)
    return Plan(specs, built, preset_obj, splits)


# -- one run ------------------------------------------------------------------------------------
def make_run_split(dataset, cfg: RunConfig):
    """The split for a run (``datasets.splits.make_split``). The split does not depend on the
    run's seed, so seeds repeat training on the same split; its own seed is ``run.split_seed``
    (None: the protocol's seed, 0 by default and 1337 for ``protocol="dpersona"``)."""
    from .datasets.splits import make_split

    return make_split(dataset, protocol=cfg.protocol, seed=cfg.split_seed,
                      val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                      num_folds=cfg.num_folds, fold=cfg.fold)


def save_qualitative_cases(method: Method, model, dataset, split, cfg: RunConfig,
                           device: torch.device, run_dir: Path) -> None:
    """Predict the first ``cfg.qualitative_cases`` test cases and save ``qualitative.pt`` (the
    report's qualitative grid; the same cases for every method of a dataset)."""
    from .reports.qualitative import save_qualitative

    idx = limit(list(split.test), cfg.qualitative_cases)
    if not idx:
        return
    batch = prepare(next(iter(make_batches(dataset, idx, len(idx), False, 0))), device,
                    cfg.image_size, cfg.channels_last)
    model.eval()
    with torch.no_grad():
        pred = method.predict(model, batch.image, cfg.n_samples)
    save_qualitative(run_dir, batch.image, batch.masks, pred, batch.case_id,
                     max_cases=cfg.qualitative_cases)


def _split_json(split, dataset) -> Any:
    from .datasets.splits import split_to_json

    return json.loads(split_to_json(split, dataset))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device), "platform": platform.platform(), "hostname": socket.gethostname(),
           "cpu_count": os.cpu_count()}
    env.update(hardware_info(device))  # threads, CPU model, GPU name, torch/CUDA versions, device_name
    return env


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def done_run_id(store: ResultsStore, spec: RunSpec, reuse_results: bool = False) -> str | None:
    """The done run that makes ``spec`` a skip: one with the same config hash, or with
    ``reuse_results`` one whose config differs only in the code identity; None: train it."""
    done = store.done_run_id(spec.config_hash)
    if done is None and reuse_results and spec.reuse_hash:
        done = store.reusable_run_id(spec.reuse_hash, spec.method, spec.dataset, spec.seed)
    return done


def run_grid(plan: Plan, out: str | Path = "runs", store_path: str | Path = "runs/results.sqlite",
             force: bool = False, quiet: bool = True, log: Callable[[str], None] = lambda s: None,
             reuse_results: bool = False) -> list[Outcome]:
    """The local executor: run every spec of ``plan`` in order, each claimed, and index each
    result in the store as it ends; returns one Outcome per spec. ``reuse_results``: skip a run
    done before on other code (same config otherwise) instead of training it again. SIGINT/SIGTERM: the running
    run writes its ``last`` checkpoint and ``interrupts.RunInterrupted`` is raised."""
    from .collect import index_result
    from .interrupts import RunInterrupted, catch_signals
    from .spec import execute_spec, spec_to_json

    out = Path(out)
    outcomes: list[Outcome] = []
    with catch_signals() as flag, ResultsStore(store_path) as store:
        for spec in plan.specs:
            if flag.signum is not None:
                raise RunInterrupted(f"the grid before {spec.method} {spec.dataset} seed {spec.seed}",
                                     spec.run_dir(out), None, flag.exit_code)
            try:
                done = None if force else done_run_id(store, spec, reuse_results)
            except Exception as exc:  # noqa: BLE001 - the run folder still says whether it is done
                log(f"warning: the store {store_path} cannot be read ({type(exc).__name__}: {exc})")
                done = None
            if done is not None:
                log(f"skip {spec.method} {spec.dataset} seed {spec.seed}: done as {done}")
                outcomes.append(Outcome(spec, "skipped", done, run_dir=spec.run_dir(out), note="done"))
                continue
            o = execute_spec(spec_to_json(spec), out, force=force, quiet=quiet, log=log,
                             dataset=plan.datasets[spec.dataset], split=plan.splits.get(spec.dataset), stop=flag)
            if o.result is not None:  # done or failed here, or done by another worker: index it
                try:
                    index_result(store, o.result)
                except Exception as exc:  # noqa: BLE001 - the result stays in its folder; collect recovers it
                    o.store_error = f"{type(exc).__name__}: {exc}"
                    log(f"warning: {spec.method} {spec.dataset} seed {spec.seed}: the store could not index the "
                        f"result ({o.store_error}); it is kept in {o.run_dir}/result.json; run mrseg-bench collect")
            outcomes.append(o)
    return outcomes


# -- summary ------------------------------------------------------------------------------------
# moved to mrseg_bench.reports.summary (columns from the metrics' MetricSpec); re-exported here
from .reports.summary import summarize  # noqa: E402, F401
