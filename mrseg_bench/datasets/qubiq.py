"""QUBIQ 2020/2021 (quantification of uncertainties in biomedical image quantification).

Two layouts:

- NIfTI (the challenge release): ``<root>/<task>/{Training,Validation}/caseNN/image.nii.gz`` and
  ``taskXX_segYY.nii.gz`` (XX = sub-task, YY = rater). The task folder may also sit one level
  deeper (``<root>/<release>/<task>/Training``) or be ``root`` itself. Known tasks and raters:
  brain-growth 7 (1 sub-task), prostate 6 (2), brain-tumor 3 (3), kidney 3 (1); another task
  name (e.g. a 2021 2-D task) takes its rater count from the files. A case with fewer rater files
  than the task gets ``rater_valid=False`` (and an empty mask) for the missing raters; more files
  than the task's raters is an error.
  Images: 2-D slices ``(H,W)`` or ``(H,W,1)`` -> 1 channel; ``(H,W,C)`` with C <= 4 -> C
  channels (every case must have the same C); each image min-max scaled to [0,1] per channel.
  Masks must be binary (0/1; a 0/255 mask is read as 0/1).
  3-D volumes (the 2021 3-D tasks: an image ``(X,Y,Z)`` whose masks have the same shape) are cut
  into 2-D slices along ``slice_axis`` (default the last), ``slices="all"`` or ``"foreground"``
  (+ ``context`` neighbours), as the folder dataset does (``volumes.py``); a slice's case id is
  ``<phase>/<case>_s<k>`` and its group the volume ``<phase>/<case>`` (min-max scaled per volume).
  Decoded NIfTI arrays are cached (``cache.py``; ``cache=False`` turns it off).
  Predefined split: Training -> train, Validation -> test (val is carved from train by
  ``make_split``).
- Pickle (Medical Matting schema, e.g. ``brain_growth_alpha.pkl``: 39 cases x 7 raters, image
  uint8 128x128): ``{case: {'image', 'masks', 'series_uid', 'alpha'}}``; patient = ``series_uid``
  before its first ``_``; no predefined split.

Rater identity is fixed (rater k is the same annotator in every case). ``image_size`` resizes
images (bilinear, antialiased) and masks (nearest) when they differ from it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..types import DatasetInfo
from ._common import (
    binary_masks,
    check_image_array,
    dataset_factory,
    require_root,
    resize_image,
    resize_masks,
    to_size,
)
from .base import MultiRaterDataset, Split
from .cache import DecodeCache
from .in_memory import InMemoryMultiRaterDataset, read_matting_pickle
from .volumes import SLICE_MODES, keep_slices, slice_case_id

TASKS: dict[str, tuple[int, int]] = {  # task -> (raters, sub-tasks)
    "brain-growth": (7, 1),
    "prostate": (6, 2),
    "brain-tumor": (3, 3),
    "kidney": (3, 1),
}
LAYOUT = ("  <root>/<task>/Training/caseNN/image.nii.gz + taskXX_segYY.nii.gz\n"
          "  <root>/<task>/Validation/caseNN/...   (task: brain-growth, prostate, brain-tumor, kidney)\n"
          "  or a Medical Matting pickle: <root>/brain_growth_alpha.pkl (or the .pkl file as root)")
SEG_RE = re.compile(r"^task(\d+)_seg(\d+)\.nii(\.gz)?$")


def _find_phase_dirs(root: Path, task: str) -> dict[str, Path]:
    """{'Training': dir, 'Validation': dir} for ``task``: ``root/<task>``, ``root/*/<task>`` (the
    release folders may hold Training and Validation apart), or ``root`` itself."""
    found: dict[str, Path] = {}
    for cand in (root / task, *sorted(root.glob(f"*/{task}")), root):
        for phase in ("Training", "Validation"):
            if phase not in found and (cand / phase).is_dir():
                found[phase] = cand / phase
    return found


def _scan_cases(phase_dir: Path, subtask: int) -> list[tuple[str, Path, dict[int, Path]]]:
    """[(case_name, image_path, {rater: seg_path})] for the case folders of one phase."""
    out = []
    for case in sorted(p for p in phase_dir.iterdir() if p.is_dir()):
        image = next((case / n for n in ("image.nii.gz", "image.nii") if (case / n).is_file()), None)
        if image is None:
            raise FileNotFoundError(f"qubiq: {case} has no image.nii.gz")
        segs: dict[int, Path] = {}
        for f in case.iterdir():
            m = SEG_RE.match(f.name)
            if m and int(m.group(1)) == subtask:
                segs[int(m.group(2))] = f
        if not segs:
            raise FileNotFoundError(f"qubiq: {case} has no task{subtask:02d}_segYY.nii.gz files")
        out.append((case.name, image, segs))
    return out


