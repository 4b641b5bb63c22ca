"""Helpers shared by the dataset loaders: option checking, root checks, resizing, validation."""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import _convert
from ..registry import check_dataset_options, register_dataset


def dataset_factory(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``f(root=None, **options)`` as dataset ``name``.

    Options are converted to the factory's annotated types (the planner may pass CLI strings);
    an unknown option raises TypeError listing the valid ones.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn)

        @functools.wraps(fn)
        def wrapper(root: str | Path | None = None, **options: Any) -> Any:
            check_dataset_options(name, options, fn, error=TypeError)
            conv = {k: _convert(v, hints[k], k, f"dataset {name!r}") if k in hints else v
                    for k, v in options.items()}
            return fn(root, **conv)

        register_dataset(name)(wrapper)
        return wrapper

    return deco


def require_root(root: str | Path | None, dataset: str, layout: str) -> Path:
    """``root`` as a Path, or FileNotFoundError saying where the data is expected and its layout."""
    if root is None:
        raise FileNotFoundError(f"dataset {dataset!r} needs a data root (--data-root); expected layout:\n{layout}")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {dataset!r}: data root {path} does not exist; expected layout:\n{layout}")
    return path


def to_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def resize_image(image: torch.Tensor, size: tuple[int, int] | None, mode: str = "bilinear") -> torch.Tensor:
    """Resize ``image [C,H,W]`` float to ``size`` (no-op when it already has that size)."""
    if size is None or tuple(image.shape[-2:]) == size:
        return image
    if mode == "nearest":
        return F.interpolate(image[None], size=size, mode="nearest-exact")[0]
    return F.interpolate(image[None], size=size, mode=mode, align_corners=False, antialias=True)[0]


def resize_masks(masks: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize binary ``masks [R,H,W]`` uint8 with nearest-neighbour (values stay in {0,1})."""
    if size is None or tuple(masks.shape[-2:]) == size:
        return masks
    return F.interpolate(masks[None].float(), size=size, mode="nearest-exact")[0].to(torch.uint8)


def check_image_array(arr: np.ndarray, where: str) -> None:
    """ValueError naming ``where`` (file and case) for an image with no pixels (a 0 in its
    shape) or with NaN/inf pixels: data errors, caught when the data is read."""
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ValueError(f"{where}: image is empty (shape {arr.shape}); every image needs at least one pixel")
    if arr.dtype.kind in "fc":
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(arr.size - finite.sum()) - n_nan
            raise ValueError(f"{where}: image has {n_nan} NaN and {n_inf} infinite pixel(s) of {arr.size}; "
                             "images must be finite")


def binary_masks(arr: np.ndarray, where: str) -> np.ndarray:
    """Check that ``arr`` holds only 0/1 (bool or numbers) and return it as uint8."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{where}: masks must be binary 0/1, found values {bad.tolist()}")
    return arr.astype(np.uint8)


def patient_from_series_uid(series_uid: str) -> str:
    """Patient id rule for LIDC-style ``series_uid``: the text before the first ``_`` (the whole
    uid when there is none). This is the D-Persona reference's rule (``uid.split('_')[0]``)."""
    return str(series_uid).split("_", 1)[0]
