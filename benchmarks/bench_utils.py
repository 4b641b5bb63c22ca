"""Helpers shared by the method benchmarks (imported by the benchmark files; pytest puts this
folder on sys.path)."""

from __future__ import annotations

import torch

from mrseg_bench.types import MultiRaterBatch


def random_batch(n: int, raters: int, size: int, channels: int = 1) -> MultiRaterBatch:
    """A seeded batch: Gaussian images, random binary masks (30 % foreground), all raters valid."""
    g = torch.Generator().manual_seed(1)
    return MultiRaterBatch(torch.randn(n, channels, size, size, generator=g),
                           (torch.rand(n, raters, size, size, generator=g) > 0.7).to(torch.uint8),
                           torch.ones(n, raters, dtype=torch.bool))


def record(benchmark, images: int) -> None:
    """Add ms per call and images/s to the saved benchmark JSON (``extra_info``); nothing when
    timing is off (``--benchmark-disable``: the benchmarks then run once, as smoke tests)."""
    if benchmark.stats is None:
        return
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update({"ms_per_call": round(mean * 1e3, 1),
                                 "images_per_s": round(images / mean, 2)})


def bench_train_step(benchmark, method, model, stage, data: MultiRaterBatch, images: int) -> None:
    """Time one optimiser step of ``stage`` (the engine's optimiser: ``build_optimizer``)."""
    from mrseg_bench.engine.optim import build_optimizer

    method.train_mode(model, stage)
    opt = build_optimizer(method, model, stage)

    def step():
        opt.zero_grad(set_to_none=True)
        method.training_step(model, data, stage)["loss"].backward()
        opt.step()

    benchmark.pedantic(step, rounds=2, iterations=1, warmup_rounds=1)
    record(benchmark, images)
