"""One tune: every method gets the same budget; trials run as ordinary runs on an executor.

``run_tune(TuneRequest(...))``:

1. plan the grid once (``run.plan.plan_grid``: every input checked before anything is written);
   each method's space (``space.effective_space``) and objective (``objective.objective_for``);
   the last stage selects its best epoch on the objective (``objective.select_rule``);
2. claim ``<out>/<experiment>/tune/`` (one driver at a time), open each method's study in the
   journal (``study``), fail and re-ask the trials a dead driver left running, and enqueue the
   preset trial (the preset's own values, never pruned) while the study has budget left;
3. until every method has used ``trials`` trials: ask up to ``batch`` trials per method, make
   each a run spec (the method's planned spec with the trial's values as method-config
   overrides, so its own config hash, run folder and identity; ``spec.trial`` tells its run where
   to report each epoch), run them all as one grid (``executors.grid.run_grid``), and tell each
   study its trials' values (``objective.trial_value``: validation only) or states;
4. after each batch, write ``trials.csv``, ``objective.png``, ``best.toml`` and ``summary.md``
   (``outputs``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import identity
from ..config import apply_overrides
from ..identity import experiment_slug
from ..registry import METHODS
from ..run.overrides import UsageError, parse_sets
from ..run.plan import Plan, plan_grid
from ..run.spec import Outcome, RunSpec, Status, spec_from_json, spec_to_json
from . import outputs
from . import study as studies
from .objective import Objective, objective_for, select_rule, trial_value
from .space import Range, effective_space, preset_point, suggest


@dataclass
class TuneRequest:
    """What ``mrseg-bench tune`` asks for (see the CLI's help)."""

    methods: str
    preset: str
    trials: int
    dataset: str = "synthetic"
    seed: int = 0
    sets: list[str] = field(default_factory=list)
    data_root: str | Path | None = None
    device: str | None = None
    precision: str | None = None
    out: Path = Path("runs")
    experiment: str | None = None
    store: Path | None = None
    executor: str = "local"
    options: Any = None  # executors.ExecutorOptions
    batch: int = 1
    pruner: str = "median"
    prune_startup: int = 2
    prune_warmup: int = 1


@dataclass
class TuneResult:
    folder: Path
    experiment: str
    rows: list[outputs.TrialRow]
    summaries: list[outputs.MethodSummary]
    budget: dict[str, Any]
    preset_path: Path
    orphans: dict[str, list[int]]


@dataclass
class _Method:
    name: str
    spec: RunSpec  # the planned spec without trial values
    space: dict[str, Range]
    objective: Objective
    study: Any = None


def default_experiment(preset_name: str) -> str:
    return f"tune-{experiment_slug(preset_name)}"


def check_request(req: TuneRequest) -> None:
    """UsageError (one line) for values no tune can take."""
    if req.trials < 1:
        raise UsageError(f"--trials {req.trials}: must be at least 1")
    if req.batch < 1:
        raise UsageError(f"--batch {req.batch}: must be at least 1")
    if req.pruner not in ("median", "none"):
        raise UsageError(f"--pruner {req.pruner!r}: choose median or none")
    if req.prune_startup < 0 or req.prune_warmup < 0:
        raise UsageError("--prune-startup and --prune-warmup must be >= 0")
    if "," in req.dataset or any(c in req.dataset for c in "*?["):
        raise UsageError(f"--dataset {req.dataset!r}: a tune searches on one dataset")


def _plan(req: TuneRequest, experiment: str, select: str | None = None) -> Plan:
    sets = list(req.sets) + ([f"run.select={select}"] if select is not None else [])
    return plan_grid(req.methods, req.dataset, [req.seed], req.preset, sets, req.data_root, req.device,
                     req.precision, experiment)


def plan_methods(req: TuneRequest) -> tuple[Plan, dict[str, _Method]]:
    """Plan the grid (one spec per method) and each method's space and objective."""
    from ..presets import load_preset

    check_request(req)
    try:
        preset_name = load_preset(req.preset).name
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    experiment = req.experiment or default_experiment(preset_name)
    plan = _plan(req, experiment)
    preset = plan.preset
    select = plan.specs[0].run_cfg.select
    rules = select
    for spec in plan.specs:
        rules = select_rule(spec.method, spec.method_obj, objective_for(spec.method_obj), rules)
    if rules != select:  # a last stage that selects on another metric selects on the objective
        plan = _plan(req, experiment, rules)
    methods = {}
    for spec in plan.specs:
        try:
            space = effective_space(spec.method, METHODS.get(spec.method).config_cls, preset.tune.get(spec.method),
                                    preset.name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        methods[spec.method] = _Method(spec.method, spec, space, objective_for(spec.method_obj))
    return plan, methods


def trial_spec(m: _Method, params: dict[str, Any], trial: dict[str, Any], dataset_info=None) -> RunSpec:
    """``m``'s planned spec with ``params`` as method-config overrides and ``trial`` attached;
    its identity (config, hash, run folder) follows from the new config."""
    base = m.spec
    entry = METHODS.get(base.method)
    try:
        cfg = apply_overrides(entry.config_cls(), {**base.method_config, **params}, where=f"method {base.method!r}")
        entry(cfg).validate(dataset_info)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"tune {base.method!r}: values {params}: {str(exc).splitlines()[0]}") from None
    method_config = identity.jsonable(cfg)
    config = {**base.config, "method_config": method_config}
    changed = {k: v for k, v in method_config.items() if base.method_config.get(k) != v}
    spec = dataclasses.replace(base, method_config=method_config, config=config,
                               config_hash=identity.config_hash(config), reuse_hash=identity.reuse_hash(config),
                               overrides={**base.overrides, **changed}, trial=trial)
    return spec_from_json(spec_to_json(spec))  # the spec every worker will rebuild, checked now


def _budget(req: TuneRequest, preset_name: str, startup: int) -> dict[str, Any]:
    pruner = {"kind": req.pruner, "n_startup_trials": req.prune_startup, "n_warmup_steps": req.prune_warmup}
    return {"trials": req.trials, "preset": preset_name, "seed": req.seed, "startup_trials": startup,
            "pruner": pruner, "batch": req.batch}


def _state(t) -> str:
    return t.state.name.lower()


def _rows(methods: dict[str, _Method]) -> list[outputs.TrialRow]:
    rows = []
    for m in methods.values():
        for t in m.study.get_trials(deepcopy=False):
            value = t.value
            if _state(t) == "pruned" and value is None and t.intermediate_values:
                value = t.intermediate_values[max(t.intermediate_values)]
            elif _state(t) not in ("complete", "pruned"):
                value = None
            rows.append(outputs.TrialRow(m.name, t.number, _state(t), value, m.objective.metric,
                                         m.objective.direction, dict(t.params), t.user_attrs.get("run_dir", ""),
                                         t.user_attrs.get("error", ""), bool(t.user_attrs.get(studies.ORPHANED)),
                                         bool(t.user_attrs.get(studies.PRESET_VALUES))))
    return rows


def _summaries(methods: dict[str, _Method]) -> list[outputs.MethodSummary]:
    from optuna.trial import TrialState

    out = []
    for m in methods.values():
        trials = [t for t in m.study.get_trials(deepcopy=False) if not t.user_attrs.get(studies.ORPHANED)]
        counts = {s: sum(1 for t in trials if _state(t) == s) for s in ("complete", "pruned", "fail")}
        s = outputs.MethodSummary(m.name, m.objective.metric, m.objective.direction,
                                  {k: f"{r.describe()} ({r.source})" for k, r in m.space.items()},
                                  {st.name: st.epochs for st in m.spec.method_obj.stages()}, counts=counts)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        if done:
            best = (min if m.objective.direction == "minimize" else max)(done, key=lambda t: t.value)
            s.best_value, s.best_trial, s.best_params = best.value, best.number, dict(best.params)
        own = next((t for t in done if t.user_attrs.get(studies.PRESET_VALUES)), None)
        if own is not None:
            s.preset_trial, s.preset_value = own.number, own.value
        out.append(s)
    return out


def write_outputs(folder: Path, req: TuneRequest, plan: Plan, methods: dict[str, _Method],
                  budget: dict[str, Any]) -> tuple[list[outputs.TrialRow], list[outputs.MethodSummary], Path]:
    """trials.csv, objective.png, best.toml (checked by loading it) and summary.md."""
    from ..presets import load_preset

    rows, summaries = _rows(methods), _summaries(methods)
    outputs.write_csv(folder / "trials.csv", rows)
    outputs.write_figure(folder / "objective.png", rows)
    preset = plan.preset
    spec0 = next(iter(methods.values())).spec
    pairs = parse_sets(req.sets)
    run_o = [k.split(".", 1)[1] for k, _ in pairs if k.startswith("run.")]
    ds_o = [k.split(".", 1)[1] for k, _ in pairs if k.startswith("dataset.")]
    run = {**preset.run, **{k: spec0.run_config[k] for k in run_o}}
    for key, value in (("device", req.device), ("precision", req.precision)):
        if value is not None:
            run[key] = value
    datasets = {k: dict(v) for k, v in preset.dataset.items()}
    datasets[spec0.dataset] = {**datasets.get(spec0.dataset, {}), **{k: spec0.config["dataset_options"][k] for k in ds_o}}
    sections = {k: dict(v) for k, v in preset.method.items()}
    for s in summaries:
        m = methods[s.method]
        default = identity.jsonable(METHODS.get(s.method).config_cls())
        tuned = {**m.spec.method_config, **s.best_params}
        sections.pop(s.method, None)
        sections[s.method] = {k: v for k, v in tuned.items() if default.get(k) != v or k in s.best_params}
    header = [f"written by mrseg-bench tune (experiment {plan.experiment}, dataset {spec0.dataset}):",
              "budget: " + outputs.budget_line(budget),
              *(f"{s.method}: best validation {s.metric} {s.best_value!r} (trial {s.best_trial})" for s in summaries)]
    text = outputs.preset_text(f"tuned from preset {preset.name} by mrseg-bench tune ({plan.experiment})",
                               run, datasets, sections, preset.tune, header)
    path = folder / "best.toml"
    tmp = folder / "best.tmp.toml"
    tmp.write_text(text, encoding="utf-8")
    try:
        load_preset(str(tmp))
    except (ValueError, OSError) as exc:
        raise ValueError(f"the tuned preset {tmp} does not load: {exc}") from None
    tmp.replace(path)
    (folder / "summary.md").write_text(outputs.summary_text(budget, summaries), encoding="utf-8")
    return rows, summaries, path


def _tell(m: _Method, t, o: Outcome, log: Callable[[str], None]) -> str:
    """Tell the study what became of trial ``t`` (run outcome ``o``); returns its state."""
    from optuna.trial import TrialState

    study = m.study
    if o.run_dir is not None:
        t.set_user_attr("run_dir", str(o.run_dir))
    if o.status is Status.DONE or (o.status is Status.SKIPPED and o.note == "done"):
        try:
            value = trial_value(o.run_dir, m.objective)
        except ValueError as exc:
            t.set_user_attr("error", str(exc))
            study.tell(t, state=TrialState.FAIL)
            return "fail"
        study.tell(t, value)
        return "complete"
    if o.status is Status.SKIPPED and o.note == "pruned":
        study.tell(t, state=TrialState.PRUNED)
        return "pruned"
    if o.status is Status.CANCELLED:  # never ran: re-asked with the same values
        t.set_user_attr(studies.ORPHANED, True)
        study.tell(t, state=TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs=studies.resume_attrs(t))
        return "cancelled"
    t.set_user_attr("error", o.error or f"run {o.status.value}: {o.note or ''}".strip())
    study.tell(t, state=TrialState.FAIL)
    return "fail"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _run_batch(req: TuneRequest, plan: Plan, asked: list[tuple[_Method, Any, RunSpec]], store: Path,
               log: Callable[[str], None]) -> None:
    """Run the asked trials as one grid and tell each study as each run ends."""
    from ..executors.grid import run_grid

    batch = Plan([s for _, _, s in asked], plan.experiment, plan.datasets, plan.splits, plan.preset)
    by_spec = {id(s): (m, t) for m, t, s in asked}

    def ended(o: Outcome) -> None:
        m, t = by_spec[id(o.spec)]
        state = _tell(m, t, o, log)
        value = next((f.value for f in m.study.get_trials(deepcopy=False) if f.number == t.number), None)
        shown = f", validation {m.objective.metric} {value:.4f}" if value is not None and math.isfinite(value) else ""
        log(f"{m.name} trial {t.number} ({studies.used(m.study)}/{req.trials}): {state}{shown} | "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()))

    outcomes = run_grid(batch, req.out, store, executor=req.executor, options=req.options, log=log, progress=ended)
    if len(outcomes) != len(asked):  # every spec ends with an outcome; guard the accounting
        raise RuntimeError(f"the executor returned {len(outcomes)} outcomes for {len(asked)} trials")


