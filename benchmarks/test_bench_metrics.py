"""Speed of the full metric suite: 64 cases of 128x128, R = 4 raters, N = 50 and N = 10 samples.

Target (brief): >= 100x faster than the reference's per-case numpy loops (~1.8 s per case at
N = 50, ~0.12 s at N = 10), i.e. < 18 ms per case at N = 50. ``extra_info["ms_per_case"]``.
Run: ``pytest benchmarks/test_bench_metrics.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch

from mrseg_bench.metrics import MetricSuite
from mrseg_bench.types import Prediction

CASES, RATERS, SIZE = 64, 4, 128


def blobs(b: int, k: int, size: int, gen: torch.Generator, sharp: float = 0.0) -> torch.Tensor:
    """``[b,k,size,size]`` random discs: binary (sharp=0) or soft sigmoid edges (sharp>0)."""
    centre = torch.rand(b, k, 2, 1, 1, generator=gen) * size * 0.5 + size * 0.25
    radius = torch.rand(b, k, 1, 1, generator=gen) * size * 0.2 + 2
    radius = radius * (torch.rand(b, k, 1, 1, generator=gen) > 0.1)  # ~10% empty masks
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dist = torch.sqrt((ys - centre[:, :, 0]) ** 2 + (xs - centre[:, :, 1]) ** 2)
    if sharp:
        return torch.sigmoid((radius - dist) / sharp) * (radius > 0)
    return (dist < radius).to(torch.uint8)


@pytest.fixture(autouse=True)
def one_thread():
    """Time one CPU thread: reproducible on shared CI runners (figures are per core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=[50, 10], ids=lambda n: f"N{n}")
def batch(request):
    gen = torch.Generator().manual_seed(0)
    n = request.param
    raters = blobs(CASES, RATERS, SIZE, gen)
    pred = Prediction(
        samples=blobs(CASES, n, SIZE, gen, sharp=2.0),
        personalized=blobs(CASES, RATERS, SIZE, gen, sharp=2.0),
        consensus=blobs(CASES, 1, SIZE, gen, sharp=2.0)[:, 0],
    )
    valid = torch.ones(CASES, RATERS, dtype=torch.bool)
    valid[::7, 3] = False
    return n, pred, raters, valid


def test_bench_full_suite(benchmark, batch):
    n, pred, raters, valid = batch
    suite = MetricSuite()
    ids = [f"case{i}" for i in range(CASES)]
    rows = benchmark.pedantic(suite.score, args=(pred, raters, valid, ids), rounds=5,
                              iterations=1, warmup_rounds=1)
    assert {r["metric"] for r in rows} == set(suite.names)
    ms = benchmark.stats.stats.mean * 1000 / CASES
    benchmark.extra_info.update(ms_per_case=round(ms, 3), samples=n, cases=CASES,
                                threads=torch.get_num_threads())
    print(f"\nN={n}: {ms:.2f} ms per case ({torch.get_num_threads()} threads)")
