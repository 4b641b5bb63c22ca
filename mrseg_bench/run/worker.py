"""One run as a unit of work: claim its folder, train, evaluate, profile, write ``result.json``.

``execute(spec, out)`` is what every executor runs for one spec (``run_spec(spec_json, out)``
is its JSON entry point, for ``executors``, Ray tasks, Slurm jobs and ``mrseg-bench run-one``):

1. a folder holding a done ``result.json`` of the spec's config hash is skipped (unless ``force``);
2. the run is claimed (``claims``); a run another worker holds is skipped; a stale claim is taken
   over and the run resumes from its ``last`` checkpoint;
3. the dataset is loaded (``load_dataset``: kept per process, checked against the planned data
   fingerprint); it trains in its folder, or with ``force`` in a staging folder swapped in only
   on success, so an interrupted ``--force`` leaves the finished run intact;
4. at the end, done or failed, ``result.json`` is written atomically with the environment
   (``environment``); a failure (any exception, a full disk included) is recorded and never
   escapes; the error handler itself survives ``OSError``; ``last`` checkpoints are deleted
   after success unless ``run.keep_last``, ``best`` ones (the trained weights)
   when ``run.keep_best=false``;
5. a signal writes ``last`` and raises ``RunInterrupted``; the claim is released;
6. a tune trial (``spec.trial``) reports each epoch to its study (``tune.hook``); when the
   pruner stops it, the run ends ``skipped`` with note "pruned" and no ``result.json``.

The worker never writes the results store: the submitting process indexes the result.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import subprocess
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..claims import Claim, try_claim
from ..datasets.splits import split_to_json
from ..engine.data import limit, make_batches, prepare
from ..engine.device import reset_peak_memory, seed_everything, to_channels_last
from ..engine.evaluate import evaluate, metric_suite
from ..engine.hardware import hardware_info
from ..engine.profile import profile_method
from ..engine.run_env import run_facts
from ..engine.threads import set_run_threads
from ..engine.train import TrainingStopped, checkpoint_path, train
from ..identity import canonical_json, data_fingerprint
from ..interrupts import RunInterrupted, StopFlag, catch_signals
from ..method import Method
from ..qualitative import save_qualitative
from ..references import reference_rows
from ..registry import DATASETS, RegistryError
from ..run_folder import (
    atomic_write_text,
    claim_path,
    done_result,
    restore_replaced,
    staging_dir,
    swap_in,
    write_result,
)
from .overrides import UsageError
from .plan import make_run_split
from .spec import Outcome, RunSpec, Status, spec_from_json


# -- environment ---------------------------------------------------------------------------------
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Where the run ran: versions, platform, host, CPU count and ``engine.hardware`` details."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device), "platform": platform.platform(), "hostname": socket.gethostname(),
           "cpu_count": os.cpu_count()}
    env.update(hardware_info(device))  # threads, CPU model, GPU name, torch/CUDA versions, device_name
    return env


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- data -----------------------------------------------------------------------------------------
_DATASETS: dict[str, Any] = {}  # dataset key -> dataset, per process (the last few)
_KEEP = 4


def _dataset_key(spec: RunSpec) -> str:
    return canonical_json([spec.dataset, spec.data_root, spec.dataset_options, spec.data_fingerprint])


def remember_dataset(spec: RunSpec, dataset: Any) -> None:
    """Let this process's runs of ``spec``'s data use ``dataset`` (the planner's, already
    fingerprinted) instead of loading it again."""
    _DATASETS.pop(_dataset_key(spec), None)
    _DATASETS[_dataset_key(spec)] = dataset
    while len(_DATASETS) > _KEEP:
        _DATASETS.pop(next(iter(_DATASETS)))


def load_dataset(spec: RunSpec) -> Any:
    """The spec's dataset (its factory with ``root`` and options), loaded once per process;
    UsageError when it cannot be loaded or its fingerprint is not the planned one."""
    key = _dataset_key(spec)
    if key in _DATASETS:
        return _DATASETS[key]
    try:
        root = None if spec.data_root is None else Path(spec.data_root)
        ds = DATASETS.get(spec.dataset)(root=root, **spec.dataset_options)
    except (RegistryError, ValueError, TypeError, OSError, KeyError) as exc:
        msg = str(exc) or type(exc).__name__
        raise UsageError(f"spec: dataset {spec.dataset!r}: {msg}") from None
    if spec.data_fingerprint and data_fingerprint(ds) != spec.data_fingerprint:
        raise UsageError(f"spec: the data at {spec.data_root or spec.dataset!r} differs from the data the run "
                         "was planned on (data fingerprint mismatch); plan again on this data")
    remember_dataset(spec, ds)
    return ds


def save_qualitative_cases(method: Method, model, dataset, split, cfg, device: torch.device, run_dir: Path) -> None:
    """Predict the first ``cfg.qualitative_cases`` test cases and save ``qualitative.pt`` (the
    report's qualitative grid; the same cases for every method of a dataset)."""
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


# -- one run ---------------------------------------------------------------------------------------
def run_row(spec: RunSpec, run_id: str, run_dir: Path, started: str) -> dict[str, Any]:
    """The run row (the store's ``runs`` columns) known before the run starts."""
    cfg = spec.run_cfg
    return {
        "run_id": run_id, "method": spec.method, "dataset": spec.dataset, "seed": spec.seed,
        "preset": spec.preset, "protocol": cfg.protocol, "config_json": spec.config,
        "config_hash": spec.config_hash,
        "capabilities": ",".join(sorted(c.value for c in spec.method_obj.info.capabilities)),
        "convention": cfg.convention, "n_samples": cfg.n_samples,
        "git_commit": spec.code.get("git_commit") if spec.code else git_commit(),
        "package_version": __version__, "env_json": environment(spec.torch_device), "run_dir": str(run_dir.resolve()),
        "started_at": started, "experiment": spec.experiment or spec.preset, "overrides_json": spec.overrides,
        "data_fingerprint": spec.data_fingerprint, "code_json": spec.code,
    }


def _metrics_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["case_id", "metric", "rater", "value"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in ("case_id", "metric", "rater", "value")})
    return buf.getvalue()


