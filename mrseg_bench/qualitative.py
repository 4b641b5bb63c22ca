"""The ``qualitative.pt`` contract between a run and the report.

After evaluation the worker may save, for a few test cases (the same cases, in the same order,
for every method of a dataset: e.g. the first K of the test split),
``<run_dir>/qualitative.pt`` = ``torch.save(dict)`` with:

- ``"image"``: float ``[K,C,H,W]`` (the network input),
- ``"masks"``: uint8 ``[K,R,H,W]`` rater masks,
- ``"samples"``: float ``[K,N,H,W]`` probabilities or None (DIVERSE; a few samples suffice),
- ``"personalized"``: float ``[K,R,H,W]`` or None (PERSONALIZED),
- ``"consensus"``: float ``[K,H,W]`` or None (CONSENSUS),
- ``"case_ids"``: list of K str (optional; used to check methods show the same cases).

``save_qualitative`` writes it (CPU tensors, samples capped); ``load_qualitative`` reads it
with ``torch.load(weights_only=True)`` (no arbitrary pickles) and validates shapes, raising
ValueError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .types import Prediction

QUALITATIVE_FILE = "qualitative.pt"
_KEYS = ("image", "masks", "samples", "personalized", "consensus")


def save_qualitative(run_dir: str | Path, image: torch.Tensor, masks: torch.Tensor,
                     prediction: Prediction, case_ids: list[str] | None = None,
                     max_cases: int = 4, max_samples: int = 4) -> Path:
    """Write ``<run_dir>/qualitative.pt`` for the first ``max_cases`` cases (see module doc)."""
    k = min(int(image.shape[0]), max_cases)

    def cut(t: torch.Tensor | None, n: int | None = None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t[:k].detach().float().cpu() if t.dtype.is_floating_point else t[:k].detach().cpu()
        return t[:, :n] if n is not None else t

    payload: dict[str, Any] = {
        "image": cut(image), "masks": cut(masks).to(torch.uint8),
        "samples": cut(prediction.samples, max_samples),
        "personalized": cut(prediction.personalized), "consensus": cut(prediction.consensus),
        "case_ids": [str(c) for c in (case_ids or [])[:k]],
    }
    path = Path(run_dir) / QUALITATIVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def load_qualitative(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``qualitative.pt`` (see module doc); ValueError names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such qualitative file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a readable qualitative.pt ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or "image" not in data or "masks" not in data:
        raise ValueError(f"{path}: expected a dict with keys {list(_KEYS)}")
    image, masks = data["image"], data["masks"]
    if not (isinstance(image, torch.Tensor) and image.ndim == 4):
        raise ValueError(f"{path}: 'image' must be a [K,C,H,W] tensor")
    if not (isinstance(masks, torch.Tensor) and masks.ndim == 4):
        raise ValueError(f"{path}: 'masks' must be a [K,R,H,W] tensor")
    k, _, h, w = image.shape
    if masks.shape[0] != k or masks.shape[2:] != (h, w):
        raise ValueError(f"{path}: 'masks' {tuple(masks.shape)} does not match 'image' {tuple(image.shape)}")
    expect = {"samples": 4, "personalized": 4, "consensus": 3}
    for key, nd in expect.items():
        t = data.get(key)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.ndim != nd or t.shape[0] != k or tuple(t.shape[-2:]) != (h, w):
            raise ValueError(f"{path}: {key!r} must be a tensor of {nd} dims [K,...,H,W] with K={k}, "
                             f"H,W={h},{w}; got {getattr(t, 'shape', type(t).__name__)}")
    ids = data.get("case_ids") or []
    if not isinstance(ids, list | tuple) or (ids and len(ids) != k):
        raise ValueError(f"{path}: 'case_ids' must be a list of {k} strings")
    out = {key: data.get(key) for key in _KEYS}
    out["case_ids"] = [str(c) for c in ids]
    return out


def as_prediction(data: dict[str, Any]) -> Prediction:
    return Prediction(samples=data.get("samples"), personalized=data.get("personalized"),
                      consensus=data.get("consensus"))
