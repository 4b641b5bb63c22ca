"""Device, precision, seeding and RNG-state helpers for the engine."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

DEVICE_HELP = "auto|cpu|cuda|cuda:N|mps (auto: cuda, then mps, then cpu)"
PRECISIONS = ("bf16", "fp32")


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, then mps, then cpu; else the named device.

    ValueError (naming the valid choices) for an unknown spec or an unavailable device.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ValueError("--device mps: MPS is not available on this machine; use auto or cpu")
        return torch.device("mps")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available on this machine; use auto or cpu")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise ValueError(f"--device {spec!r} is not valid; choose {DEVICE_HELP}")


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``None``/``auto`` -> bf16 on CUDA, fp32 elsewhere. bf16 is only used on CUDA."""
    if precision in (None, "", "auto"):
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r} is not valid; choose auto, {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA/CPU when ``precision == 'bf16'``, else a no-op context."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (in place) with every 4-D parameter and buffer in channels_last layout; other
    ranks keep theirs. ``Module.to(memory_format=channels_last)`` refuses a model holding any 5-D
    tensor, such as D-Persona's stacked per-rater head weights ``[R, out, in, k, k]``."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, stage_index: int = 0) -> int:
    """A data-order seed that is a pure function of (seed, stage, epoch)."""
    return (int(seed) * 1_000_003 + stage_index * 10_007 + epoch) % 2**63


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state (python, numpy, torch CPU and CUDA) as tensors and plain numbers,
    so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
    version, py_words, py_gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python_version": int(version),
        "python": torch.tensor(py_words, dtype=torch.int64),
        "python_gauss": py_gauss,
        "numpy_kind": str(kind),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_gauss": float(cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by ``get_rng_state`` (or by its older tuple/ndarray form)."""
    if "numpy_keys" in state:
        words = tuple(int(w) for w in state["python"].tolist())
        random.setstate((state["python_version"], words, state["python_gauss"]))
        np.random.set_state((state["numpy_kind"], state["numpy_keys"].numpy().astype(np.uint32),
                             state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    else:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def peak_memory_mb(device: torch.device) -> float:
    """CUDA ``max_memory_allocated`` on CUDA; otherwise this process's lifetime peak RSS (MB),
    which only grows across a grid: the profiler measures per phase in a fresh process instead
    (``engine.profile``, ``engine.memory``)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    from .memory import peak_rss_mb

    return peak_rss_mb()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
