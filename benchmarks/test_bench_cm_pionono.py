"""Speed of cm.global, cm.pixel and pionono on CPU at reference sizes (resnet34 backbone, 1 channel,
4 raters, 128x128, default configs: two classes for the CM methods, every valid rater
reconstructed).

A training step at batch 12 (forward, backward, Adam step over the stage's param groups, built
by ``engine.optim.build_optimizer`` as the engine does; the CM methods' trace-minimisation stage)
and ``predict`` at batch 12 with N = 10 (pionono: 20 draws per rater for the personalised maps +
10 spread samples in one batched pass; the CM methods are deterministic). ``extra_info`` holds
ms per call and images/s. Run: ``pytest benchmarks/test_bench_cm_pionono.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch
from bench_utils import bench_train_step, random_batch, record

from mrseg_bench.method import create_method
from mrseg_bench.types import DatasetInfo

SIZE, RATERS, BATCH, N = 128, 4, 12, 10
INFO = DatasetInfo("bench", 1, RATERS, ("a", "b", "c", "d"), (SIZE, SIZE))
NAMES = ["cm.global", "cm.pixel", "pionono"]


def make(name: str):
    torch.manual_seed(0)
    method = create_method(name, {"encoder_name": "resnet34"})
    return method, method.build(INFO)


@pytest.mark.parametrize("name", NAMES)
def test_training_step_batch12(benchmark, name):
    method, model = make(name)
    stage = method.stages()[-1]
    method.begin_stage(model, stage)
    bench_train_step(benchmark, method, model, stage, random_batch(BATCH, RATERS, SIZE), BATCH)


@pytest.mark.parametrize("name", NAMES)
def test_inference_batch12_n10(benchmark, name):
    method, model = make(name)
    model.eval()
    images = random_batch(BATCH, RATERS, SIZE).image
    pred = benchmark.pedantic(method.predict, args=(model, images, N), rounds=2, iterations=1, warmup_rounds=1)
    assert pred.capabilities() == method.info.capabilities
    assert pred.personalized.shape == (BATCH, RATERS, SIZE, SIZE)
    if name == "pionono":
        assert pred.samples.shape == (BATCH, N, SIZE, SIZE)
    record(benchmark, BATCH)
