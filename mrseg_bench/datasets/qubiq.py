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
  Masks must be binary (0/1; a 0/255 mask is read as 0/1); 3-D volumes are refused.
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
from .in_memory import InMemoryMultiRaterDataset, read_matting_pickle

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


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        arr = np.asarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _image_channels(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H,W) or (H,W,C<=4) -> float32 [C,H,W] min-max scaled per channel to [0,1]."""
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] <= 4:
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise ValueError(f"{path}: image shape {arr.shape} is not a 2-D slice (H,W) or (H,W,C<=4); "
                         "3-D QUBIQ tasks are not supported")
    check_image_array(arr, str(path))
    arr = arr.astype(np.float32)
    lo = arr.min(axis=(1, 2), keepdims=True)
    hi = arr.max(axis=(1, 2), keepdims=True)
    return (arr - lo) / np.maximum(hi - lo, 1e-8)


def _read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    arr = _read_nifti(path)
    if arr.shape != shape:
        raise ValueError(f"{path}: mask shape {arr.shape} differs from its image {shape}")
    if arr.size and np.isin(arr, (0, 255)).all():
        arr = arr // 255  # a 0/255 mask
    return binary_masks(arr, str(path))


def _load_nifti_layout(root: Path, task: str, subtask: int, size: tuple[int, int] | None):
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
    images, masks, valid, case_ids, parts = [], [], [], [], {}
    channels = None
    for phase, cases in listing.items():
        parts[phase] = []
        for name, image_path, segs in cases:
            if max(segs) > num_raters or min(segs) < 1:
                raise ValueError(f"qubiq: {image_path.parent}: rater files {sorted(segs)} outside 1..{num_raters} "
                                 f"for task {task!r}")
            raw = _read_nifti(image_path)
            img = _image_channels(raw, image_path)
            if channels is None:
                channels = img.shape[0]
            elif img.shape[0] != channels:
                raise ValueError(f"{image_path}: {img.shape[0]} channels, other cases have {channels}")
            hw = raw.shape[:2]
            m = np.zeros((num_raters, *hw), dtype=np.uint8)
            v = np.zeros(num_raters, dtype=bool)
            for r, seg_path in segs.items():
                m[r - 1] = _read_mask(seg_path, hw)
                v[r - 1] = True
            img_t, m_t = torch.from_numpy(img), torch.from_numpy(m)
            img_t, m_t = resize_image(img_t, size).clamp_(0, 1), resize_masks(m_t, size)
            if images and img_t.shape[-2:] != images[0].shape[-2:]:
                raise ValueError(f"{image_path}: image is {tuple(img_t.shape[-2:])}, other cases "
                                 f"{tuple(images[0].shape[-2:])}; pass image_size to resize")
            parts[phase].append(len(case_ids))
            case_ids.append(f"{phase}/{name}")
            images.append(img_t)
            masks.append(m_t)
            valid.append(torch.from_numpy(v))
    split = Split(tuple(parts.get("Training", ())), (), tuple(parts.get("Validation", ())),
                  protocol="predefined")
    return (case_ids, torch.stack(images), torch.stack(masks), torch.stack(valid), split, num_raters)


@dataset_factory("qubiq")
def qubiq(root: str | Path | None = None, task: str = "brain-growth", subtask: int = 1,
          format: Literal["auto", "nifti", "pickle"] = "auto",
          image_size: int | None = 128) -> MultiRaterDataset:
    """QUBIQ (see module docstring). Options: ``task`` (brain-growth | prostate | brain-tumor |
    kidney | another folder name), ``subtask`` (1; prostate 1-2, brain-tumor 1-3), ``format``
    (auto | nifti | pickle; auto = pickle when root is a .pkl file or a folder with one and no
    task folder), ``image_size`` (128; None keeps the native size, which must then agree)."""
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
        return InMemoryMultiRaterDataset(info, images, masks, case_ids, group_ids, source=str(pkl))
    case_ids, images, masks, valid, split, r = _load_nifti_layout(base, task, subtask, size)
    info = DatasetInfo("qubiq", images.shape[1], r, tuple(f"rater{k + 1}" for k in range(r)),
                       tuple(images.shape[-2:]), "fixed")
    return InMemoryMultiRaterDataset(info, images, masks, case_ids, case_ids, rater_valid=valid,
                                     split=split, source=str(base))

