"""The measurements of the GPU check, each run in a child process by the driver (a crash, a hang
or a CUDA out-of-memory there costs one step, not the whole check):

    python -m mrseg_bench.gpucheck.probes NAME ARGS_JSON RESULT_PATH

writes ``{"ok": true, "value": ...}`` (or ``{"ok": false, "error": "..."}``) to ``RESULT_PATH``.
Probes: ``environment`` (what the machine and software are), ``profile`` (``profile_method``
at a preset's sizes, one method, several precisions), ``ratios`` (``benchmarks/speed_ratios.py``
on a device). ``quickstart_runs`` (driver side) reads a quick start's ``result.json`` files.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PROFILE_KEYS = ("params", "flops_per_image", "train_images_per_s", "infer_images_per_s", "latency_p50_ms",
                "latency_p95_ms", "peak_memory_train_mb", "peak_memory_predict_mb", "peak_memory_mb")


def finite_or_none(value: Any) -> float | None:
    """A JSON-safe number: NaN / inf / non-numbers -> None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment(device: str = "cuda") -> dict[str, Any]:
    """Python, torch, CUDA, the GPU (name, memory, capability, driver) and the CPU."""
    import torch

    import mrseg_bench
    from mrseg_bench.engine.hardware import hardware_info

    cuda = torch.cuda.is_available()
    dev = torch.device(device if (cuda or device == "cpu") else "cpu")
    info = hardware_info(dev)
    props = torch.cuda.get_device_properties(dev) if dev.type == "cuda" else None
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cudnn": info["cudnn"],
        "cuda_available": cuda, "gpu_count": torch.cuda.device_count() if cuda else 0,
        "device": str(dev), "gpu_name": info["gpu_name"],
        "gpu_memory_gib": round(props.total_memory / 2**30, 1) if props is not None else None,
        "gpu_capability": f"{props.major}.{props.minor}" if props is not None else None,
        "driver": _driver_version() if cuda else None,
        "cpu_count": info["cpu_count"], "cpu_model": info["cpu_model"], "threads": info["threads"],
        "mrseg_bench": mrseg_bench.__version__, "git_commit": _git_commit(),
    }


def profile(methods: list[str], preset: str, precisions: list[str], n_samples: int, device: str,
            sets: list[str] | None = None) -> list[dict[str, Any]]:
    """``profile_method`` for each of ``methods`` at ``preset``'s sizes (one batch of its
    synthetic data, ``sets`` applied), once per precision; one record per method and precision
    (a failing one records its error and the next still runs)."""
    import torch

    from mrseg_bench.engine.data import make_batches, prepare
    from mrseg_bench.engine.device import reset_peak_memory, seed_everything, to_channels_last
    from mrseg_bench.engine.profile import profile_method
    from mrseg_bench.engine.threads import set_run_threads
    from mrseg_bench.run.plan import plan_grid

    out = []
    for method, precision in [(m, p) for m in methods for p in precisions]:
        rec: dict[str, Any] = {"method": method, "precision": precision, "preset": preset,
                               "n_samples": int(n_samples), "error": None, **dict.fromkeys(PROFILE_KEYS)}
        try:
            plan = plan_grid(method, "synthetic", [0], preset, [*(sets or []), f"run.n_samples={n_samples}"],
                             None, device, precision)
            spec = plan.specs[0]
            ds, cfg = plan.datasets[spec.dataset], spec.run_cfg
            set_run_threads(cfg.num_threads)
            seed_everything(0)
            model = spec.method_obj.build(ds.info).to(spec.torch_device)
            if cfg.channels_last:
                model = to_channels_last(model)
            reset_peak_memory(spec.torch_device)
            idx = list(range(min(cfg.eval_bs, len(ds))))
            batch = prepare(next(iter(make_batches(ds, idx, cfg.eval_bs, False, 0))), spec.torch_device,
                            cfg.image_size, cfg.channels_last)
            rows = profile_method(spec.method_obj, model, batch, spec.torch_device, cfg.n_samples, spec.precision,
                                  cfg.profile_warmup, cfg.profile_steps, cfg.latency_repeats, compile=cfg.compile)
            vals = {r["name"]: r["value"] for r in rows}
            rec.update(device=str(spec.torch_device), batch_size=len(batch), image_size=int(batch.image.shape[-1]),
                       **{k: finite_or_none(vals.get(k)) for k in PROFILE_KEYS})
            rec.update({k: finite_or_none(v) for k, v in vals.items() if k.startswith("train_images_per_s_")})
            del model, batch
        except Exception as exc:  # noqa: BLE001 - recorded; the next precision still runs
            rec["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        out.append(rec)
    return out


def ratios(device: str, rounds: int) -> dict[str, Any]:
    """The speed gate's ratios (``benchmarks/speed_ratios.py``) on ``device``, each on its own
    (one failing ratio leaves the others)."""
    import importlib.util

    path = REPO / "benchmarks" / "speed_ratios.py"
    spec = importlib.util.spec_from_file_location("speed_ratios", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"{path}: the speed-ratio module is missing")
    sr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sr)
    values: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for name in sr.RATIOS:
        try:
            values[name] = finite_or_none(sr.measure(rounds, {name}, device)[name])
        except Exception as exc:  # noqa: BLE001
            values[name] = None
            errors[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return {"device": device, "rounds": int(rounds), "timing": "wall" if device.startswith("cuda") else "cpu",
            "values": values, "errors": errors}


RUN_KEYS = ("train_images_per_s_run", "peak_memory_train_mb", "peak_memory_predict_mb", "train_images_per_s",
            "latency_p50_ms", "eval_wall_s")


def quickstart_runs(out: Path) -> list[dict[str, Any]]:
    """One record per ``result.json`` under ``out``: method, status, wall time, a few profile
    figures, error (unreadable files are recorded as such)."""
    from mrseg_bench.run_folder import read_result

    runs = []
    for path in sorted(Path(out).rglob("result.json")):
        try:
            res = read_result(path)
        except ValueError as exc:
            runs.append({"method": None, "status": "unreadable", "wall_s": None, "error": str(exc),
                         **dict.fromkeys(RUN_KEYS)})
            continue
        row, prof = res["run"], {p["name"]: p["value"] for p in res.get("profile", [])}
        runs.append({"method": row.get("method"), "status": row.get("status"),
                     "wall_s": finite_or_none(row.get("wall_s")), "error": row.get("error"),
                     **{k: finite_or_none(prof.get(k)) for k in RUN_KEYS}})
    return runs


PROBES = {"environment": environment, "profile": profile, "ratios": ratios}


def main(argv: list[str]) -> int:
    """``NAME ARGS_JSON RESULT_PATH``: run a probe, write its outcome; exit 0 when it worked."""
    name, args, dest = argv[0], json.loads(argv[1]), Path(argv[2])
    try:
        out = {"ok": True, "value": PROBES[name](**args)}
    except Exception as exc:  # noqa: BLE001 - the driver records it
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    dest.write_text(json.dumps(out, allow_nan=False, default=str), encoding="utf-8")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