def run_tune(req: TuneRequest, log: Callable[[str], None] = lambda s: None) -> TuneResult:
    """Run the tune (module docstring). UsageError for bad input, before anything is written;
    ``interrupts.RunInterrupted`` / ``KeyboardInterrupt`` propagate (the study keeps what was
    told; a rerun resumes)."""
    import optuna

    from ..claims import try_claim

    if req.options is None:
        from ..executors import ExecutorOptions

        req.options = ExecutorOptions()
    plan, methods = plan_methods(req)
    folder = studies.tune_dir(req.out, plan.experiment)
    folder.mkdir(parents=True, exist_ok=True)
    claim, holder = try_claim(folder / studies.CLAIM, heartbeat_s=30.0, stale_s=300.0)
    if claim is None:
        raise UsageError(f"{folder}: another tune drives this experiment ({holder.describe() if holder else '?'})")
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = studies.open_storage((folder / studies.JOURNAL).resolve())
        startup = max(2, req.trials // 3)
        budget = _budget(req, plan.preset.name, startup)
        orphans: dict[str, list[int]] = {}
        for m in methods.values():
            # the trials' common identity (preset, --set, data, seed; not the code) and the space
            settings = {"base_config": m.spec.reuse_hash, "metric": m.objective.metric,
                        "space": {k: dataclasses.asdict(r) for k, r in m.space.items()}}
            settings = identity.jsonable(settings)
            try:
                m.study = studies.open_study(storage, m.name, m.objective.direction,
                                             studies.make_sampler(req.seed, startup),
                                             studies.make_pruner(budget["pruner"]), settings)
            except ValueError as exc:
                raise UsageError(f"{folder}: {exc}") from None
            orphans[m.name] = studies.recover_orphans(m.study)
            if orphans[m.name]:
                log(f"{m.name}: trial(s) {', '.join(map(str, orphans[m.name]))} were left running by a stopped "
                    "tune; asking them again")
            if studies.used(m.study) < req.trials:
                _enqueue_preset(m, log)
        info = next(iter(plan.datasets.values())).info if plan.datasets else None
        store = req.store or Path(req.out) / "results.sqlite"
        with _session(req):
            _loop(req, plan, methods, folder, budget, info, store, log)
        rows, summaries, preset_path = write_outputs(folder, req, plan, methods, budget)
        return TuneResult(folder, plan.experiment, rows, summaries, budget, preset_path, orphans)
    finally:
        claim.release()


def _enqueue_preset(m: _Method, log: Callable[[str], None]) -> None:
    """Enqueue ``m``'s preset trial (``study.enqueue_preset_trial``), or say why there is none."""
    values, outside = preset_point(m.space, m.spec.method_config)
    if outside:
        log(f"{m.name}: no preset trial: the preset's {', '.join(outside)} lies outside the search space")
    elif studies.enqueue_preset_trial(m.study, values):
        log(f"{m.name}: its next trial is the preset's own values: " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))


