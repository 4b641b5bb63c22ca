"""The training loop for the method contract (``mrseg_bench.method``).

For each stage of ``method.stages()``: ``begin_stage``; Adam over ``param_groups`` (lr per
group, weight_decay) and the stage's lr schedule (``engine.optim``: cosine by default, stepped
per epoch; plateau stepped on the validation score); per epoch ``train_mode``, batches in an order
that is a pure function of (seed, stage, epoch), optional augmentation, ``training_step(...)
["loss"]``, backward, optional gradient clipping (``cfg.grad_clip``), step (its lr scaled by the
linear warm-up ``cfg.warmup_steps``, ``engine.optim.warmup_factor``); then validation on the
VALIDATION split: the mean validation loss and the stage's selection metric (``cfg.select``,
``engine.select``), both logged as ``val_<name>`` with ``select``/``select_mode``; the best epoch
of the stage is the one with the best selection value. The test split is never read here.
``cfg.tensorboard`` also writes TensorBoard event files (``engine.tensorboard``).

Checkpoints (``<run_dir>/checkpoints/``), all loadable with ``torch.load(weights_only=True)``:

- ``<stage>_last.pt`` (model, optimiser, scheduler, RNG states as tensors, epoch, best so far):
  written when ``cfg.checkpoint_interval_s`` seconds have passed since the last one (0: every
  epoch), every ``cfg.checkpoint_every`` epochs if set, at the stage's end (without the optimiser)
  and when ``stop()`` asks (a signal): then mid-epoch, with the step reached, so nothing is lost.
- ``<stage>_best.pt``: weights only (plus stage, epoch, score), chosen on the validation split.
  The best weights are kept in memory and written together with ``last``, so the two always agree.

Temp files are per process (``.<name>.<pid>-<random>.tmp``), never shared by two writers. Stage
k+1 starts from stage k's best. An interrupted run resumes from ``last`` and, on CPU with the same
seed, ends with the same weights as a straight run; ``train_log.jsonl`` is cut back to the
checkpoint first, so no epoch is logged twice (a run with no checkpoint restarts from the seed:
build the model after seeding with it).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..method import Method, Stage
from .data import augment, limit, make_batches, prepare
from .device import autocast, epoch_seed, get_rng_state, seed_everything, set_rng_state, synchronize
from .evaluate import evaluate, mean_metric, metric_suite
from .optim import (
    build_optimizer,
    build_scheduler,
    step_on_validation,
    step_per_epoch,
    warmed_up,
    warmup_factor,
)
from .run_config import RunConfig
from .select import resolve_selection
from .tensorboard import open_board


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf training loss; the message names method, stage, epoch and step."""