def _decode_nifti(path: Path) -> np.ndarray:
    from .readers import load_nifti

    img = load_nifti(path)
    try:
        arr = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _read_nifti(path: Path, cache: DecodeCache | None = None) -> np.ndarray:
    return np.asarray(cache.get(path, _decode_nifti, "qubiq-nifti") if cache else _decode_nifti(path))


def _is_volume(raw: np.ndarray, mask_shapes: list[tuple[int, ...]]) -> bool:
    """A 3-D image is a volume when its masks have its 3-D shape (a 2-D multi-channel image has
    2-D masks); with no mask, when its last axis is longer than 4."""
    if raw.ndim != 3:
        return False
    return any(sh == raw.shape for sh in mask_shapes) if mask_shapes else raw.shape[-1] > 4


def _image_channels(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H,W) or (H,W,C<=4) -> float32 [C,H,W] min-max scaled per channel to [0,1]."""
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] <= 4:
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise ValueError(f"{path}: image shape {arr.shape} is not a 2-D slice (H,W), (H,W,C<=4) "
                         "or a 3-D volume with masks of the same shape")
    check_image_array(arr, str(path))
    arr = arr.astype(np.float32)
    lo = arr.min(axis=(1, 2), keepdims=True)
    hi = arr.max(axis=(1, 2), keepdims=True)
    return (arr - lo) / np.maximum(hi - lo, 1e-8)


def _read_mask(path: Path, shape: tuple[int, ...], cache: DecodeCache | None = None) -> np.ndarray:
    arr = _read_nifti(path, cache)
    if arr.shape != shape:
        raise ValueError(f"{path}: mask shape {arr.shape} differs from its image {shape}")
    if arr.size and np.isin(arr, (0, 255)).all():
        arr = arr // 255  # a 0/255 mask
    return binary_masks(arr, str(path))


def _case_arrays(image_path: Path, segs: dict[int, Path], num_raters: int, slicing: tuple[int, str, int],
                 cache: DecodeCache | None):
    """(images [S,C,H,W] float in [0,1], masks [S,R,H,W], valid [R], slice ids or None) of one
    case: a 2-D case gives S = 1; a volume its kept slices (``volumes.keep_slices``), min-max
    scaled over the whole volume."""
    raw = _read_nifti(image_path, cache)
    seg_raw = {r: _read_nifti(p, cache) for r, p in segs.items()}
    volume = _is_volume(raw, [a.shape for a in seg_raw.values()])
    shape = raw.shape if volume else raw.shape[:2]
    m = np.zeros((num_raters, *shape), dtype=np.uint8)
    v = np.zeros(num_raters, dtype=bool)
    for r, seg_path in segs.items():
        m[r - 1] = _read_mask(seg_path, shape, cache)
        v[r - 1] = True
    if not volume:
        return _image_channels(raw, image_path)[None], m[None], v, None
    axis, mode, context = slicing
    axis %= 3
    fg = m[v].any(axis=0).any(axis=tuple(a for a in range(3) if a != axis)) if v.any() else np.zeros(shape[axis], bool)
    keep = keep_slices(fg, mode, context)
    vol = raw.astype(np.float32)
    vol = (vol - vol.min()) / max(float(vol.max() - vol.min()), 1e-8)
    imgs = np.moveaxis(vol, axis, 0)[keep][:, None]  # [S,1,H,W]
    masks = np.moveaxis(m, axis + 1, 1)[:, keep].transpose(1, 0, 2, 3)  # [S,R,H,W]
    return imgs, masks, v, keep.tolist()


def _load_nifti_layout(root: Path, task: str, subtask: int, size: tuple[int, int] | None,
                       slicing: tuple[int, str, int] = (-1, "all", 0), cache: DecodeCache | None = None):
    phases = _find_phase_dirs(root, task)
    if "Training" not in phases and "Validation" not in phases:
        raise FileNotFoundError(f"qubiq: no {task}/Training or {task}/Validation under {root}; "
                                f"expected layout:\n{LAYOUT}")
    known_r, n_sub = TASKS.get(task, (None, None))
    if n_sub is not None and not 1 <= subtask <= n_sub:
        raise ValueError(f"qubiq: task {task!r} has sub-tasks 1..{n_sub}, got subtask={subtask}")
    listing = {ph: _scan_cases(d, subtask) for ph, d in phases.items()}
    all_raters = [r for cases in listing.values() for _, _, segs in cases for r in segs]
    num_raters = known_r if known_r is not None else max(all_raters)
    images, masks, valid, case_ids, group_ids, parts = [], [], [], [], [], {}
    channels = None
    for phase, cases in listing.items():
        parts[phase] = []
        for name, image_path, segs in cases:
            if max(segs) > num_raters or min(segs) < 1:
                raise ValueError(f"qubiq: {image_path.parent}: rater files {sorted(segs)} outside 1..{num_raters} "
                                 f"for task {task!r}")
            img, m, v, slice_ids = _case_arrays(image_path, segs, num_raters, slicing, cache)
            if channels is None:
                channels = img.shape[1]
            elif img.shape[1] != channels:
                raise ValueError(f"{image_path}: {img.shape[1]} channels, other cases have {channels}")
            for k in range(img.shape[0]):
                img_t, m_t = torch.from_numpy(np.ascontiguousarray(img[k])), torch.from_numpy(np.ascontiguousarray(m[k]))
                img_t, m_t = resize_image(img_t, size).clamp_(0, 1), resize_masks(m_t, size)
                if images and img_t.shape[-2:] != images[0].shape[-2:]:
                    raise ValueError(f"{image_path}: image is {tuple(img_t.shape[-2:])}, other cases "
                                     f"{tuple(images[0].shape[-2:])}; pass image_size to resize")
                parts[phase].append(len(case_ids))
                group = f"{phase}/{name}"
                case_ids.append(group if slice_ids is None else slice_case_id(group, slice_ids[k]))
                group_ids.append(group)
                images.append(img_t)
                masks.append(m_t)
                valid.append(torch.from_numpy(v.copy()))
    if not images:
        raise ValueError(f"qubiq: no slice kept under {root} (slices={slicing[1]!r})")
    split = Split(tuple(parts.get("Training", ())), (), tuple(parts.get("Validation", ())),
                  protocol="predefined")
    return (case_ids, group_ids, torch.stack(images), torch.stack(masks), torch.stack(valid), split,
            num_raters)


@dataset_factory("qubiq")
def qubiq(root: str | Path | None = None, task: str = "brain-growth", subtask: int = 1,
          format: Literal["auto", "nifti", "pickle"] = "auto",
          image_size: int | None = 128, slice_axis: int = -1,
          slices: Literal["all", "foreground"] = "all", context: int = 0,
          cache: bool = True) -> MultiRaterDataset:
    """QUBIQ (see module docstring). Options: ``task`` (brain-growth | prostate | brain-tumor |
    kidney | another folder name), ``subtask`` (1; prostate 1-2, brain-tumor 1-3), ``format``
    (auto | nifti | pickle; auto = pickle when root is a .pkl file or a folder with one and no
    task folder), ``image_size`` (128; None keeps the native size, which must then agree),
    ``slice_axis`` / ``slices`` / ``context`` for 3-D tasks, ``cache`` (decoded-array cache)."""
    base = require_root(root, "qubiq", LAYOUT)
    size = to_size(image_size)
    if format not in ("auto", "nifti", "pickle"):
        raise ValueError(f"qubiq: format={format!r} is not one of auto, nifti, pickle")
    pkl: Path | None = None
    if base.is_file():
        pkl = base
    elif format != "nifti" and not _find_phase_dirs(base, task):
        pkls = sorted(base.glob("*.pkl"))
        if pkls:
            pkl = pkls[0]
    if format == "pickle" and pkl is None:
        raise FileNotFoundError(f"qubiq: no .pkl file at {base}; expected layout:\n{LAYOUT}")
    if pkl is not None and format != "nifti":
        case_ids, group_ids, images, masks = read_matting_pickle(pkl, size)
        r = masks.shape[1]
        info = DatasetInfo("qubiq", 1, r, tuple(f"rater{k + 1}" for k in range(r)),
                           tuple(images.shape[-2:]), "fixed")
        ds = InMemoryMultiRaterDataset(info, images, masks, case_ids, group_ids, source=str(pkl))
        ds._source_files = [pkl]
        return ds
    if slices not in SLICE_MODES or context < 0 or not -3 <= slice_axis <= 2:
        raise ValueError(f"qubiq: slices={slices!r} (all | foreground), context={context} (>= 0), "
                         f"slice_axis={slice_axis} (-3..2)")
    case_ids, group_ids, images, masks, valid, split, r = _load_nifti_layout(
        base, task, subtask, size, (slice_axis, slices, context), DecodeCache(enabled=cache))
    info = DatasetInfo("qubiq", images.shape[1], r, tuple(f"rater{k + 1}" for k in range(r)),
                       tuple(images.shape[-2:]), "fixed")
    ds = InMemoryMultiRaterDataset(info, images, masks, case_ids, group_ids, rater_valid=valid,
                                   split=split, source=str(base))
    ds.volume_ids = group_ids
    ds._source_files = [p for d in _find_phase_dirs(base, task).values()
                        for _, image, segs in _scan_cases(d, subtask) for p in (image, *segs.values())]
    return ds

