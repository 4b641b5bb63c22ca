"""Profiling a method: parameters, FLOPs per image, training and inference throughput, latency
p50/p95, peak memory. Rows are ``{"name", "value", "unit"}`` (the store's ``profile`` table).

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one ``predict`` of a batch of one
  image at the method's sample count (counts matmul/conv FLOPs, 2 per multiply-add).
- Training images/s: ``profile_steps`` timed steps of the first stage after ``profile_warmup``
  warm-up steps, on a deep copy of the model (the trained weights and the RNG are untouched).
- Inference: a batch of ``eval_batch_size`` images -> images/s; a batch of one image repeated
  ``latency_repeats`` times -> latency p50/p95 (ms). Warm-up first; the device is synchronised
  before every clock read.
- Peak memory: CUDA ``max_memory_allocated`` since the last reset; on CPU the process peak RSS.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..method import Method
from ..types import MultiRaterBatch
from .device import autocast, get_rng_state, peak_memory_mb, set_rng_state, synchronize


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


def _timed(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
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


def train_images_per_s(method: Method, model: nn.Module, batch: MultiRaterBatch, device: torch.device,
                       precision: str, warmup: int = 1, steps: int = 3) -> float:
    """Images/s of the first stage's training step (forward, backward, Adam step) on a copy."""
    rng = get_rng_state()
    try:
        net = copy.deepcopy(model)
        stage = method.stages()[0]
        method.begin_stage(net, stage)
        params = method.stage_parameters(net, stage)
        opt = torch.optim.Adam(params, lr=stage.lr)
        method.train_mode(net, stage)

        def step() -> None:
            with autocast(device, precision):
                loss = method.training_step(net, batch, stage)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        times = _timed(step, device, warmup, steps)
    finally:
        set_rng_state(rng)
    return len(batch) * len(times) / sum(times)


def profile_method(method: Method, model: nn.Module, batch: MultiRaterBatch, device: torch.device,
                   n_samples: int, precision: str = "fp32", warmup: int = 1, steps: int = 3,
                   repeats: int = 10, train: bool = True) -> list[dict[str, Any]]:
    """Profile rows for ``model`` on ``batch`` (already on ``device``). The model is left in
    eval mode with unchanged weights; global RNG states are restored."""
    rng = get_rng_state()
    try:
        rows = [_row("params", count_parameters(model), "count")]
        rows.append(_row("flops_per_image", flops_per_image(method, model, batch.image, n_samples), "flop"))
        if train:
            rows.append(_row("train_images_per_s",
                             train_images_per_s(method, model, batch, device, precision, warmup, steps),
                             "images/s"))
        model.eval()

        @torch.no_grad()
        def infer(images: torch.Tensor) -> None:
            with autocast(device, precision):
                method.predict(model, images, n_samples)

        t = _timed(lambda: infer(batch.image), device, warmup, max(1, steps))
        rows.append(_row("infer_images_per_s", len(batch) * len(t) / sum(t), "images/s"))
        lat = np.asarray(_timed(lambda: infer(batch.image[:1]), device, warmup, repeats)) * 1000.0
        rows.append(_row("latency_p50_ms", float(np.percentile(lat, 50)), "ms"))
        rows.append(_row("latency_p95_ms", float(np.percentile(lat, 95)), "ms"))
    finally:
        set_rng_state(rng)
    rows.append(_row("peak_memory_mb", peak_memory_mb(device), "MB"))
    return rows
