"""Baseline speed on CPU, reference sizes (resnet34 backbone, 1 channel, 4 raters, 128x128).

For every baseline: a training step at batch 12 (forward, backward, Adam step) and inference
(``predict``) at batch 12, with N = 10 prior samples for ``probunet`` (one batched pass) and the
method's own output count otherwise. ``fusion.staple`` fuses with SimpleITK on the first call and
then serves its per-case cache (the warm-up round fills it), as it does from the second epoch on.
``extra_info`` holds ms per call and images/s. Run:
``pytest benchmarks/test_bench_baselines.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch
from bench_utils import bench_train_step, random_batch, record

from mrseg_bench.method import create_method
from mrseg_bench.types import DatasetInfo, MultiRaterBatch

SIZE, RATERS, BATCH, N_PROB = 128, 4, 12, 10
INFO = DatasetInfo("bench", 1, RATERS, ("a", "b", "c", "d"), (SIZE, SIZE))
METHODS = {
    "unet": {},
    "probunet": {},  # smp ResNet34 preset (the D-Persona comparison)
    "probunet.kohl": {"backbone": "kohl"},
    "fusion.majority": {},
    "fusion.staple": {},
    "fusion.soft": {},
    "per_rater.separate": {},
    "per_rater.multihead": {},
}


def make(key: str):
    torch.manual_seed(0)
    name = key.split(".kohl")[0]
    method = create_method(name, {"encoder_name": "resnet34", **METHODS[key]})
    return method, method.build(INFO)


def batch(n: int) -> MultiRaterBatch:
    return random_batch(n, RATERS, SIZE)


@pytest.mark.parametrize("key", list(METHODS))
def test_training_step_batch12(benchmark, key):
    method, model = make(key)
    stage = method.stages()[0]
    method.begin_stage(model, stage)
    bench_train_step(benchmark, method, model, stage, batch(BATCH), BATCH)


@pytest.mark.parametrize("key", list(METHODS))
def test_inference_batch12(benchmark, key):
    method, model = make(key)
    model.eval()
    images = batch(BATCH).image
    n = N_PROB if key.startswith("probunet") else 1
    pred = benchmark.pedantic(method.predict, args=(model, images, n), rounds=2, iterations=1,
                              warmup_rounds=1)
    assert pred.capabilities() == method.info.capabilities
    if key.startswith("probunet"):
        assert pred.samples.shape == (BATCH, N_PROB, SIZE, SIZE)
    record(benchmark, BATCH)
