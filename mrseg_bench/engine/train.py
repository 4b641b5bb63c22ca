"""The training loop for the method contract (``mrseg_bench.method``).

For each stage of ``method.stages()``: ``begin_stage``; Adam over ``stage_parameters`` (lr,
weight_decay); cosine schedule stepped per epoch; per epoch ``train_mode``, batches in an order
that is a pure function of (seed, stage, epoch), optional augmentation, ``training_step(...)
["loss"]``, backward, optional gradient clipping, step; then validation on the VALIDATION split
(the stage's ``monitor``: "loss" or a metric name) and checkpoints
``<run_dir>/checkpoints/<stage>_last.pt`` (model, optimiser, scheduler, RNG states, epoch, best;
every ``checkpoint_every`` epochs and at the stage's end, where the optimiser state is dropped)
and ``<stage>_best.pt``. Stage k+1 starts from stage k's best. An interrupted run resumes from
the last checkpoint and, on CPU with the same seed, ends with the same weights as a straight run
(a run with no checkpoint yet restarts from the seed: build the model after seeding with it).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..method import Method, Stage
from .data import augment, limit, make_batches, prepare
from .device import autocast, epoch_seed, get_rng_state, seed_everything, set_rng_state, synchronize
from .evaluate import evaluate, mean_metric
from .run_config import RunConfig


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf training loss; the message names method, stage, epoch and step."""


@dataclass
class TrainResult:
    stage_wall_s: dict[str, float] = field(default_factory=dict)
    best: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> {score, epoch}
    train_images: int = 0
    train_seconds: float = 0.0


def checkpoint_path(run_dir: Path, stage: str, kind: str) -> Path:
    return Path(run_dir) / "checkpoints" / f"{stage}_{kind}.pt"


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise ValueError(f"checkpoint {path}: cannot be read ({type(exc).__name__}: {exc})") from None


def _better(score: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return score < best if mode == "min" else score > best


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / "train_log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _validate(method: Method, model: nn.Module, stage: Stage, dataset, val_idx, cfg: RunConfig,
              device: torch.device, precision: str, suite_factory: Callable | None) -> float:
    """The stage's monitor on the validation split: mean loss (no_grad) or a metric's mean."""
    idx = limit(val_idx, cfg.max_eval_cases)
    if stage.monitor == "loss":
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in make_batches(dataset, idx, cfg.eval_bs, shuffle=False, seed=0):
                batch = prepare(batch, device, cfg.image_size, cfg.channels_last)
                with autocast(device, precision):
                    loss = method.training_step(model, batch, stage)["loss"]
                total += float(loss) * len(batch)
                n += len(batch)
        return total / max(n, 1)
    suite = suite_factory([stage.monitor]) if suite_factory else None
    rows = evaluate(method, model, dataset, idx, cfg.val_n_samples, device, cfg.eval_bs, suite=suite,
                    precision=precision, image_size=cfg.image_size, channels_last=cfg.channels_last)
    return mean_metric(rows, stage.monitor)


