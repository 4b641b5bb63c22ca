"""Machine-independent speed figures: each op's time divided by a reference op's time, both
measured in the same process, interleaved, on one thread.

A shared or busy CI machine slows every op by a similar factor, so a ratio moves far less than a
raw time; a code change that slows one op moves its ratio. Ratios (``RATIOS``):

- ``metric_suite_per_case / matmul``: the full metric suite's time per case (16 cases 64x64,
  R = 4 raters, N = 10 samples) over one 384x384 float32 matmul;
- ``dpersona_step / unet_step``: one D-Persona stage-1 training step (forward with K bound
  samples, backward, Adam) over one step of a plain U-Net with the same backbone (resnet18,
  decoder [64,32,32,16,16]), batch 4 at 64x64;
- ``probunet_step / unet_step``: the same for the Probabilistic U-Net;
- ``dpersona_predict / unet_forward``: D-Persona inference (10 samples + personalised outputs,
  bank 32) over one U-Net forward pass, batch 4.

Timing: CPU time of the process (``time.process_time``), not wall time: on an oversubscribed
machine a long op is descheduled more often than a short one, so wall-time ratios between ops of
different lengths drift with the load (measured, 256x256 matmul: the suite/matmul wall ratio moved 2.4 -> 38 on
the shared dev machine), while CPU time only counts the work done. ``rounds`` alternations of
(op, reference); each side's time is its MINIMUM over rounds (interference only adds time: cache
and memory-bandwidth contention), the ratio is min(op) / min(reference).

Comparison (``compare``): a ratio fails when now / baseline > ``tolerance`` (slower); faster is
reported, not failed. Baseline file (``benchmarks/speed_baseline.json``)::

    {"version": 1, "tolerance": 1.5, "ratios": {"<name>": <ratio>, ...}}

On a GPU (``measure(device="cuda")``, what ``scripts/gpu_check.sh`` records) the same ops run
with their tensors on the GPU and each side is timed in wall time between device
synchronisations; those ratios compare with earlier GPU checks, not with the CPU baseline.

Command line: ``python benchmarks/speed_ratios.py [--baseline F] [--update [--repeats 3]]
[--rounds K]`` (exit 1 when a ratio is past the tolerance; ``--update`` writes each ratio's
median over ``--repeats`` measurements). ``tox -e bench`` runs it.

Measured on the shared 2-core dev machine (load 5-11 from other jobs), 7 measurements each,
min .. median .. max: suite/matmul 0.77 .. 1.29 .. 1.40 (one low outlier; 1.14 .. 1.40
without it), dpersona_step/unet_step 1.33 .. 1.38 .. 1.49, probunet_step/unet_step
1.17 .. 1.24 .. 1.28, dpersona_predict/unet_forward 2.30 .. 2.38 .. 2.52. The committed baseline
holds the medians; no measurement exceeded its median by more than x1.09, so the tolerance x1.5
leaves a wide margin against false alarms and still catches a 1.5x slowdown of one op (with a 256x256 matmul and
wall-clock times the suite/matmul ratio moved 2.4 -> 38 between two runs on the same machine).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VERSION = 1
DEFAULT_TOLERANCE = 1.5
BASELINE = Path(__file__).resolve().parent / "speed_baseline.json"
SIZE, RATERS, BATCH = 64, 4, 4
BACKBONE = {"encoder_name": "resnet18", "decoder_channels": (64, 32, 32, 16, 16)}


def time_ratio(op: Callable[[], Any], ref: Callable[[], Any], rounds: int = 7,
               inner: int = 1, ref_inner: int = 1, device: str = "cpu") -> float:
    """min over ``rounds`` of op's time per call / min of ref's, interleaved (one warm-up each).
    ``inner`` / ``ref_inner`` calls per timed block, for ops too short to time one by one.
    ``device="cuda"``: wall time with the device synchronised before each clock read (a GPU's
    work is not the process's CPU time)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    cuda = torch.device(device).type == "cuda"
    clock = time.perf_counter if cuda else time.process_time

    def block(fn: Callable[[], Any], n: int) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        for _ in range(n):
            fn()
        if cuda:
            torch.cuda.synchronize()
        return (clock() - t0) / n

    block(op, 1), block(ref, 1)
    best_op = best_ref = math.inf
    for _ in range(rounds):
        best_op = min(best_op, block(op, inner))
        best_ref = min(best_ref, block(ref, ref_inner))
    return best_op / best_ref


# --- the ops ---------------------------------------------------------------------------------
def matmul_op(n: int = 384, device: str = "cpu") -> Callable[[], Any]:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(device), torch.randn(n, n, generator=g).to(device)
    return lambda: a @ b


def metric_suite_op(cases: int = 16, size: int = SIZE, n: int = 10,
                    device: str = "cpu") -> tuple[Callable[[], Any], int]:
    """(a call scoring ``cases`` cases with every metric, cases)."""
    from mrseg_bench.metrics import MetricSuite
    from mrseg_bench.types import Prediction

    g = torch.Generator().manual_seed(0)
    raters = (torch.rand(cases, RATERS, size, size, generator=g) > 0.7).to(torch.uint8)
    pred = Prediction(samples=torch.rand(cases, n, size, size, generator=g).to(device),
                      personalized=torch.rand(cases, RATERS, size, size, generator=g).to(device),
                      consensus=torch.rand(cases, size, size, generator=g).to(device))
    raters = raters.to(device)
    valid = torch.ones(cases, RATERS, dtype=torch.bool, device=device)
    ids = [f"case{i}" for i in range(cases)]
    suite = MetricSuite()
    return (lambda: suite.score(pred, raters, valid, ids)), cases


def _batch(device: str = "cpu"):
    from mrseg_bench.types import MultiRaterBatch

    g = torch.Generator().manual_seed(1)
    return MultiRaterBatch(torch.randn(BATCH, 1, SIZE, SIZE, generator=g),
                           (torch.rand(BATCH, RATERS, SIZE, SIZE, generator=g) > 0.7).to(torch.uint8),
                           torch.ones(BATCH, RATERS, dtype=torch.bool)).to(device)


def _info():
    from mrseg_bench.types import DatasetInfo

    return DatasetInfo("bench", 1, RATERS, tuple("abcd"), (SIZE, SIZE))


def _method(name: str, cfg: dict[str, Any]):
    """A registered method with its default config plus the shared backbone and ``cfg``; seeded."""
    import dataclasses

    from mrseg_bench.registry import METHODS

    torch.manual_seed(0)
    factory = METHODS.get(name)
    return factory(dataclasses.replace(factory().cfg, **BACKBONE, **cfg))


def method_step_op(name: str, device: str = "cpu", **cfg: Any) -> Callable[[], Any]:
    """One training step (first stage) of a registered method: forward, backward, Adam."""
    method = _method(name, cfg)
    model = method.build(_info()).to(device)
    stage = method.stages()[0]
    method.begin_stage(model, stage)
    method.train_mode(model, stage)
    opt = torch.optim.Adam(method.stage_parameters(model, stage), lr=1e-4)
    data = _batch(device)

    def step():
        opt.zero_grad(set_to_none=True)
        method.training_step(model, data, stage)["loss"].backward()
        opt.step()

    return step


def method_predict_op(name: str, n_samples: int = 10, device: str = "cpu", **cfg: Any) -> Callable[[], Any]:
    """Inference of a registered method (eval mode, no_grad) on one batch."""
    method = _method(name, cfg)
    model = method.build(_info()).to(device).eval()
    images = _batch(device).image

    def predict():
        with torch.no_grad():
            return method.predict(model, images, n_samples)

    return predict


def unet_ops(device: str = "cpu") -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(training step, forward pass) of a plain U-Net, same backbone, BCE on rater 0."""
    from mrseg_bench.baselines.unet import build_unet

    torch.manual_seed(0)
    model = build_unet(1, classes=1, **BACKBONE).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = _batch(device)
    target = data.masks[:, :1].float()

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(model(data.image), target).backward()
        opt.step()

    def forward():
        model.eval()
        with torch.no_grad():
            return model(data.image)

    return step, forward


DPERSONA_CFG = {"prior_filters": (8, 16, 16, 32, 32), "bound_samples": 4, "bank_train": 16,
                "bank_test": 32}


RATIOS = ("metric_suite_per_case/matmul", "dpersona_step/unet_step", "probunet_step/unet_step",
          "dpersona_predict/unet_forward")


def measure(rounds: int = 7, only: set[str] | None = None, device: str = "cpu") -> dict[str, float]:
    """Every ratio of the module docstring (or those named in ``only``): on CPU one thread and
    CPU time; on ``device="cuda"`` every op's tensors and model on the GPU, wall time between
    synchronisations (GPU figures compare with GPU figures, never with the CPU baseline)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict[str, float] = {}
        def want(key: str) -> bool:
            return only is None or key in only

        if want("metric_suite_per_case/matmul"):
            suite, cases = metric_suite_op(device=device)
            out["metric_suite_per_case/matmul"] = time_ratio(
                suite, matmul_op(device=device), rounds, ref_inner=10, device=device) / cases
        if any(want(k) for k in RATIOS[1:]):
            unet_step, unet_forward = unet_ops(device)
            if want("dpersona_step/unet_step"):
                out["dpersona_step/unet_step"] = time_ratio(
                    method_step_op("dpersona", device, **DPERSONA_CFG), unet_step, rounds, device=device)
            if want("probunet_step/unet_step"):
                out["probunet_step/unet_step"] = time_ratio(
                    method_step_op("probunet", device, prior_filters=(8, 16, 16, 32, 32)), unet_step, rounds,
                    device=device)
            if want("dpersona_predict/unet_forward"):
                out["dpersona_predict/unet_forward"] = time_ratio(
                    method_predict_op("dpersona", 10, device, **DPERSONA_CFG), unet_forward, rounds,
                    device=device)
        return out
    finally:
        torch.set_num_threads(threads)


# --- baseline file and comparison -------------------------------------------------------------
def load_speed_baseline(path: Path) -> dict[str, Any]:
    """Read and validate a speed baseline; ValueError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"speed baseline {path}: no such file (create it with --update)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"speed baseline {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"speed baseline {path}: expected an object with \"version\": {VERSION}")
    tol = data.get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 1:
        raise ValueError(f"speed baseline {path}: \"tolerance\" must be a number > 1, got {tol!r}")
    ratios = data.get("ratios")
    if not isinstance(ratios, dict) or not ratios or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in ratios.values()):
        raise ValueError(f"speed baseline {path}: \"ratios\" must map names to numbers > 0")
    return {"version": VERSION, "tolerance": float(tol), "ratios": dict(ratios)}


def compare(baseline: dict[str, Any], now: dict[str, float],
            tolerance: float | None = None) -> tuple[bool, str]:
    """(ok, text): a ratio fails when now / baseline > tolerance, or when it was not measured."""
    tol = float(tolerance if tolerance is not None else baseline["tolerance"])
    lines, fails = [], 0
    for name, base in sorted(baseline["ratios"].items()):
        cur = now.get(name)
        if cur is None:
            fails += 1
            lines.append(f"  {name}: MISSING (baseline {base:.4g})")
            continue
        factor = cur / base
        status = "SLOWER" if factor > tol else ("faster" if factor < 1 / tol else "ok")
        fails += status == "SLOWER"
        lines.append(f"  {name}: {cur:.4g} (baseline {base:.4g}, x{factor:.2f}, allowed x{tol:g}) {status}")
    ok = fails == 0
    head = f"speed ratios: {'PASS' if ok else 'FAIL'} — {fails} past x{tol:g} of {len(baseline['ratios'])}"
    return ok, "\n".join([head, *lines])


def write_speed_baseline(path: Path, now: dict[str, float], tolerance: float = DEFAULT_TOLERANCE) -> None:
    data = {"version": VERSION, "tolerance": tolerance,
            "ratios": {k: float(f"{v:.4g}") for k, v in sorted(now.items())}}
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Measure the speed ratios and compare them with a baseline.")
    p.add_argument("--baseline", type=Path, default=BASELINE)
    p.add_argument("--update", action="store_true", help="write the measured ratios as the baseline")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=3,
                   help="with --update: measure this many times and keep each ratio's median")
    p.add_argument("--tolerance", type=float, default=None, help="override the baseline's")
    a = p.parse_args(argv)
    baseline = None
    if not a.update:
        try:
            baseline = load_speed_baseline(a.baseline)
        except (ValueError, FileNotFoundError) as exc:
            p.error(str(exc))
    if a.update:
        runs = [measure(a.rounds) for _ in range(max(a.repeats, 1))]
        now = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        prev = load_speed_baseline(a.baseline)["tolerance"] if a.baseline.is_file() else DEFAULT_TOLERANCE
        write_speed_baseline(a.baseline, now, prev)
        print(f"speed baseline {a.baseline} written: " + ", ".join(f"{k} {v:.4g}" for k, v in now.items()))
        return 0
    ok, text = compare(baseline, measure(a.rounds), a.tolerance)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
