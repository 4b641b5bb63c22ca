"""Profiling a method: parameters, FLOPs per image, training throughput of every stage,
inference throughput, latency p50/p95, peak memory per phase. Rows are ``{"name", "value",
"unit"}`` (the store's ``profile`` table). Every figure measures what its name says:

- ``flops_per_image``: ``torch.utils.flop_counter.FlopCounterMode`` over one ``predict`` of a batch
  of one image at the method's sample count (matmul/conv FLOPs, 2 per multiply-add).
- ``train_images_per_s_<stage>``: for EVERY stage of ``method.stages()``, on a deep copy of the
  model (the trained weights and the RNG are untouched): ``begin_stage``, the training's
  optimiser (``engine.optim.build_optimizer``: Adam over the method's ``param_groups``, each at
  its lr), ``train_mode``, ``warmup`` untimed steps, then ``steps`` timed steps
  (forward, backward, optimiser step) -> batch size x steps / time. ``train_images_per_s`` is the
  whole schedule's rate: sum of epochs / sum(epochs_k / rate_k) (each stage weighted by its
  epochs). The run's real training wall time and images/s are in its ``train_log.jsonl``.
- ``infer_images_per_s``: a batch of ``eval_batch_size`` images, ``max(steps, MIN_INFER_REPEATS)``
  timed passes after ``warmup`` -> batch size / median time; ``latency_p50_ms``/``latency_p95_ms``: a batch of one image, timed
  ``max(repeats, MIN_REPEATS_P95)`` times after ``warmup`` (at least 20 samples, so p95 is not
  simply the maximum). The device is synchronised before every clock read.
- ``compile=True`` (``run.compile``): the ``torch.compile``-d model is the one timed (warm-up
  includes the compilation); FLOPs are counted on the eager model.
- Peak memory, per phase, independent of what ran before in this process:
  - CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats`` at the start of each phase
    (``peak_memory_predict_mb`` over the inference timings, ``peak_memory_train_mb`` over the
    training timings of all stages, while the trained model waits on the CPU so only the
    profiled copy counts);
  - CPU: a FRESH Python process (``subprocess``; the caller's script is not re-run) loads the model and the batch and runs the
    predict phase, then the train phase (every stage); the peak resident set of that process
    per phase (Linux: ``VmHWM``, reset between phases through ``/proc/self/clear_refs``; elsewhere
    ``ru_maxrss``, KiB on Linux and bytes on macOS, so the train figure is the process peak).
    ``peak_memory_baseline_mb`` is that process's RSS before the phases (interpreter, torch,
    model, batch, and one tiny warm-up training step that absorbs the engine's one-off start-up
    memory), so phase peak - baseline is what the phase itself needed;
  - MPS, or ``memory="off"`` (env ``MRSEG_PROFILE_MEMORY=off``), or a failed child: NaN ("—").
  ``peak_memory_mb`` is the larger of the two phase peaks.
- Method-specific rows: a method with ``profile_extra(model, images, n_samples, timer)`` adds
  the rows it returns (``timer(fn)`` runs ``fn`` once, device-synchronised, and returns seconds),
  e.g. CCDM's ``sample_ms`` / ``sample_ms_published_steps``: ms per sample for one image at its
  preset's sampling steps and at the published step count.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import pickle
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..method import Method, Stage
from ..types import MultiRaterBatch
from .device import autocast, get_rng_state, set_rng_state, synchronize
from .memory import current_rss_mb, peak_rss_mb, reset_peak_rss
from .optim import build_optimizer

MIN_REPEATS_P95 = 20
MIN_TRAIN_STEPS = 3
MIN_INFER_REPEATS = 5
MEMORY_ENV = "MRSEG_PROFILE_MEMORY"
MEMORY_MODES = ("auto", "subprocess", "off")
CHILD_TIMEOUT_S = 1800.0
NAN = float("nan")


def _row(name: str, value: float, unit: str) -> dict[str, Any]:
    return {"name": name, "value": float(value), "unit": unit}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_image(method: Method, model: nn.Module, image: torch.Tensor, n_samples: int) -> float:
    """FLOPs of one ``predict`` call on ``image [1,C,H,W]`` at ``n_samples``."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        method.predict(model, image[:1], n_samples)
    return float(counter.get_total_flops())