def train(method: Method, model: nn.Module, dataset, split, cfg: RunConfig, run_dir: str | Path,
          seed: int, device: torch.device, precision: str = "fp32", method_name: str | None = None,
          quiet: bool = True, suite_factory: Callable | None = None,
          on_step: Callable[[str, int, int], None] | None = None) -> TrainResult:
    """Train ``model`` (already on ``device``) through every stage, resuming where checkpoints
    say; leave it holding the last stage's best weights. ``on_step(stage, epoch, step)`` is a
    test hook called after each optimiser step."""
    run_dir = Path(run_dir)
    name = method_name or method.info.name
    stages = method.stages()
    if not stages:
        raise ValueError(f"method {name!r}: stages() returned no stage")
    runnable = torch.compile(model) if cfg.compile else model
    result = TrainResult()
    train_idx = list(split.train)
    val_idx = list(split.val)
    if not train_idx:
        raise ValueError(f"method {name!r}: the training split is empty")
    progress = None
    if not quiet:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                            TimeElapsedColumn(), transient=True)
        progress.start()
    try:
        for k, stage in enumerate(stages):
            last_p = checkpoint_path(run_dir, stage.name, "last")
            best_p = checkpoint_path(run_dir, stage.name, "best")
            state = _load(last_p) if last_p.exists() else None
            if state is None and k == 0:  # a fresh run: the RNG stream starts from the seed
                seed_everything(seed)
            if state is None and k > 0:  # start from the previous stage's best
                model.load_state_dict(_load(checkpoint_path(run_dir, stages[k - 1].name, "best"))["model"])
            method.begin_stage(model, stage)
            params = method.stage_parameters(model, stage)
            if not params:
                raise ValueError(f"method {name!r} stage {stage.name!r}: no parameters to train")
            opt = torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(stage.epochs, 1))
            start_epoch, best, best_epoch, wall = 0, None, -1, 0.0
            if state is not None:
                if state.get("stage") != stage.name:
                    raise ValueError(f"checkpoint {last_p}: belongs to stage {state.get('stage')!r}")
                model.load_state_dict(state["model"])
                if state["epoch"] < stage.epochs:  # a finished stage keeps no optimiser state
                    opt.load_state_dict(state["optimizer"])
                    sched.load_state_dict(state["scheduler"])
                set_rng_state(state["rng"])
                start_epoch, best, best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
                wall = state.get("wall_s", 0.0)
            task = None
            if progress is not None:
                task = progress.add_task(f"{name} {stage.name}", total=stage.epochs, completed=start_epoch, info="")
            for epoch in range(start_epoch, stage.epochs):
                t0 = time.perf_counter()
                method.begin_epoch(runnable, stage, epoch)
                method.train_mode(runnable, stage)
                loader = make_batches(dataset, train_idx, cfg.batch_size, shuffle=True,
                                      seed=epoch_seed(seed, epoch, k), num_workers=cfg.num_workers)
                loss_sum, images, steps = 0.0, 0, 0
                for step, batch in enumerate(loader):
                    if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
                        break
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
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                    loss_sum += value * len(batch)
                    images += len(batch)
                    steps += 1
                    if on_step is not None:
                        on_step(stage.name, epoch, step)
                sched.step()
                synchronize(device)
                train_s = time.perf_counter() - t0
                result.train_images += images
                result.train_seconds += train_s
                record: dict[str, Any] = {
                    "stage": stage.name, "epoch": epoch, "train_loss": loss_sum / max(images, 1),
                    "images_per_s": images / train_s if train_s > 0 else None,
                    "lr": opt.param_groups[0]["lr"], "steps": steps,
                }
                if val_idx and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == stage.epochs):
                    score = _validate(method, runnable, stage, dataset, val_idx, cfg, device, precision, suite_factory)
                    record[f"val_{stage.monitor}"] = score
                    if not math.isfinite(score):
                        raise NonFiniteLossError(
                            f"method {name!r} stage {stage.name!r} epoch {epoch}: validation {stage.monitor} is {score}"
                        )
                    if _better(score, best, stage.mode):
                        best, best_epoch = score, epoch
                        _atomic_save({"stage": stage.name, "epoch": epoch + 1, "model": model.state_dict(),
                                      "score": score}, best_p)
                elif not val_idx and epoch + 1 == stage.epochs:  # no validation split: best = last
                    best, best_epoch = float("nan"), epoch
                    _atomic_save({"stage": stage.name, "epoch": epoch + 1, "model": model.state_dict(),
                                  "score": None}, best_p)
                wall += time.perf_counter() - t0
                record["wall_s"] = time.perf_counter() - t0
                _log(run_dir, record)
                final = epoch + 1 == stage.epochs
                if final or (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0):
                    ckpt = {"stage": stage.name, "epoch": epoch + 1, "model": model.state_dict(),
                            "rng": get_rng_state(), "best_score": best, "best_epoch": best_epoch, "wall_s": wall}
                    if not final:  # only needed to resume inside the stage
                        ckpt.update(optimizer=opt.state_dict(), scheduler=sched.state_dict())
                    _atomic_save(ckpt, last_p)
                if progress is not None:
                    progress.update(task, advance=1, info=f"loss {record['train_loss']:.4f} "
                                    f"{record['images_per_s'] or 0:.1f} img/s")
            if not best_p.exists():
                raise ValueError(f"method {name!r} stage {stage.name!r}: no best checkpoint (epochs={stage.epochs})")
            result.stage_wall_s[stage.name] = wall
            result.best[stage.name] = {"score": best, "epoch": best_epoch}
        model.load_state_dict(_load(checkpoint_path(run_dir, stages[-1].name, "best"))["model"])
    finally:
        if progress is not None:
            progress.stop()
    return result
