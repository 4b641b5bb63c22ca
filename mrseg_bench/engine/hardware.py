"""What the numbers were measured on: ``hardware_info(device)``.

Keys: ``device`` (``cpu``, ``cuda:0``, ...), ``threads`` (torch intra-op threads),
``interop_threads``, ``cpu_count`` (logical CPUs; ``os.cpu_count``), ``cpu_model`` (``model name``
in /proc/cpuinfo on Linux, ``sysctl machdep.cpu.brand_string`` on macOS, else
``platform.processor()``/``platform.machine()``), ``gpu_name`` (CUDA device name, ``"Apple MPS"``,
or None on CPU), ``torch``, ``cuda`` (torch's CUDA version or None), ``cudnn`` (version or None),
``device_name`` (the GPU name on a GPU, the CPU model on CPU: what a table's device column shows),
``load_avg_1m`` (the 1-minute load average before the run's local grid started, else when captured:
``load_average``; None where unknown).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's marketing name, best effort (never raises)."""
    try:
        if sys.platform.startswith("linux"):
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
        elif sys.platform == "darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_name(device: torch.device) -> str | None:
    """The accelerator's name for a CUDA or MPS ``device``; None on CPU."""
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError):
            return None
    if device.type == "mps":
        return "Apple MPS"
    return None


def hardware_info(device: torch.device | str) -> dict[str, Any]:
    """The machine and software a measurement ran on (see the module doc for the keys)."""
    device = torch.device(device)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    cpu = cpu_model()
    gpu = gpu_name(device)
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "gpu_name": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "device_name": gpu or cpu,
        "load_avg_1m": load_average(),
    }


GRID_LOAD_ENV = "MRSEG_BENCH_LOAD_AT_GRID_START"


def current_load() -> float | None:
    """The 1-minute load average now (None where the OS has none)."""
    try:
        return round(float(os.getloadavg()[0]), 2)
    except (OSError, AttributeError):
        return None


def load_average() -> float | None:
    """The load a run started under: ``MRSEG_BENCH_LOAD_AT_GRID_START`` when the local executor
    set it (the 1-minute load average before its grid started, so a run does not count the runs
    of its own grid that ran just before it), else ``current_load()``."""
    try:
        return round(float(os.environ[GRID_LOAD_ENV]), 2)
    except (KeyError, ValueError):
        return current_load()
