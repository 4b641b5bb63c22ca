"""The CUDA paths, on a real GPU (marker ``gpu``; skipped without CUDA). ``scripts/gpu_check.sh``
runs them: bf16 autocast training, the per-phase ``max_memory_allocated`` reset, compile with
channels_last, and the trained model waiting on the CPU while its profiling copy trains."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from mrseg_bench.engine import profile as prof
from mrseg_bench.engine.device import autocast
from mrseg_bench.types import DatasetInfo, MultiRaterBatch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SIZE, RATERS, BATCH = 32, 3, 4
SMALL = {"encoder_name": "resnet18", "decoder_channels": (32, 16, 16, 8, 8)}
MB = 2**20


@pytest.fixture
def dev() -> torch.device:
    torch.cuda.empty_cache()
    return torch.device("cuda")


def _info() -> DatasetInfo:
    return DatasetInfo("gpu-test", 1, RATERS, tuple("abc"), (SIZE, SIZE))


def _batch(device) -> MultiRaterBatch:
    g = torch.Generator().manual_seed(0)
    return MultiRaterBatch(torch.randn(BATCH, 1, SIZE, SIZE, generator=g),
                           (torch.rand(BATCH, RATERS, SIZE, SIZE, generator=g) > 0.6).to(torch.uint8),
                           torch.ones(BATCH, RATERS, dtype=torch.bool)).to(device)


def _dpersona():
    from mrseg_bench.registry import METHODS

    factory = METHODS.get("dpersona")
    cfg = dataclasses.replace(factory().cfg, **SMALL, prior_filters=(8, 16, 16, 32, 32), bank_train=8,
                              bank_test=8, bound_samples=2)
    return factory(cfg)


def test_bf16_autocast_training_step(dev):
    torch.manual_seed(0)
    method = _dpersona()
    model = method.build(_info()).to(dev)
    stage = method.stages()[0]
    method.begin_stage(model, stage)
    method.train_mode(model, stage)
    params = method.stage_parameters(model, stage)
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-3)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    dtypes = []
    hook = conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with autocast(dev, "bf16"):
        loss = method.training_step(model, _batch(dev), stage)["loss"]
    hook.remove()
    assert dtypes and dtypes[0] == torch.bfloat16  # the convolutions ran in bf16
    assert math.isfinite(loss.item())
    loss.backward()
    opt.step()
    assert all(p.dtype == torch.float32 for p in params)  # master weights stay fp32
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def test_peak_memory_is_reset_per_phase(dev):
    big, small = 256 * MB, 8 * MB

    def alloc(nbytes):
        def run():
            x = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).fill_(1.0)
            torch.cuda.synchronize(dev)
            del x
        return run

    base = torch.cuda.memory_allocated(dev) / MB  # whatever earlier tests left alive
    first, second = prof._CudaPhase(dev), prof._CudaPhase(dev)
    first("a", alloc(big))
    second("b", alloc(small))  # after the 256 MB phase: its own peak only
    assert first.peak >= base + big / MB
    assert base + small / MB <= second.peak < base + 64
    kept = torch.empty(128 * MB // 4, device=dev)  # per process: a live tensor counts in a phase
    third = prof._CudaPhase(dev)
    third("c", alloc(small))
    assert third.peak >= base + (128 * MB + small) / MB
    del kept


def test_trained_model_waits_on_the_cpu_while_its_copy_trains(dev):
    torch.manual_seed(0)
    method = _dpersona()
    model = method.build(_info()).to(dev)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    where: list[str] = []
    first_param = next(model.parameters())
    step = method.training_step

    def spy(net, batch, stage):
        where.append(first_param.device.type)  # the trained model, not the copy being trained
        return step(net, batch, stage)

    method.training_step = spy
    rows = {r["name"]: r["value"] for r in prof.profile_method(
        method, model, _batch(dev), dev, 4, "bf16", warmup=1, steps=3, repeats=5, memory="auto")}
    assert where and set(where) == {"cpu"}
    assert next(model.parameters()).device.type == "cuda"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k].to(v.device)), k  # weights untouched by the profiling
    for name in ("peak_memory_train_mb", "peak_memory_predict_mb", "train_images_per_s", "latency_p95_ms"):
        assert math.isfinite(rows[name]) and rows[name] > 0, name


def test_compile_with_channels_last(dev):
    from mrseg_bench.baselines.unet import build_unet

    torch.manual_seed(0)
    eager = build_unet(1, classes=1, **SMALL).to(dev).to(memory_format=torch.channels_last)
    conv = next(m for m in eager.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    net = copy.deepcopy(eager)
    compiled = torch.compile(net)
    x = _batch(dev).image.contiguous(memory_format=torch.channels_last)
    eager.eval(), net.eval()
    with torch.no_grad():
        ref, out = eager(x), compiled(x)
    rel = (out - ref).norm() / ref.norm()
    assert rel < 1e-2, float(rel)  # same function (cuDNN may use tf32 for float32 convolutions)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    target = _batch(dev).masks[:, :1].float()
    losses = []
    for _ in range(3):
        with autocast(dev, "bf16"):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(compiled(x).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