def _last_checkpoint(spec: RunSpec, run_dir: Path) -> Path | None:
    """The newest ``last`` checkpoint of the run (the stage it reached)."""
    found = [checkpoint_path(run_dir, s.name, "last") for s in spec.method_obj.stages()]
    found = [p for p in found if p.exists()]
    return found[-1] if found else None


def _train_evaluate_profile(spec: RunSpec, dataset, work_dir: Path, quiet: bool,
                            stop: Callable[[], str | None]) -> tuple[list[dict], list[dict], dict]:
    """The run's work proper; returns (metric rows, profile rows, selection per stage).
    Checkpoints and files go to ``work_dir``."""
    cfg, dev = spec.run_cfg, spec.torch_device
    split = make_run_split(dataset, cfg)
    atomic_write_text(work_dir / "split.json", json.dumps(json.loads(split_to_json(split, dataset)), indent=1))
    set_run_threads(cfg.num_threads)  # 0: the cores split between the runs executing at once
    seed_everything(spec.seed)
    model = spec.method_obj.build(dataset.info).to(dev)
    if cfg.channels_last:
        model = to_channels_last(model)
    reset_peak_memory(dev)
    names = [n for n in cfg.metrics.split(",") if n.strip()] or None

    def suite_factory(ns=None):
        return metric_suite(ns or names, cfg.convention, cfg.threshold, cfg.ged_estimator, cfg.ncc_maps)

    on_epoch = None
    if spec.trial:  # a tune trial reports each epoch's validation value to its study
        from ..tune.hook import epoch_hook

        on_epoch = epoch_hook(spec.trial)
    result = train(spec.method_obj, model, dataset, split, cfg, work_dir, spec.seed, dev, spec.precision,
                   method_name=spec.method, quiet=quiet, suite_factory=suite_factory, stop=stop,
                   on_epoch=on_epoch)
    _poll(stop)
    t_eval = time.perf_counter()
    # the compiled model is the one evaluated and profiled (profile_method compiles its own copy)
    eval_model = torch.compile(model) if cfg.compile else model
    rows = evaluate(spec.method_obj, eval_model, dataset, split.test, cfg.n_samples, dev, cfg.eval_bs,
                    suite=suite_factory(), precision=spec.precision, image_size=cfg.image_size,
                    channels_last=cfg.channels_last, max_cases=cfg.max_eval_cases)
    eval_wall = time.perf_counter() - t_eval
    if cfg.aggregate == "volume":  # one row per volume: the mean of its slices (datasets/volumes.py)
        from ..datasets.volumes import per_volume_rows, volume_lookup

        rows = per_volume_rows(rows, volume_lookup(dataset))
    rows += reference_rows(dataset, limit(list(split.test), cfg.max_eval_cases))  # e.g. the synthetic oracle
    atomic_write_text(work_dir / "metrics.csv", _metrics_csv(rows))
    if cfg.qualitative_cases:
        save_qualitative_cases(spec.method_obj, eval_model, dataset, split, cfg, dev, work_dir)
    _poll(stop)
    prof: list[dict[str, Any]] = []
    if cfg.profile:
        idx = limit(list(split.test) or list(split.train), cfg.eval_bs)
        batch = prepare(next(iter(make_batches(dataset, idx, cfg.eval_bs, False, 0))), dev, cfg.image_size,
                        cfg.channels_last)
        prof = profile_method(spec.method_obj, model, batch, dev, cfg.n_samples, spec.precision,
                              cfg.profile_warmup, cfg.profile_steps, cfg.latency_repeats, compile=cfg.compile)
    prof += [{"name": f"wall_s_{s}", "value": w, "unit": "s"} for s, w in result.stage_wall_s.items()]
    if result.train_seconds > 0:  # the run's own training rate, from its log (all stages, all epochs)
        prof.append({"name": "train_images_per_s_run", "value": result.train_images / result.train_seconds,
                     "unit": "img/s"})
    prof.append({"name": "eval_wall_s", "value": eval_wall, "unit": "s"})
    selection = {stage: {"metric": b["metric"], "mode": b["mode"], "value": b["score"], "epoch": b["epoch"]}
                 for stage, b in result.best.items()}
    return rows, prof, selection