def _timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def _train_step(method: Method, net: nn.Module, stage: Stage, batch: MultiRaterBatch, device: torch.device,
                precision: str, compile: bool) -> Callable[[], None] | None:
    """One optimiser step of ``stage`` on ``net`` (modified in place); None if the stage
    trains no parameter."""
    method.begin_stage(net, stage)
    if not any(g["params"] for g in method.param_groups(net, stage)):
        return None
    opt = build_optimizer(method, net, stage)  # the training's optimiser: its groups and lrs
    runnable = torch.compile(net) if compile else net
    method.train_mode(runnable, stage)

    def step() -> None:
        with autocast(device, precision):
            loss = method.training_step(runnable, batch, stage)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def train_throughput(method: Method, model: nn.Module, batch: MultiRaterBatch, device: torch.device,
                     precision: str, warmup: int = 1, steps: int = 3, compile: bool = False,
                     on_stage: Callable[[str, Callable[[], Any]], Any] | None = None) -> dict[str, float]:
    """Images/s of every stage's training step, each on a fresh copy of ``model`` -> {stage: rate}
    (NaN for a stage without parameters). ``on_stage(stage, run)`` wraps each stage's timing
    (the CUDA memory phase uses it)."""
    rates: dict[str, float] = {}
    for stage in method.stages():
        net = copy.deepcopy(model).to(device)
        step = _train_step(method, net, stage, batch, device, precision, compile)
        if step is None:
            rates[stage.name] = NAN
            continue

        def run(step=step) -> list[float]:
            return _timed(step, device, max(warmup, 1), max(steps, MIN_TRAIN_STEPS))

        times = on_stage(stage.name, run) if on_stage else run()
        rates[stage.name] = len(batch) / float(np.median(times))
        del net, step
    return rates


def schedule_images_per_s(rates: dict[str, float], stages: list[Stage]) -> float:
    """The whole schedule's images/s: sum(epochs) / sum(epochs_k / rate_k)."""
    epochs = {s.name: max(int(s.epochs), 1) for s in stages}
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates.values()):
        return NAN
    return sum(epochs[s] for s in rates) / sum(epochs[s] / r for s, r in rates.items())


# -- peak memory ---------------------------------------------------------------------------------
RESULT_MARK = "MRSEG_PROFILE_RESULT "


def _phase_peaks(payload: dict[str, Any]) -> dict[str, Any]:
    """In the fresh process: predict phase, then train phase (every stage); peak RSS of each."""
    method, model, batch = payload["method"], payload["model"], payload["batch"]
    _warm_engine()
    gc.collect()
    resets = reset_peak_rss()
    out: dict[str, Any] = {"ok": True, "baseline": current_rss_mb() if resets else peak_rss_mb()}
    device = torch.device("cpu")
    infer_model = torch.compile(model) if payload["compile"] else model
    model.eval()
    with torch.no_grad():
        for images in (batch.image, batch.image[:1]):
            for _ in range(max(payload["warmup"], 1) + 1):
                with autocast(device, payload["precision"]):
                    method.predict(infer_model, images, payload["n_samples"])
    del infer_model
    gc.collect()
    out["predict"] = peak_rss_mb()
    if payload["train"]:
        if resets:
            reset_peak_rss()
        for stage in method.stages():
            step = _train_step(method, model, stage, batch, device, payload["precision"], payload["compile"])
            if step is not None:
                for _ in range(max(payload["warmup"], 1) + payload["steps"]):
                    step()
            del step
            gc.collect()
        out["train"] = peak_rss_mb()
    return out


