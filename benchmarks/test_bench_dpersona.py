"""D-Persona speed on CPU, reference sizes (resnet34 backbone, 1 channel, 4 raters, 128x128).

- stage-1 training step, batch 12: forward (K = 10 bound samples, posterior reconstruction),
  backward, Adam step.
- inference (``predict``: N prior samples + personalised outputs from a bank of 500), batch 4,
  with N = 50 and N = 1. Batched decoding makes N = 50 cost far less than 50 x (N = 1).
``extra_info`` holds ms per call and images/s. Run:
``pytest benchmarks/test_bench_dpersona.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch
from bench_utils import random_batch, record

from mrseg_bench.methods.dpersona import DPersonaConfig, dpersona
from mrseg_bench.types import DatasetInfo, MultiRaterBatch

SIZE, RATERS = 128, 4
INFO = DatasetInfo("bench", 1, RATERS, ("a", "b", "c", "d"), (SIZE, SIZE))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    method = dpersona(DPersonaConfig())
    return method, method.build(INFO)


def batch(n: int) -> MultiRaterBatch:
    return random_batch(n, RATERS, SIZE)


def test_stage1_training_step_batch12(benchmark, setup):
    method, model = setup
    stage = method.stages()[0]
    method.begin_stage(model, stage)
    method.train_mode(model, stage)
    opt = torch.optim.Adam(method.stage_parameters(model, stage), lr=1e-4)
    data = batch(12)

    def step():
        opt.zero_grad(set_to_none=True)
        method.training_step(model, data, stage)["loss"].backward()
        opt.step()

    benchmark.pedantic(step, rounds=2, iterations=1, warmup_rounds=1)
    record(benchmark, 12)


@pytest.mark.parametrize("n_samples", [50, 1], ids=lambda n: f"N{n}")
def test_inference_batch4(benchmark, setup, n_samples):
    method, model = setup
    images = batch(4).image
    pred = benchmark.pedantic(method.predict, args=(model, images, n_samples), rounds=3, iterations=1,
                              warmup_rounds=1)
    assert pred.samples.shape == (4, n_samples, SIZE, SIZE)
    record(benchmark, 4)