def _poll(stop: Callable[[], str | None]) -> None:
    reason = stop()
    if reason:
        raise TrainingStopped(reason, None)


def _delete_checkpoints(spec: RunSpec, run_dir: Path, kind: str) -> None:
    """Delete each stage's ``kind`` ("last" or "best") checkpoint of a finished run."""
    for s in spec.method_obj.stages():
        checkpoint_path(run_dir, s.name, kind).unlink(missing_ok=True)


def _record_failure(spec: RunSpec, row: dict[str, Any], work_dir: Path, exc: BaseException, t_start: float,
                    log: Callable[[str], None]) -> Outcome:
    """Write error.txt and a failed result.json if the disk lets us; never raises."""
    err = f"{type(exc).__name__}: {exc}"
    row.update(status=Status.FAILED.value, error=err, finished_at=_now(), wall_s=time.perf_counter() - t_start,
               run_dir=str(work_dir.resolve()))
    result: dict[str, Any] = {"schema": 1, "run": row, "metrics": [], "profile": []}
    notes = []
    try:
        atomic_write_text(work_dir / "error.txt", "".join(traceback.format_exception(exc)))
    except OSError as wexc:
        notes.append(f"error.txt not written ({type(wexc).__name__}: {wexc})")
    try:
        result = write_result(work_dir, row, [], [])
    except (OSError, TypeError, ValueError) as wexc:
        notes.append(f"result.json not written ({type(wexc).__name__}: {wexc})")
    if spec.torch_device.type == "cuda":
        torch.cuda.empty_cache()
    log(f"FAILED {spec.label}: {err}" + (f" [{'; '.join(notes)}]" if notes else ""))
    return Outcome(spec, Status.FAILED, row["run_id"], err, work_dir, result=result)


def _attempt(spec: RunSpec, dataset, work_dir: Path, run_dir: Path, quiet: bool,
             stop: Callable[[], str | None], log: Callable[[str], None]) -> Outcome:
    """Train, evaluate and profile in ``work_dir`` (the run folder, or its staging folder) and
    write its result (with ``run_dir``, the final place, as the run's folder)."""
    run_id = f"{spec.config_hash[:8]}-{uuid.uuid4().hex[:8]}"
    started, t_start = _now(), time.perf_counter()
    row = run_row(spec, run_id, run_dir, started)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "error.txt").unlink(missing_ok=True)
        atomic_write_text(work_dir / "config.json", json.dumps(
            {**spec.config, "config_hash": spec.config_hash}, indent=2, sort_keys=True))
        rows, prof, selection = _train_evaluate_profile(spec, dataset, work_dir, quiet, stop)
        row.update(status=Status.DONE.value, finished_at=_now(), wall_s=time.perf_counter() - t_start,
                   env_json={**row["env_json"], **run_facts(dataset)})
        result = write_result(work_dir, row, rows, prof, selection)
    except TrainingStopped:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing run must not stop the grid
        return _record_failure(spec, row, work_dir, exc, t_start, log)
    if not spec.run_cfg.keep_last:
        _delete_checkpoints(spec, work_dir, "last")
    if not spec.run_cfg.keep_best:
        _delete_checkpoints(spec, work_dir, "best")
    return Outcome(spec, Status.DONE, run_id, run_dir=run_dir, result=result)