def _warm_engine() -> None:
    """One tiny conv forward/backward/Adam step, so the engine's one-off start-up memory (kernel
    libraries, autograd, optimiser) lands in the baseline rather than in the first phase."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
    opt = torch.optim.Adam(net.parameters())
    net(torch.zeros(2, 1, 8, 8)).sum().backward()
    opt.step()
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, 8, 8))


def _child_main() -> None:
    """Entry of the fresh process (``python -c``): payload on stdin, result line on stdout."""
    import json

    try:
        torch.set_num_threads(max(int(sys.argv[1]), 1))
        # inter-process communication, as multiprocessing does it: stdin is a pipe from our own
        # parent carrying the objects it pickled a moment ago (method, model, batch); nothing is
        # read from disk (checkpoints, which are files, load with weights_only=True)
        payload = pickle.loads(sys.stdin.buffer.read())
        out = _phase_peaks(payload)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which shows NaN
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + RESULT_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()


def cpu_phase_peaks(method: Method, model: nn.Module, batch: MultiRaterBatch, n_samples: int,
                    precision: str = "fp32", warmup: int = 1, steps: int = 3, train: bool = True,
                    compile: bool = False, timeout: float = CHILD_TIMEOUT_S) -> dict[str, float]:
    """Peak RSS (MB) of a fresh Python process per phase: {"baseline", "predict", "train"}; NaN
    each (and a warning) when it cannot run. The process is started with ``subprocess`` (not
    multiprocessing), so the caller's main module is never re-imported."""
    import json
    import subprocess

    nan = {"baseline": NAN, "predict": NAN, "train": NAN}
    try:
        data = pickle.dumps({"method": method, "model": model, "batch": batch.to("cpu"), "n_samples": int(n_samples),
                             "precision": precision, "warmup": int(warmup), "steps": int(steps),
                             "train": bool(train), "compile": bool(compile)}, protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        proc = subprocess.run(
            [sys.executable, "-c", "from mrseg_bench.engine.profile import _child_main; _child_main()",
             str(torch.get_num_threads())],
            input=data, capture_output=True, timeout=timeout, env=env)
        del data
        lines = [x for x in proc.stdout.decode("utf-8", "replace").splitlines() if x.startswith(RESULT_MARK)]
        if lines:
            msg = json.loads(lines[-1][len(RESULT_MARK):])
        else:
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            msg = {"ok": False, "error": f"the profiling process exited with {proc.returncode} ({tail[0]})"}
    except subprocess.TimeoutExpired:
        msg = {"ok": False, "error": f"no answer in {timeout:.0f} s"}
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable method/model: no memory figure
        msg = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if not msg.get("ok"):
        warnings.warn(f"profile: CPU peak memory not measured ({msg.get('error')}); shown as NaN",
                      RuntimeWarning, stacklevel=2)
        return nan
    return {**nan, **{k: float(v) for k, v in msg.items() if k in nan}}


def memory_mode(device: torch.device, memory: str | None = None) -> str:
    """"cuda" (in-process, reset per phase), "subprocess" (CPU) or "off"."""
    mode = (memory or os.environ.get(MEMORY_ENV, "") or "auto").strip().lower()
    if mode not in MEMORY_MODES:
        raise ValueError(f"profile memory={mode!r} ({MEMORY_ENV}): choose {', '.join(MEMORY_MODES)}")
    if mode == "off":
        return "off"
    if device.type == "cuda":
        return "cuda"
    return "subprocess" if device.type == "cpu" else "off"


class _CudaPhase:
    """Peak ``max_memory_allocated`` (MB) over the calls it wraps, reset before each."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, NAN

    def __call__(self, name: str, run: Callable[[], Any]) -> Any:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        out = run()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.peak = peak if math.isnan(self.peak) else max(self.peak, peak)
        return out


def _extra_rows(method: Method, model: nn.Module, images: torch.Tensor, n_samples: int, device: torch.device,
                precision: str) -> list[dict[str, Any]]:
    """The rows of the method's optional ``profile_extra`` (module docstring)."""
    extra = getattr(method, "profile_extra", None)
    if extra is None:
        return []

    @torch.no_grad()
    def timer(fn: Callable[[], Any]) -> float:
        with autocast(device, precision):
            return float(_timed(fn, device, 0, 1)[0])

    return [_row(r["name"], r["value"], r["unit"]) for r in extra(model, images, n_samples, timer)]


def profile_method(method: Method, model: nn.Module, batch: MultiRaterBatch, device: torch.device,
                   n_samples: int, precision: str = "fp32", warmup: int = 1, steps: int = 3,
                   repeats: int = 10, train: bool = True, *, compile: bool = False,
                   memory: str | None = None) -> list[dict[str, Any]]:
    """Profile rows for ``model`` on ``batch`` (already on ``device``); see the module doc. The
    model is left in eval mode with unchanged weights; global RNG states are restored."""
    mode = memory_mode(device, memory)
    rng = get_rng_state()
    cuda_train = _CudaPhase(device) if mode == "cuda" else None
    cuda_predict = _CudaPhase(device) if mode == "cuda" else None
    try:
        rows = [_row("params", count_parameters(model), "count")]
        rows.append(_row("flops_per_image", flops_per_image(method, model, batch.image, n_samples), "flop"))
        if train:
            if cuda_train is not None:  # the trained model waits on the CPU: only the copy is counted
                model.to("cpu")
            try:
                rates = train_throughput(method, model, batch, device, precision, warmup, steps, compile,
                                         on_stage=cuda_train)
            finally:
                model.to(device)
            rows.append(_row("train_images_per_s", schedule_images_per_s(rates, method.stages()), "images/s"))
            rows += [_row(f"train_images_per_s_{s}", r, "images/s") for s, r in rates.items()]
        model.eval()
        runnable = torch.compile(model) if compile else model

        @torch.no_grad()
        def infer(images: torch.Tensor) -> None:
            with autocast(device, precision):
                method.predict(runnable, images, n_samples)

        def predict_phase() -> tuple[list[float], list[float]]:
            t = _timed(lambda: infer(batch.image), device, warmup, max(steps, MIN_INFER_REPEATS))
            lat = _timed(lambda: infer(batch.image[:1]), device, warmup, max(repeats, MIN_REPEATS_P95))
            return t, lat

        t, lat = cuda_predict("predict", predict_phase) if cuda_predict else predict_phase()
        rows.append(_row("infer_images_per_s", len(batch) / float(np.median(t)), "images/s"))
        lat_ms = np.asarray(lat) * 1000.0
        rows.append(_row("latency_p50_ms", float(np.percentile(lat_ms, 50)), "ms"))
        rows.append(_row("latency_p95_ms", float(np.percentile(lat_ms, 95)), "ms"))
        rows += _extra_rows(method, runnable, batch.image, n_samples, device, precision)
    finally:
        set_rng_state(rng)
    peaks = {"baseline": NAN, "predict": NAN, "train": NAN}
    if mode == "cuda":
        peaks.update(predict=cuda_predict.peak, train=cuda_train.peak if train else NAN)
    elif mode == "subprocess":
        peaks = cpu_phase_peaks(method, model, batch, n_samples, precision, warmup, steps, train, compile)
        set_rng_state(rng)
    measured = [v for k, v in peaks.items() if k != "baseline" and math.isfinite(v)]
    rows.append(_row("peak_memory_mb", max(measured) if measured else NAN, "MB"))
    rows.append(_row("peak_memory_predict_mb", peaks["predict"], "MB"))
    if train:
        rows.append(_row("peak_memory_train_mb", peaks["train"], "MB"))
    rows.append(_row("peak_memory_baseline_mb", peaks["baseline"], "MB"))  # CPU only; else NaN
    return rows
