"""Engine and store speed: writing a run to the results store, evaluating a method on a split,
one training epoch through the engine loop (smoke-sized: synthetic 32x32, resnet18 U-Net).

Run: ``pytest benchmarks/test_bench_engine.py --benchmark-only``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mrseg_bench.datasets.base import Split
from mrseg_bench.engine.evaluate import evaluate, metric_suite
from mrseg_bench.engine.run_config import RunConfig
from mrseg_bench.engine.train import train
from mrseg_bench.run.plan import plan_grid
from mrseg_bench.store import ResultsStore

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def smoke():
    plan = plan_grid("fusion.majority", "synthetic", [0], "smoke", ["dataset.num_cases=16"], device="cpu")
    spec = plan.specs[0]
    ds = plan.datasets["synthetic"]
    for i in range(len(ds)):
        ds[i]  # warm the cache: measure the engine, not data generation
    torch.manual_seed(0)
    return spec.method_obj, spec.method_obj.build(ds.info), ds


def test_bench_store_write_run(benchmark, tmp_path):
    store = ResultsStore(tmp_path / "bench.sqlite")
    rows = [{"case_id": f"c{i}", "metric": m, "rater": None, "value": 0.5}
            for i in range(200) for m in ("ged", "dice_soft", "dice_match", "hm_iou", "ncc",
                                          "sample_diversity", "rater_disagreement", "dice_max", "dice_max_reverse",
                                          "per_rater_dice_mean")]
    prof = [{"name": "params", "value": 1.0, "unit": "count"}]
    counter = itertools.count()

    def write():
        k = next(counter)
        store.write_run({"run_id": f"r{k}", "config_hash": f"h{k}", "status": "done"}, rows, prof)

    benchmark(write)
    assert len(store.metrics(["r0"])) == 2000


def test_bench_evaluate_16_cases(benchmark, smoke):
    method, model, ds = smoke
    suite = metric_suite()
    rows = benchmark(evaluate, method, model, ds, list(range(16)), 4, CPU, 8, suite)
    assert {r["case_id"] for r in rows} == set(ds.case_ids)


def test_bench_train_one_epoch(benchmark, smoke, tmp_path):
    method, model, ds = smoke
    split = Split(train=tuple(range(16)), val=(), test=())
    cfg = RunConfig(batch_size=8)
    counter = itertools.count()

    def epoch():
        train(method, model, ds, split, cfg, tmp_path / f"r{next(counter)}", seed=0, device=CPU)

    benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