def execute(spec: RunSpec, out: str | Path, *, force: bool = False, quiet: bool = True,
            log: Callable[[str], None] = lambda s: None, stop: StopFlag | None = None) -> Outcome:
    """Run ``spec`` once (see the module docstring). Raises ``RunInterrupted`` on a signal and
    UsageError when its data cannot be loaded or differs from the planned data."""
    run_dir = spec.run_dir(Path(out))
    if not force and (done := done_result(run_dir, spec.config_hash)) is not None:
        log(f"skip {spec.label}: done as {done['run']['run_id']}")
        return Outcome(spec, Status.SKIPPED, done["run"]["run_id"], run_dir=run_dir, note="done", result=done)
    dataset = load_dataset(spec)
    cfg = spec.run_cfg
    try:
        claim, holder = try_claim(claim_path(run_dir), cfg.claim_heartbeat_s, cfg.claim_stale_s)
    except OSError as exc:  # a full or read-only disk: this run fails, the grid goes on
        row = run_row(spec, f"{spec.config_hash[:8]}-{uuid.uuid4().hex[:8]}", run_dir, _now())
        return _record_failure(spec, row, run_dir, exc, time.perf_counter(), log)
    if claim is None:
        note = holder.describe() if holder else "claimed by another worker"
        log(f"skip {spec.label}: {note}")
        return Outcome(spec, Status.SKIPPED, None, run_dir=run_dir, note=note)
    try:
        return _run_claimed(spec, dataset, run_dir, claim, holder, force, quiet, log, stop or StopFlag())
    finally:
        claim.release()


def _run_claimed(spec: RunSpec, dataset, run_dir: Path, claim: Claim, holder, force: bool, quiet: bool,
                 log: Callable[[str], None], flag: StopFlag) -> Outcome:
    restore_replaced(run_dir)  # a swap cut short between its two renames (only a claim holder swaps)
    if not force and (done := done_result(run_dir, spec.config_hash)) is not None:  # finished meanwhile
        log(f"skip {spec.label}: done as {done['run']['run_id']}")
        return Outcome(spec, Status.SKIPPED, done["run"]["run_id"], run_dir=run_dir, note="done", result=done)
    work_dir = staging_dir(run_dir) if force else run_dir
    if holder is not None:
        log(f"took over {spec.label} from a stale claim ({holder.describe()}); resuming from its last checkpoint")

    def stop() -> str | None:
        return flag() or ("claim lost" if claim.lost else None)

    try:
        outcome = _attempt(spec, dataset, work_dir, run_dir, quiet, stop, log)
    except TrainingStopped as exc:
        if exc.reason == "pruned":
            log(f"pruned {spec.label}: its tune trial was stopped by the pruner")
            return Outcome(spec, Status.SKIPPED, None, run_dir=run_dir, note="pruned")
        if exc.reason == "claim lost":
            log(f"stopped {spec.label}: its claim was taken over by another worker")
            return Outcome(spec, Status.SKIPPED, None, run_dir=run_dir, note="claim lost")
        raise RunInterrupted(spec.label, work_dir, exc.checkpoint or _last_checkpoint(spec, work_dir),
                             flag.exit_code) from None
    if force and outcome.status == Status.DONE:
        try:
            swap_in(work_dir, run_dir)
        except OSError as exc:
            err = f"the finished rerun could not replace {run_dir} ({type(exc).__name__}: {exc}); it is in " \
                  f"{work_dir}: rerun with --force to try again"
            log(f"FAILED {spec.label}: {err}")
            return Outcome(spec, Status.FAILED, outcome.run_id, err, work_dir)
    if outcome.status == Status.DONE:
        log(f"done {spec.label} -> {run_dir}")
    return outcome


def execute_spec(spec_json: dict[str, Any], out: str | Path, *, force: bool = False, quiet: bool = True,
                 log: Callable[[str], None] = lambda s: None, stop: StopFlag | None = None) -> Outcome:
    """Rebuild the spec from JSON and ``execute`` it; installs signal handlers unless ``stop``
    is given. UsageError for a bad spec."""
    spec = spec_from_json(spec_json)
    if stop is not None:
        return execute(spec, out, force=force, quiet=quiet, log=log, stop=stop)
    with catch_signals() as flag:
        return execute(spec, out, force=force, quiet=quiet, log=log, stop=flag)


def run_spec(spec_json: dict[str, Any], out: str, *, force: bool = False, quiet: bool = True,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run one spec into ``out`` (no store is written) and return its outcome summary:
    ``{"status": "done"|"failed"|"skipped", "run_id", "error", "note", "run_dir", "method",
    "dataset", "seed", "config_hash"}``. Raises UsageError for a bad spec and
    ``interrupts.RunInterrupted`` on SIGINT/SIGTERM (after writing the ``last`` checkpoint)."""
    return execute_spec(spec_json, out, force=force, quiet=quiet, log=log).summary()
