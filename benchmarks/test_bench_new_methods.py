"""SSN, Flow-SSN and CCDM cost relative to a plain U-Net, measured in the same process.

Sizes: each method's CPU-sized ``default`` preset section at 64x64, batch 4, 1 channel, 4 raters
(the paper sizes at 128x128 make CCDM's 250-step sampling take hours on a CPU; its time per
sample at the published step count is a profile column, ``sample_ms_published_steps``). The
reference is the ``unet`` method at the same preset (smp U-Net, resnet18, decoder
[64,32,32,16,16]): one training step (forward, backward, Adam) and one forward pass, each the
minimum wall time over ``REF_ROUNDS`` calls, timed once per module.

Per method: a training step, and ``predict`` at N = 10 and N = 50 (all samples in batched passes,
chunked by ``sample_chunk``). ``extra_info`` records ms per call, images/s and the ratio to the
U-Net step (training) or forward (predict): ``ratio_to_unet_step`` / ``ratio_to_unet_forward``,
the benchmark's minimum over the reference's minimum. Ratios are recorded, never gated. Run on
an idle machine: ``pytest benchmarks/test_bench_new_methods.py --benchmark-only``;
``--benchmark-disable`` runs every call once as a smoke test (no timings, no ratios).
"""

from __future__ import annotations

import time

import pytest
import torch
from bench_utils import bench_train_step, random_batch, record

from mrseg_bench.method import create_method
from mrseg_bench.presets import load_preset
from mrseg_bench.types import DatasetInfo

SIZE, RATERS, BATCH, REF_ROUNDS = 64, 4, 4, 5
INFO = DatasetInfo("bench", 1, RATERS, ("a", "b", "c", "d"), (SIZE, SIZE))
METHODS = ("ssn", "flow_ssn", "ccdm")


def make(name: str):
    torch.manual_seed(0)
    preset = load_preset("default")
    method = create_method(name, preset.method_overrides(name, create_method(name).cfg))
    return method, method.build(INFO)


def _min_time(fn, rounds: int = REF_ROUNDS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@pytest.fixture(scope="module")
def unet_reference(request) -> dict[str, float] | None:
    """Seconds of one plain U-Net training step and forward pass (None when timing is off)."""
    if request.config.getoption("benchmark_disable", False):
        return None
    from mrseg_bench.engine.optim import build_optimizer

    method, model = make("unet")
    stage = method.stages()[0]
    method.begin_stage(model, stage)
    method.train_mode(model, stage)
    opt = build_optimizer(method, model, stage)
    data = random_batch(BATCH, RATERS, SIZE)

    def step():
        opt.zero_grad(set_to_none=True)
        method.training_step(model, data, stage)["loss"].backward()
        opt.step()

    step_s = _min_time(step)
    model.eval()
    with torch.no_grad():
        forward_s = _min_time(lambda: model(data.image))
    return {"step": step_s, "forward": forward_s}


def _ratio(benchmark, key: str, reference: float | None) -> None:
    if benchmark.stats is not None and reference:
        benchmark.extra_info[f"ratio_to_unet_{key}"] = round(benchmark.stats.stats.min / reference, 2)


@pytest.mark.parametrize("name", METHODS)
def test_training_step_relative_to_unet(benchmark, unet_reference, name):
    method, model = make(name)
    stage = method.stages()[0]
    method.begin_stage(model, stage)
    bench_train_step(benchmark, method, model, stage, random_batch(BATCH, RATERS, SIZE), BATCH)
    _ratio(benchmark, "step", unet_reference and unet_reference["step"])


@pytest.mark.parametrize("n", [10, 50])
@pytest.mark.parametrize("name", METHODS)
def test_predict_relative_to_unet_forward(benchmark, unet_reference, name, n):
    method, model = make(name)
    model.eval()
    images = random_batch(BATCH, RATERS, SIZE).image
    pred = benchmark.pedantic(method.predict, args=(model, images, n), rounds=2, iterations=1, warmup_rounds=1)
    assert pred.capabilities() == method.info.capabilities
    assert pred.samples.shape == (BATCH, n, SIZE, SIZE)
    record(benchmark, BATCH)
    _ratio(benchmark, "forward", unet_reference and unet_reference["forward"])