class TrainingStopped(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error of the run
    """Training stopped on request. ``reason``: "interrupt" (a signal: ``checkpoint`` is the
    ``last`` file just written, to resume from) or "claim lost" (another worker owns the run now:
    nothing was written)."""

    def __init__(self, reason: str, checkpoint: Path | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    stage_wall_s: dict[str, float] = field(default_factory=dict)
    best: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> {metric, mode, score, epoch}
    train_images: int = 0
    train_seconds: float = 0.0


def checkpoint_path(run_dir: Path, stage: str, kind: str) -> Path:
    return Path(run_dir) / "checkpoints" / f"{stage}_{kind}.pt"


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file of this process, then rename; the temp file never outlives an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load(path: Path) -> dict[str, Any]:
    """A checkpoint of ours, loaded with ``weights_only=True``: tensors and plain containers only,
    so a planted pickle cannot run code. ValueError names the file when it is refused or unreadable
    (every rerun would fail the same way: the message names --force)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: nothing was run
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]
        raise ValueError(f"checkpoint {path}: refused, it holds objects other than tensors and plain "
                         f"data (not loaded, nothing run; {first}); every rerun will fail the same way: "
                         "delete it or rerun with --force") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        msg = " ".join(str(exc).split())[:200]
        raise ValueError(f"checkpoint {path}: cannot be read ({type(exc).__name__}: {msg}); every rerun will "
                         "fail the same way: delete the file or rerun with --force to train the run again") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path}: expected a dict, got {type(state).__name__}; delete it or rerun "
                         "with --force")
    return state


def _cut_log(run_dir: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite ``train_log.jsonl`` (atomically) without the records ``keep`` rejects and any
    unreadable (torn) line: a resumed run logs each epoch once."""
    path = Path(run_dir) / "train_log.jsonl"
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and keep(rec):
            kept.append(line)
    if len(kept) == len(lines):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / "train_log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _validate(method: Method, model: nn.Module, stage: Stage, dataset, val_idx, cfg: RunConfig,
              device: torch.device, precision: str, suite_factory: Callable | None,
              metrics: list[str]) -> dict[str, float]:
    """Validation values on the VALIDATION split: ``loss`` (the mean training loss, no_grad)
    and the mean of each metric in ``metrics`` (one prediction pass for all of them)."""
    idx = limit(val_idx, cfg.max_eval_cases)
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in make_batches(dataset, idx, cfg.eval_bs, shuffle=False, seed=0):
            batch = prepare(batch, device, cfg.image_size, cfg.channels_last)
            with autocast(device, precision):
                loss = method.training_step(model, batch, stage)["loss"]
            total += float(loss) * len(batch)
            n += len(batch)
    values = {"loss": total / max(n, 1)}
    if metrics:
        suite = suite_factory(metrics) if suite_factory else metric_suite(metrics)
        rows = evaluate(method, model, dataset, idx, cfg.val_n_samples, device, cfg.eval_bs, suite=suite,
                        precision=precision, image_size=cfg.image_size, channels_last=cfg.channels_last)
        values.update({m: mean_metric(rows, m) for m in metrics})
    return values


def _last_state(stage: Stage, epoch: int, model: nn.Module, opt, sched, best, best_epoch: int, wall: float,
                partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """A resumable ``last`` checkpoint; ``opt`` None (a finished stage) leaves out the optimiser."""
    st = {"stage": stage.name, "epoch": epoch, "model": model.state_dict(), "rng": get_rng_state(),
          "best_score": best, "best_epoch": best_epoch, "wall_s": wall, "partial": partial}
    if opt is not None:  # only needed to resume inside the stage
        st.update(optimizer=opt.state_dict(), scheduler=sched.state_dict())
    return st


class _StageCheckpoints:
    """``last``/``best`` of one stage: best weights wait in memory until ``last`` is written."""

    def __init__(self, run_dir: Path, stage: Stage, interval_s: float, every: int) -> None:
        self.stage = stage
        self.last = checkpoint_path(run_dir, stage.name, "last")
        self.best = checkpoint_path(run_dir, stage.name, "best")
        self.interval_s, self.every = interval_s, every
        self.pending_best: dict[str, Any] | None = None
        self.saved_at = time.monotonic()

    def improve(self, model: nn.Module, epoch: int, score: float | None) -> None:
        self.pending_best = {"stage": self.stage.name, "epoch": epoch + 1, "model": _cpu_copy(model), "score": score}

    def due(self, epoch: int) -> bool:
        """After ``epoch``: the stage ends, or N epochs / the interval have passed."""
        return (epoch + 1 == self.stage.epochs or bool(self.every and (epoch + 1) % self.every == 0)
                or time.monotonic() - self.saved_at >= self.interval_s)

    def save(self, state: dict[str, Any]) -> Path:
        if self.pending_best is not None:  # best first: a crash between the two replays to the same best
            _atomic_save(self.pending_best, self.best)
            self.pending_best = None
        _atomic_save(state, self.last)
        self.saved_at = time.monotonic()
        return self.last


def train(method: Method, model: nn.Module, dataset, split, cfg: RunConfig, run_dir: str | Path,
          seed: int, device: torch.device, precision: str = "fp32", method_name: str | None = None,
          quiet: bool = True, suite_factory: Callable | None = None,
          on_step: Callable[[str, int, int], None] | None = None,
          stop: Callable[[], str | None] | None = None,
          step_stats: Callable[[str, int, dict[str, float]], None] | None = None,
          on_epoch: Callable[[str, int, dict[str, Any]], bool] | None = None) -> TrainResult:
    """Train ``model`` (already on ``device``) through every stage, resuming where checkpoints
    say; leave it holding the last stage's best weights. ``on_step(stage, epoch, step)`` is a
    test hook called after each optimiser step; ``step_stats(stage, step, {"loss", "grad_norm",
    "lr"})`` too, with the step's global gradient norm before clipping and the lr it used.
    ``stop()`` is polled after each step and epoch;
    a reason ("interrupt" writes ``last`` first, "claim lost" writes nothing) raises
    ``TrainingStopped``. ``on_epoch(stage, epoch, record)`` sees each epoch's log record; True
    stops the run with reason "pruned"."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = method_name or method.info.name
    stages = method.stages()
    if not stages:
        raise ValueError(f"method {name!r}: stages() returned no stage")
    order = {s.name: i for i, s in enumerate(stages)}
    runnable = torch.compile(model) if cfg.compile else model
    result = TrainResult()
    train_idx = list(split.train)
    val_idx = list(split.val)
    if not train_idx:
        raise ValueError(f"method {name!r}: the training split is empty")
    board = open_board(run_dir) if cfg.tensorboard else None
    watchers = [w for w in (step_stats, board.step if board is not None else None) if w is not None]
    progress = None
    if not quiet:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        # "<method> <stage> ━━━ epoch 3/10 loss .. img/s  elapsed  ETA"; kept on screen when done
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("epoch"), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn())
        progress.start()
    try:
        for k, stage in enumerate(stages):
            ck = _StageCheckpoints(run_dir, stage, cfg.checkpoint_interval_s, cfg.checkpoint_every)
            state = _load(ck.last) if ck.last.exists() else None
            resume_epoch = state["epoch"] if state is not None else 0
            _cut_log(run_dir, lambda r, k=k, e=resume_epoch, done=resume_epoch >= stage.epochs: (
                order.get(r.get("stage"), len(stages)) < k
                or (order.get(r.get("stage")) == k and isinstance(r.get("epoch"), int) and r["epoch"] < e)
                or (done and order.get(r.get("stage"), -1) > k)))  # later stages cut in their turn
            if state is None and k == 0:  # a fresh run: the RNG stream starts from the seed
                seed_everything(seed)
            if state is None and k > 0:  # start from the previous stage's best
                model.load_state_dict(_load(checkpoint_path(run_dir, stages[k - 1].name, "best"))["model"])
            sel = resolve_selection(cfg.select, name, method, stage)
            val_metrics = sorted({m for m in (sel.metric, stage.monitor) if m != "loss"})
            method.begin_stage(model, stage)
            opt = build_optimizer(method, model, stage, where=f"method {name!r} stage {stage.name!r}")
            params = [p for group in opt.param_groups for p in group["params"]]
            sched = build_scheduler(opt, stage)
            best, best_epoch, wall = None, -1, 0.0
            partial: dict[str, Any] = {}  # progress inside the epoch a signal interrupted
            if state is not None:
                if state.get("stage") != stage.name:
                    raise ValueError(f"checkpoint {ck.last}: belongs to stage {state.get('stage')!r}")
                model.load_state_dict(state["model"])
                if "optimizer" in state:  # a finished stage keeps no optimiser state
                    opt.load_state_dict(state["optimizer"])
                    sched.load_state_dict(state["scheduler"])
                set_rng_state(state["rng"])
                best, best_epoch = state["best_score"], state["best_epoch"]
                wall = state.get("wall_s", 0.0)
                partial = state.get("partial") or {}

            task = None
            if progress is not None:
                task = progress.add_task(f"{name} {stage.name}", total=stage.epochs, completed=resume_epoch, info="")
            n_steps = math.ceil(len(train_idx) / cfg.batch_size)
            n_steps = min(n_steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else n_steps
            for epoch in range(resume_epoch, stage.epochs):
                t0 = time.perf_counter()
                skip = int(partial.get("step", 0))
                loss_sum, images, steps = partial.get("loss_sum", 0.0), partial.get("images", 0), partial.get("steps", 0)
                before = partial.get("seconds", 0.0)  # this epoch's time before the interruption
                partial = {}
                method.begin_epoch(runnable, stage, epoch)
                method.train_mode(runnable, stage)
                loader = make_batches(dataset, train_idx, cfg.batch_size, shuffle=True,
                                      seed=epoch_seed(seed, epoch, k), num_workers=cfg.num_workers,
                                      training=True)
                for step, batch in enumerate(loader):
                    if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
                        break
                    if step < skip:  # done before the interruption
                        continue
                    if cfg.augment:
                        batch = augment(batch, epoch_seed(seed, epoch, k) * 7919 + step)
                    batch = prepare(batch, device, cfg.image_size, cfg.channels_last)
                    with autocast(device, precision):
                        losses = method.training_step(runnable, batch, stage)
                    loss = losses["loss"]
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise NonFiniteLossError(
                            f"method {name!r} stage {stage.name!r} epoch {epoch} step {step}: loss is {value}"
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    norm = None  # the global gradient norm before clipping
                    if cfg.grad_clip or watchers:
                        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
                    gstep = epoch * n_steps + step  # optimiser step within the stage
                    with warmed_up(opt, gstep, cfg.warmup_steps):
                        opt.step()
                    if watchers:
                        stats = {"loss": value, "grad_norm": float(norm),
                                 "lr": opt.param_groups[0]["lr"] * warmup_factor(gstep, cfg.warmup_steps)}
                        for watch in watchers:
                            watch(stage.name, gstep, stats)
                    loss_sum += value * len(batch)
                    images += len(batch)
                    steps += 1
                    if on_step is not None:
                        on_step(stage.name, epoch, step)
                    reason = stop() if stop is not None and step + 1 < n_steps else None  # the last: at epoch end
                    if reason:
                        saved = None
                        if reason == "interrupt":
                            part = {"step": step + 1, "loss_sum": loss_sum, "images": images, "steps": steps,
                                    "seconds": before + time.perf_counter() - t0}
                            saved = ck.save(_last_state(stage, epoch, model, opt, sched, best, best_epoch, wall, part))
                        raise TrainingStopped(reason, saved)
                epoch_lr = opt.param_groups[0]["lr"]  # the lr this epoch trained at (before warm-up)
                step_per_epoch(sched)
                synchronize(device)
                train_s = before + time.perf_counter() - t0
                result.train_images += images
                result.train_seconds += train_s
                record: dict[str, Any] = {
                    "stage": stage.name, "epoch": epoch, "train_loss": loss_sum / max(images, 1),
                    "images_per_s": images / train_s if train_s > 0 else None,
                    "lr": epoch_lr, "steps": steps,
                }
                if val_idx and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == stage.epochs):
                    values = _validate(method, runnable, stage, dataset, val_idx, cfg, device, precision,
                                       suite_factory, val_metrics)
                    record.update({f"val_{k}": v for k, v in values.items()})
                    record.update(select=sel.metric, select_mode=sel.mode)
                    score = values[sel.metric]
                    if not math.isfinite(score):
                        raise NonFiniteLossError(
                            f"method {name!r} stage {stage.name!r} epoch {epoch}: validation {sel.metric} is {score}"
                        )
                    step_on_validation(sched, values[stage.monitor])
                    if sel.better(score, best):
                        best, best_epoch = score, epoch
                        ck.improve(model, epoch, score)
                elif not val_idx and epoch + 1 == stage.epochs:  # no validation split: best = last
                    best, best_epoch = float("nan"), epoch
                    ck.improve(model, epoch, None)
                epoch_s = before + time.perf_counter() - t0
                wall += epoch_s
                record["wall_s"] = epoch_s
                _log(run_dir, record)
                if board is not None:
                    board.epoch(record)
                final = epoch + 1 == stage.epochs
                reason = stop() if stop is not None else None
                if not reason and on_epoch is not None and on_epoch(stage.name, epoch, record):
                    reason = "pruned"  # a tune's pruner stopped this trial (mrseg_bench.tune.hook)
                saved = None
                if ck.due(epoch) or reason == "interrupt":
                    saved = ck.save(_last_state(stage, epoch + 1, model, None if final else opt, sched, best,
                                                best_epoch, wall))
                if reason:
                    raise TrainingStopped(reason, saved)
                if progress is not None:
                    progress.update(task, advance=1, info=f"loss {record['train_loss']:.4f} "
                                    f"{record['images_per_s'] or 0:.1f} img/s")
            if not ck.best.exists():
                raise ValueError(f"method {name!r} stage {stage.name!r}: no best checkpoint (epochs={stage.epochs})")
            result.stage_wall_s[stage.name] = wall
            result.best[stage.name] = {"metric": sel.metric, "mode": sel.mode, "score": best, "epoch": best_epoch}
        model.load_state_dict(_load(checkpoint_path(run_dir, stages[-1].name, "best"))["model"])
    finally:
        if progress is not None:
            progress.stop()
        if board is not None:
            board.close()
    return result
