"""Planning a grid methods x datasets x seeds: validate every input, build the run specs, write
nothing (but the data fingerprint cache, ``identity.cache_dir()``).

``plan_grid(...) -> Plan(specs, experiment, datasets, splits, preset)``. Each method's config is
built once from its registered config class (``registry.MethodEntry``): defaults, then the
preset's section, then ``--set``; the method object is made once to ``validate`` it (no model is
built). The config hash covers (method, method config, dataset, dataset options, data
fingerprint, run config but its ``NOT_HASHED`` fields, device type, precision, seed, preset,
experiment, protocol, convention, hashed code identity): see ``mrseg_bench.identity``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import identity
from ..config import apply_overrides
from ..datasets.splits import PROTOCOLS, make_split
from ..engine.device import resolve_device, resolve_precision
from ..engine.evaluate import metric_suite
from ..engine.run_config import RunConfig
from ..engine.select import check_selection
from ..paths import check_name
from ..presets import Preset, load_preset, preset_names
from ..registry import DATASETS, METHODS, RegistryError
from .checks import check_seeds, check_train_split
from .overrides import (
    UsageError,
    canonical_options,
    check_options,
    differences,
    parse_sets,
    route_sets,
)
from .spec import RunSpec


@dataclass
class Plan:
    specs: list[RunSpec]
    experiment: str  # the grid's label in the store and reports
    datasets: dict[str, Any]  # name -> MultiRaterDataset
    splits: dict[str, Any] = field(default_factory=dict)  # name -> Split
    preset: Preset | None = None


def make_run_split(dataset, cfg: RunConfig):
    """The split for a run (``datasets.splits.make_split``). The split does not depend on the
    run's seed, so seeds repeat training on the same split; its own seed is ``run.split_seed``
    (None: the protocol's seed, 0 by default and 1337 for ``protocol="dpersona"``)."""
    return make_split(dataset, protocol=cfg.protocol, seed=cfg.split_seed,
                      val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                      num_folds=cfg.num_folds, fold=cfg.fold)


def experiment_name(experiment: str | None, preset_obj: Preset) -> str:
    """The grid's experiment name: ``experiment`` (checked: a safe name that is not another
    built-in preset's) or the preset's name (a user preset file: its path)."""
    if experiment is None:
        return preset_obj.name
    try:
        check_name(experiment, "--experiment")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if experiment in preset_names() and experiment != preset_obj.name:
        raise UsageError(f"--experiment {experiment!r} is the name of a built-in preset's results; "
                         f"choose another name")
    return experiment


def hashed_run(cfg: RunConfig) -> dict[str, Any]:
    """The run-config part of the config hash (``identity.hashed_fields``)."""
    return identity.hashed_fields(cfg)


def plan_grid(methods: str, datasets: str = "synthetic", seeds: Sequence[int] = (0,), preset: str = "default",
              sets: Sequence[str] = (), data_root: str | Path | None = None, device: str | None = None,
              precision: str | None = None, experiment: str | None = None) -> Plan:
    """Validate every input and build the run specs (and datasets); see the module docstring.

    Raises UsageError (a one-line message naming the valid choices) on bad input.
    """
    try:
        preset_obj = load_preset(preset)
        exp = experiment_name(experiment, preset_obj)
        method_names = METHODS.resolve(methods)
        dataset_names = DATASETS.resolve(datasets)
        if not seeds:
            raise UsageError("--seeds: give at least one seed")
        check_seeds(seeds)
        defaults = {m: METHODS.get(m).default_config() for m in method_names}
        fields = {m: {f.name for f in dataclasses.fields(c)} for m, c in defaults.items()}
        run_o, ds_o, meth_o = route_sets(parse_sets(sets), method_names, fields)
        run_values = {**preset_obj.run, **run_o}
        if device is not None:
            run_values["device"] = device
        if precision is not None:
            run_values["precision"] = precision
        run_cfg = apply_overrides(RunConfig(), run_values, where="run")
        if run_cfg.protocol not in PROTOCOLS:
            raise UsageError(f"run.protocol={run_cfg.protocol!r} is not valid; choose {', '.join(PROTOCOLS)}")
        # the metric names and the GED convention are checked now, not when a run starts
        metric_suite([n for n in run_cfg.metrics.split(",") if n.strip()] or None,
                     run_cfg.convention, run_cfg.threshold)
        dev = resolve_device(run_cfg.device)
        prec = resolve_precision(run_cfg.precision, dev)
        root = None
        if data_root is not None:
            root = Path(data_root).expanduser()
            if not root.exists():
                raise UsageError(f"--data-root {root}: does not exist")
        built: dict[str, Any] = {}
        ds_opts: dict[str, dict[str, Any]] = {}
        canon_opts: dict[str, dict[str, Any]] = {}
        ds_diff: dict[str, dict[str, Any]] = {}
        splits: dict[str, Any] = {}
        for d in dataset_names:
            opts = {**preset_obj.dataset_options(d), **ds_o}
            factory = DATASETS.get(d)
            check_options(d, opts, factory)
            built[d] = factory(root=root, **opts)
            ds_opts[d] = opts
            canon_opts[d] = canonical_options(d, opts, factory)
            ds_diff[d] = differences(canon_opts[d], canonical_options(d, preset_obj.dataset_options(d), factory),
                                     "dataset.")
            splits[d] = make_run_split(built[d], run_cfg)  # bad folds/fractions fail here, not mid-grid
            if not splits[d].test:
                raise UsageError(f"dataset {d!r}: the test split is empty (run.test_fraction="
                                 f"{run_cfg.test_fraction}, protocol {run_cfg.protocol!r}); nothing would be evaluated")
            check_train_split(d, splits[d])
        fingerprints = {d: identity.data_fingerprint(built[d]) for d in dataset_names}
        run_part = hashed_run(run_cfg)
        run_diff = differences(run_part, hashed_run(apply_overrides(RunConfig(), preset_obj.run, where="run")), "run.")
        cfgs: dict[str, Any] = {}
        overrides: dict[str, dict[str, Any]] = {}
        for m in method_names:
            preset_over = preset_obj.method_overrides(m, defaults[m])
            preset_cfg = apply_overrides(defaults[m], preset_over, where=f"method {m!r}")
            cfgs[m] = apply_overrides(defaults[m], {**preset_over, **meth_o[m]}, where=f"method {m!r}")
            method_obj = METHODS.get(m)(cfgs[m])
            method_obj.validate(built[dataset_names[0]].info if dataset_names else None)
            check_selection(run_cfg.select, m, method_obj)  # run.select names metrics the method gives
            overrides[m] = {**differences(dataclasses.asdict(cfgs[m]), dataclasses.asdict(preset_cfg)), **run_diff}
    except UsageError:
        raise
    except (RegistryError, ValueError, TypeError, OSError, KeyError) as exc:
        raise UsageError(str(exc) or type(exc).__name__) from None  # every line: layouts, problem lists
    code = identity.code_identity()
    run_json = identity.jsonable(dataclasses.asdict(run_cfg))
    specs = []
    for d in dataset_names:
        for m in method_names:
            for seed in seeds:
                config = identity.jsonable({
                    "method": m, "method_config": cfgs[m], "dataset": d, "dataset_options": canon_opts[d],
                    "data_fingerprint": fingerprints[d], "run": run_part, "device_type": dev.type,
                    "precision": prec, "seed": int(seed), "preset": preset_obj.name, "experiment": exp,
                    "protocol": run_cfg.protocol, "convention": run_cfg.convention, "code": identity.hashed_code(code),
                })
                spec = RunSpec(m, d, int(seed), preset_obj.name, identity.jsonable(cfgs[m]), dict(ds_opts[d]),
                               run_json, str(dev), prec, config=config, config_hash=identity.config_hash(config),
                               experiment=exp, overrides={**overrides[m], **ds_diff[d]},
                               data_fingerprint=fingerprints[d], code=code, reuse_hash=identity.reuse_hash(config),
                               data_root=None if root is None else str(root))
                spec.__dict__["run_cfg"] = run_cfg
                specs.append(spec)
    return Plan(specs, exp, built, splits, preset_obj)
