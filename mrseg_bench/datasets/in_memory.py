"""In-memory datasets and the Medical-Matting / Knegt pickle schema reader.

Pickle schema (LIDC ``data_lidc.pickle`` by Knegt, ``lidc_attributes.pkl`` by Medical Matting,
QUBIQ ``brain_growth_alpha.pkl``)::

    {case_key: {'image': (H,W) uint8 0..255 or float [0,1], 'masks': [R x (H,W) 0/1],
                'series_uid': str, ['alpha': (H,W) soft map, ignored]}}

Memory: the file is streamed through the restricted unpickler (never read into one bytes object),
then each case is moved into two preallocated arrays (images float32 [N,1,H,W], masks uint8
[N,R,H,W]) and dropped from the dict as it goes, so the peak is about the unpickled data plus the
arrays (for the 15,096-slice LIDC pickle: ~1 GiB images + ~1 GiB masks as uint8).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..types import DatasetInfo, MultiRaterSample
from ._common import (
    binary_masks,
    check_image_array,
    patient_from_series_uid,
    resize_image,
    resize_masks,
)
from .base import MultiRaterDataset, Split
from .safe_pickle import safe_load


class InMemoryMultiRaterDataset(MultiRaterDataset):
    """Cases held as tensors: image [N,C,H,W] float32, masks [N,R,H,W] uint8, rater_valid [N,R].

    ``sort_masks_by_area=True`` reorders each case's masks by foreground area, smallest first
    (stable; what the D-Persona reference does for LIDC).
    """

    in_memory = True

    def __init__(self, info: DatasetInfo, images: torch.Tensor, masks: torch.Tensor,
                 case_ids: Sequence[str], group_ids: Sequence[str],
                 rater_valid: torch.Tensor | None = None, split: Split | None = None,
                 sort_masks_by_area: bool = False, source: str = "") -> None:
        n = images.shape[0]
        if not (masks.shape[0] == len(case_ids) == len(group_ids) == n):
            raise ValueError(f"{source or info.name}: {n} images, {masks.shape[0]} mask sets, "
                             f"{len(case_ids)} case ids, {len(group_ids)} group ids")
        if len(set(case_ids)) != n:
            raise ValueError(f"{source or info.name}: duplicate case ids")
        self.info = info
        self.images = images
        self.masks = masks
        self.rater_valid = (torch.ones(masks.shape[:2], dtype=torch.bool)
                            if rater_valid is None else rater_valid)
        self._case_ids = list(case_ids)
        self._group_ids = list(group_ids)
        self._split = split
        self.sort_masks_by_area = sort_masks_by_area
        self.source = source

    def __len__(self) -> int:
        return len(self._case_ids)

    def __getitem__(self, index: int) -> MultiRaterSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.info.name}: index {index} out of range for {len(self)} cases")
        masks = self.masks[index]
        valid = self.rater_valid[index]
        if self.sort_masks_by_area:
            order = torch.argsort(masks.flatten(1).sum(1), stable=True)
            masks, valid = masks[order], valid[order]
        sample = MultiRaterSample(self.images[index].clone(), masks.clone(), valid.clone(),
                                  self._case_ids[index], self._group_ids[index])
        sample.validate(f"{self.source or self.info.name}: case {sample.case_id!r}")
        return sample

    def predefined_split(self) -> Split | None:
        return self._split


def read_matting_pickle(path: Path, image_size: tuple[int, int] | None,
                        num_raters: int | None = None) -> tuple[list[str], list[str], torch.Tensor, torch.Tensor]:
    """Read the pickle schema above. Returns (case_ids, group_ids, images [N,1,H,W] float32 in
    [0,1], masks [N,R,H,W] uint8). ``group_id`` = ``series_uid`` before the first ``_``.

    Errors name the file and case: not a dict, missing keys, mask count differing between cases
    (or from ``num_raters``), non-binary masks, image sizes differing (when ``image_size`` is
    None), float images outside [0,1].
    """
    data = safe_load(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty dict {{case: {{'image', 'masks', 'series_uid'}}}}, "
                         f"got {type(data).__name__}")
    keys = list(data)
    n = len(keys)
    images = masks = None
    group_ids: list[str] = []
    for i, key in enumerate(keys):
        entry = data.pop(key)  # drop each case from the dict as it is copied (one copy in memory)
        where = f"{path}: case {key!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a dict, got {type(entry).__name__}")
        missing = [k for k in ("image", "masks", "series_uid") if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}; has {sorted(entry)}")
        img = np.asarray(entry["image"])
        if img.ndim != 2:
            raise ValueError(f"{where}: image must be 2-D (H,W), got shape {img.shape}")
        check_image_array(img, where)
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / 255.0
        else:
            img = img.astype(np.float32)
            lo, hi = float(img.min()), float(img.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(f"{where}: float image must lie in [0,1], got [{lo:.3g}, {hi:.3g}]")
        raw_masks = entry["masks"]
        if not isinstance(raw_masks, (list, tuple, np.ndarray)) or len(raw_masks) == 0:
            raise ValueError(f"{where}: 'masks' must be a non-empty list of (H,W) arrays")
        try:
            msk = np.stack([np.asarray(m) for m in raw_masks])
        except ValueError as exc:
            raise ValueError(f"{where}: masks differ in shape ({exc})") from None
        msk = binary_masks(msk, where)
        if msk.shape[1:] != img.shape:
            raise ValueError(f"{where}: masks {msk.shape[1:]} and image {img.shape} differ in size")
        expected_r = num_raters if masks is None else masks.shape[1]
        if expected_r is not None and msk.shape[0] != expected_r:
            raise ValueError(f"{where}: {msk.shape[0]} masks, but {expected_r} expected (as in the "
                             "other cases); every case needs the same number of raters")
        img_t = torch.from_numpy(img)[None]
        msk_t = torch.from_numpy(msk)
        if image_size is not None:
            img_t = resize_image(img_t, image_size).clamp_(0, 1)
            msk_t = resize_masks(msk_t, image_size)
        if images is None:
            h, w = img_t.shape[-2:]
            images = torch.empty((n, 1, h, w), dtype=torch.float32)
            masks = torch.empty((n, msk_t.shape[0], h, w), dtype=torch.uint8)
        elif img_t.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"{where}: image is {tuple(img_t.shape[-2:])}, other cases are "
                             f"{tuple(images.shape[-2:])}; pass image_size to resize")
        images[i] = img_t
        masks[i] = msk_t
        group_ids.append(patient_from_series_uid(entry["series_uid"]))
    assert images is not None and masks is not None
    return [str(k) for k in keys], group_ids, images, masks

