"""make_loader: seeded order, MultiRaterBatch output, worker processes; the dataset registry."""

from __future__ import annotations

import inspect

import pytest
import torch

from mrseg_bench.datasets import make_loader
from mrseg_bench.datasets.loader import default_num_workers
from mrseg_bench.datasets.synthetic import SyntheticMultiRater
from mrseg_bench.registry import DATASETS
from mrseg_bench.types import MultiRaterBatch


@pytest.fixture(scope="module")
def ds() -> SyntheticMultiRater:
    return SyntheticMultiRater(num_cases=12, image_size=32)


def _order(loader) -> list[str]:
    return [c for batch in loader for c in batch.case_id]


def test_batches_and_seeded_order(ds: SyntheticMultiRater) -> None:
    idx = [1, 3, 5, 7, 9, 11]
    loader = make_loader(ds, idx, batch_size=4, shuffle=True, seed=0)
    batches = list(loader)
    assert isinstance(batches[0], MultiRaterBatch) and len(batches) == 2
    assert batches[0].image.shape == (4, 1, 32, 32) and batches[0].masks.shape == (4, 4, 32, 32)
    assert batches[1].rater_valid.shape == (2, 4)
    first = [c for b in batches for c in b.case_id]
    assert sorted(first) == sorted(ds.case_ids[i] for i in idx)
    again = make_loader(ds, idx, 4, True, seed=0)
    assert _order(again) == first  # same seed, same order, epoch after epoch
    assert _order(again) == _order(loader)
    orders = {tuple(_order(make_loader(ds, idx, 4, True, seed=s))) for s in range(5)}
    assert len(orders) > 1
    plain = make_loader(ds, idx, 4, shuffle=False, seed=0, drop_last=True)
    assert _order(plain) == [ds.case_ids[i] for i in idx[:4]]


def test_worker_process(ds: SyntheticMultiRater) -> None:
    loader = make_loader(ds, range(6), batch_size=3, shuffle=False, seed=1, num_workers=1)
    batches = list(loader)
    assert torch.equal(batches[1].masks[0], ds[3].masks)


def test_defaults_and_errors(ds: SyntheticMultiRater) -> None:
    assert default_num_workers(ds) == 0  # cached synthetic set: in memory
    assert default_num_workers(SyntheticMultiRater(num_cases=2, cache=False)) >= 0
    with pytest.raises(ValueError, match="out of range"):
        make_loader(ds, [0, 12], 2, False, 0)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, [0], 0, False, 0)


def test_registry_names_and_documented_options() -> None:
    assert set(DATASETS.names()) >= {"synthetic", "lidc", "qubiq", "npc", "riga"}
    for name in ("synthetic", "lidc", "qubiq", "npc", "riga"):
        factory = DATASETS.get(name)
        params = [p for p in inspect.signature(factory).parameters if p != "root"]
        assert params and all(f"``{p}``" in factory.__doc__ for p in params), name
        with pytest.raises(TypeError, match="unknown option"):
            factory(None, definitely_not_an_option=1)
