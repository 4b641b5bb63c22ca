"""Profiling that measures its labels (issue 11.6): every stage timed, enough latency repeats for
p95, CPU peak memory per phase from a fresh process (independent of what ran before), the
compiled model profiled, hardware recorded."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from test_engine_toys import Toy, ToyConfig, ToyFlat, ToySet

from mrseg_bench.engine import profile as prof
from mrseg_bench.engine.hardware import hardware_info
from mrseg_bench.method import Stage
from mrseg_bench.types import collate_samples

CPU = torch.device("cpu")


def _vals(rows):
    return {r["name"]: r["value"] for r in rows}


def test_schedule_rate_weights_stages_by_epochs():
    stages = [Stage("a", 3, 1e-3), Stage("b", 1, 1e-3)]
    # 3 epochs at 10 img/s and 1 epoch at 40 img/s: 4 epoch-units in 0.3 + 0.025 s-per-image units
    assert prof.schedule_images_per_s({"a": 10.0, "b": 40.0}, stages) == pytest.approx(4 / (3 / 10 + 1 / 40))
    assert math.isnan(prof.schedule_images_per_s({"a": float("nan"), "b": 4.0}, stages))


def test_every_stage_timed_and_latency_repeats_enough_for_p95(monkeypatch):
    torch.manual_seed(0)
    method, ds = Toy(ToyConfig(width=4)), ToySet(4)
    model = method.build(ds.info)
    batch = collate_samples([ds[i] for i in range(4)])
    seen: list[str] = []
    step = prof._train_step

    def spy(method_, net, stage, *a, **k):
        seen.append(stage.name)
        return step(method_, net, stage, *a, **k)

    counts: list[int] = []
    timed = prof._timed

    def count(fn, device, warmup, repeats):
        counts.append(repeats)
        return timed(fn, device, warmup, repeats)

    monkeypatch.setattr(prof, "_train_step", spy)
    monkeypatch.setattr(prof, "_timed", count)
    v = _vals(prof.profile_method(method, model, batch, CPU, 3, steps=2, repeats=3, memory="off"))
    assert seen == ["stage1", "stage2"]  # dpersona-like stage 2 is timed too
    assert v["train_images_per_s_stage1"] > 0 and v["train_images_per_s_stage2"] > 0
    assert counts[-1] == prof.MIN_REPEATS_P95  # latency: at least 20 samples behind p95
    assert counts[:2] == [prof.MIN_TRAIN_STEPS] * 2 and counts[2] == prof.MIN_INFER_REPEATS


def test_compiled_model_is_profiled(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **k: calls.append(type(m).__name__) or m)
    torch.manual_seed(0)
    method, ds = ToyFlat(ToyConfig(width=4)), ToySet(4)
    model = method.build(ds.info)
    batch = collate_samples([ds[i] for i in range(2)])
    prof.profile_method(method, model, batch, CPU, 2, steps=1, repeats=1, compile=True, memory="off")
    assert calls == ["ToyNet", "ToyNet"]  # the training copy and the inference model


def test_hardware_info_names_the_machine():
    info = hardware_info("cpu")
    assert info["threads"] == torch.get_num_threads() and info["torch"] == torch.__version__
    assert info["cpu_model"] and info["gpu_name"] is None and info["device_name"] == info["cpu_model"]
    if sys.platform.startswith("linux"):
        names = [x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")]
        assert not names or info["cpu_model"] == names[0]


def test_peak_rss_units():
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux-only")
    assert prof.current_rss_mb() <= prof.peak_rss_mb() < 1e6
    assert prof.reset_peak_rss()


def _profile(method, memory="subprocess"):
    torch.manual_seed(0)
    ds = ToySet(8, image_size=32)
    model = method.build(ds.info)
    batch = collate_samples([ds[i] for i in range(8)])
    return _vals(prof.profile_method(method, model, batch, CPU, 4, steps=3, repeats=20, memory=memory))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-phase peaks need /proc (Linux)")
def test_peak_memory_does_not_depend_on_grid_order():
    """A then B, then (after this process's peak is pushed up by 400 MB, as a big earlier run
    would) B then A: per-phase peaks agree within 5% + 20 MB (the process-lifetime ru_maxrss this
    replaces would have grown by the ballast)."""
    a, b = Toy(ToyConfig(width=48)), ToyFlat(ToyConfig(width=32))
    first = {"A": _profile(a), "B": _profile(b)}
    ballast = torch.ones(400 * 2**20 // 4)  # 400 MB touched in this process
    assert prof.peak_rss_mb() > 400
    del ballast
    second = {"B": _profile(b), "A": _profile(a)}
    for m in ("A", "B"):
        for key in ("peak_memory_predict_mb", "peak_memory_train_mb", "peak_memory_mb"):
            x, y = first[m][key], second[m][key]
            assert math.isfinite(x) and abs(x - y) <= 0.05 * x + 20, (m, key, x, y)
        assert first[m]["peak_memory_train_mb"] >= first[m]["peak_memory_baseline_mb"]
    print({f"{k}{m}": {n: round(v, 1) for n, v in d.items() if "memory" in n}
           for k, run in (("1", first), ("2", second)) for m, d in run.items()})


def test_throughput_does_not_depend_on_grid_order():
    """Grids A,B and B,A, interleaved in time (3 rounds, so load drifts on a shared machine hit
    both orders): each method's best throughput (other processes only slow a run down, so the
    best of 3 is the stable estimate) agrees across the orders within 2.5x."""

    a, b = Toy(ToyConfig(width=48)), ToyFlat(ToyConfig(width=32))
    got: dict[tuple[str, str], list[dict]] = {}
    for _ in range(3):
        for order in ("AB", "BA"):
            for m in order:
                got.setdefault((order, m), []).append(_profile(a if m == "A" else b, "off"))
    for m in "AB":
        for key in ("train_images_per_s", "infer_images_per_s"):
            x = max(r[key] for r in got[("AB", m)])
            y = max(r[key] for r in got[("BA", m)])
            assert 1 / 2.5 < x / y < 2.5, (m, key, x, y)
