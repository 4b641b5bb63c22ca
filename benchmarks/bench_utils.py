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
    """Add ms per call and images/s to the saved benchmark JSON (``extra_info``)."""
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update({"ms_per_call": round(mean * 1e3, 1),
                                 "images_per_s": round(images / mean, 2)})
