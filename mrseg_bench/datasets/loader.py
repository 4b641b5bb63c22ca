"""Seeded DataLoaders over a subset of a dataset, yielding ``MultiRaterBatch``.

``num_workers=None`` picks 0 for datasets held in memory (``dataset.in_memory``: the pickles and the
cached synthetic set; worker processes would only copy them) and ``min(4, cpu_count - 1)``
otherwise (1 on a 2-core machine). Shuffling uses a ``torch.Generator`` seeded with ``seed``;
each worker seeds numpy and ``random`` from its torch seed (``worker_init_fn``), so a run is
reproducible for a given ``(seed, num_workers)``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..types import collate_samples
from .base import MultiRaterDataset


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and random from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_num_workers(dataset: MultiRaterDataset) -> int:
    if getattr(dataset, "in_memory", False):
        return 0
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def make_loader(dataset: MultiRaterDataset, indices: Sequence[int], batch_size: int, shuffle: bool,
                seed: int, num_workers: int | None = None, drop_last: bool = False,
                pin_memory: bool = False) -> DataLoader:
    """DataLoader over ``dataset[indices]`` with ``collate_samples`` and a seeded generator."""
    if batch_size < 1:
        raise ValueError(f"make_loader: batch_size must be >= 1, got {batch_size}")
    idx = [int(i) for i in indices]
    n = len(dataset)
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"make_loader: indices {bad[:5]} out of range for {n} cases")
    workers = default_num_workers(dataset) if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"make_loader: num_workers must be >= 0, got {workers}")
    return DataLoader(
        Subset(dataset, idx),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=workers,
        collate_fn=collate_samples,
        generator=torch.Generator().manual_seed(int(seed)),
        worker_init_fn=seed_worker if workers > 0 else None,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )
