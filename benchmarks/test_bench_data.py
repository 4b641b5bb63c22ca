"""Data pipeline speed: a batch of 12 at 128x128 (D-Persona's batch and size).

Run: ``pytest benchmarks/test_bench_data.py --benchmark-only``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mrseg_bench.datasets import augment_batch, make_loader
from mrseg_bench.datasets.synthetic import SyntheticMultiRater
from mrseg_bench.registry import DATASETS
from mrseg_bench.types import collate_samples

BATCH, SIZE = 12, 128


@pytest.fixture(scope="module")
def cached() -> SyntheticMultiRater:
    ds = SyntheticMultiRater(num_cases=BATCH, image_size=SIZE)
    for i in range(BATCH):
        ds[i]
    return ds


def test_bench_synthetic_generate_batch(benchmark) -> None:
    ds = SyntheticMultiRater(num_cases=BATCH, image_size=SIZE, cache=False)
    batch = benchmark(lambda: collate_samples([ds[i] for i in range(BATCH)]))
    assert batch.image.shape == (BATCH, 1, SIZE, SIZE)


def test_bench_cached_loader_batch(benchmark, cached: SyntheticMultiRater) -> None:
    loader = make_loader(cached, range(BATCH), BATCH, shuffle=True, seed=0)
    batch = benchmark(lambda: next(iter(loader)))
    assert batch.masks.shape == (BATCH, 4, SIZE, SIZE)


def test_bench_pickle_dataset_batch(benchmark, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {f"s{i}": {"image": rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8),
                      "masks": [(rng.random((SIZE, SIZE)) > 0.9).astype(np.uint8) for _ in range(4)],
                      "series_uid": f"P{i}_x"} for i in range(BATCH)}
    (tmp_path / "lidc_attributes.pkl").write_bytes(pickle.dumps(data))
    ds = DATASETS.get("lidc")(tmp_path)
    batch = benchmark(lambda: collate_samples([ds[i] for i in range(BATCH)]))
    assert batch.image.shape == (BATCH, 1, SIZE, SIZE)


def test_bench_augment_batch(benchmark, cached: SyntheticMultiRater) -> None:
    batch = collate_samples([cached[i] for i in range(BATCH)])
    gen = torch.Generator().manual_seed(0)
    out = benchmark(lambda: augment_batch(batch, gen))
    assert out.masks.shape == batch.masks.shape