def _session(req: TuneRequest):
    """One Ray connection for every batch (a local cluster starts once); nothing otherwise."""
    import contextlib

    if req.executor == "ray":
        from ..executors.ray_executor import session

        return session(req.options)
    return contextlib.nullcontext()


def _loop(req: TuneRequest, plan: Plan, methods: dict[str, _Method], folder: Path, budget: dict[str, Any], info,
          store: Path, log: Callable[[str], None]) -> None:
    """Ask, run, tell until every method has used its budget (module docstring, step 3)."""
    import optuna

    while True:
        asked: list[tuple[_Method, Any, RunSpec]] = []
        for m in methods.values():
            for _ in range(min(req.batch, req.trials - studies.used(m.study))):
                t = m.study.ask()
                params = suggest(t, m.space)
                preset_trial = bool(t.user_attrs.get(studies.PRESET_VALUES))
                trial = {"storage": str((folder / studies.JOURNAL).resolve()), "study": m.name,
                         "number": t.number, "metric": m.objective.metric, "stage": m.objective.stage,
                         "pruner": {"kind": "none"} if preset_trial else budget["pruner"]}
                try:
                    spec = trial_spec(m, params, trial, info)
                except UsageError as exc:
                    t.set_user_attr("error", str(exc))
                    m.study.tell(t, state=optuna.trial.TrialState.FAIL)
                    log(f"{m.name} trial {t.number}: {exc}")
                    continue
                t.set_user_attr("run_dir", str(spec.run_dir(req.out)))
                asked.append((m, t, spec))
        if not asked:
            if all(studies.used(m.study) >= req.trials for m in methods.values()):
                break
            continue
        log(f"running {len(asked)} trial(s) on {req.executor}: "
            + ", ".join(f"{m.name} #{t.number}" for m, t, _ in asked))
        _run_batch(req, plan, asked, store, log)
        write_outputs(folder, req, plan, methods, budget)
