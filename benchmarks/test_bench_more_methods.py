"""PHiSeg, MoSE and TAB speed on CPU at reference sizes (1 channel, 4 raters, 128x128).

Default configs = the paper sizes (phiseg_7_5 with n0 = 32; MoSE filters [32,64,128,192,192,
192,192], K = 4, S = 4; TAB with resnet34, hidden 256). For each: a training step at batch 12
(forward, backward, Adam step) and ``predict`` at batch 12 with N = 10 and N = 50 samples (one
batched pass per ``sample_chunk`` of (image, sample) pairs, never a loop per sample).
``extra_info`` holds ms per call and images/s. Run:
``pytest benchmarks/test_bench_more_methods.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch
from bench_utils import bench_train_step, random_batch, record

from mrseg_bench.method import create_method
from mrseg_bench.types import DatasetInfo

SIZE, RATERS, BATCH = 128, 4, 12
INFO = DatasetInfo("bench", 1, RATERS, ("a", "b", "c", "d"), (SIZE, SIZE))
METHODS = ("phiseg", "mose", "tab")


def make(name: str):
    torch.manual_seed(0)
    method = create_method(name)
    return method, method.build(INFO)


@pytest.mark.parametrize("name", METHODS)
def test_training_step_batch12(benchmark, name):
    method, model = make(name)
    stage = method.stages()[0]
    method.begin_stage(model, stage)
    bench_train_step(benchmark, method, model, stage, random_batch(BATCH, RATERS, SIZE), BATCH)


@pytest.mark.parametrize("n", [10, 50])
@pytest.mark.parametrize("name", METHODS)
def test_predict_batch12(benchmark, name, n):
    method, model = make(name)
    model.eval()
    images = random_batch(BATCH, RATERS, SIZE).image
    pred = benchmark.pedantic(method.predict, args=(model, images, n), rounds=2, iterations=1,
                              warmup_rounds=1)
    assert pred.capabilities() == method.info.capabilities
    assert pred.samples.shape == (BATCH, n, SIZE, SIZE)
    record(benchmark, BATCH)
