"""Where each of several runs started at once goes: GPUs shared round-robin, or one GPU for all.

``place_run(i, device, n_gpus, one_gpu=None)`` -> the device string run ``i`` (0-based, in
start order) uses:

- ``device`` ``auto`` or ``cuda`` (no index) with ``n_gpus >= 1`` visible GPUs:
  ``cuda:(i mod n_gpus)``, or ``cuda:one_gpu`` for every run when ``one_gpu`` is given (several
  runs packed on one large GPU);
- any other ``device`` (``cpu``, ``mps``, an explicit ``cuda:N``), or no GPU: ``device`` itself.

``place_runs(n, ...)`` is the list for runs 0..n-1; ``visible_gpus()`` is
``torch.cuda.device_count()`` (0 without CUDA). Pure functions: the caller passes the count, so
tests fake it. Each run is its own process, so its peak memory (``max_memory_allocated``, which
counts the calling process's tensors only) stays its own however many share the GPU.
"""

from __future__ import annotations


def visible_gpus() -> int:
    """CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applies); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def place_run(i: int, device: str, n_gpus: int, one_gpu: int | None = None) -> str:
    """The device of run ``i`` (see the module doc). ValueError for a negative ``i`` or an
    ``one_gpu`` that is not one of the ``n_gpus``."""
    if i < 0:
        raise ValueError(f"run index {i}: must be >= 0")
    if one_gpu is not None and n_gpus >= 1 and not 0 <= one_gpu < n_gpus:
        raise ValueError(f"GPU {one_gpu}: only {n_gpus} visible (cuda:0..cuda:{n_gpus - 1})")
    spec = (device or "auto").strip().lower()
    if spec not in ("auto", "cuda") or n_gpus < 1:
        return device
    return f"cuda:{one_gpu if one_gpu is not None else i % n_gpus}"


def place_runs(n: int, device: str, n_gpus: int, one_gpu: int | None = None) -> list[str]:
    """``[place_run(i, ...) for i in range(n)]``."""
    return [place_run(i, device, n_gpus, one_gpu) for i in range(n)]
