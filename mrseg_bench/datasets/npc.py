"""NPC-170 nasopharyngeal carcinoma (D-Persona; MMIS-2024 challenge), 4 raters, 3 MR channels.

Layout (one h5 file per case, keys ``t1``, ``t1c``, ``t2`` -> channels 0..2 and
``label_a1`` .. ``label_a4`` -> raters 0..3)::

    <root>/training_2d/*.h5   2-D slices (H,W)
    <root>/validation/*.h5    3-D volumes (D,H,W)
    <root>/testing/*.h5       3-D volumes (D,H,W)   (optional)

Every slice of a volume is a case (``case_id`` ``<folder>/<stem>/<z>``) with ``group_id`` =
``volume_id`` = ``<folder>/<stem>``, so evaluation can aggregate per volume. A training slice's
volume is its file stem without a trailing ``_slice<N>``/``_slice_<N>`` (``slice_pattern``);
a stem that does not match is its own volume. Images keep their h5 intensities (float32) and are
resized to ``image_size`` (128, nearest for image and masks as the reference does by default).
Predefined split: training_2d -> train, validation -> val, testing -> test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..types import DatasetInfo, MultiRaterSample
from ._common import (
    binary_masks,
    dataset_factory,
    require_root,
    resize_image,
    resize_masks,
    to_size,
)
from .base import MultiRaterDataset, Split

CHANNELS = ("t1", "t1c", "t2")
LABELS = ("label_a1", "label_a2", "label_a3", "label_a4")
FOLDERS = {"training_2d": 2, "validation": 3, "testing": 3}  # folder -> dims per file
LAYOUT = ("  <root>/training_2d/*.h5  (2-D slices: t1, t1c, t2, label_a1..label_a4)\n"
          "  <root>/validation/*.h5   (3-D volumes, same keys)\n"
          "  <root>/testing/*.h5      (3-D volumes, optional)")


class NPC170(MultiRaterDataset):
    """NPC-170 (see module docstring). Slices are read on demand (h5py slicing of one z)."""

    def __init__(self, root: Path, image_size: tuple[int, int] | None,
                 image_interpolation: str, slice_pattern: str) -> None:
        import h5py

        self.root = root
        self.size = image_size
        self.image_mode = image_interpolation
        pattern = re.compile(slice_pattern)
        self._rows: list[tuple[Path, int | None]] = []
        self._case_ids: list[str] = []
        self.volume_ids: list[str] = []
        parts: dict[str, list[int]] = {}
        native = None
        if not (root / "training_2d").is_dir():
            raise FileNotFoundError(f"npc: {root / 'training_2d'} is missing; expected layout:\n{LAYOUT}")
        for folder, ndim in FOLDERS.items():
            parts[folder] = []
            if not (root / folder).is_dir():
                continue
            for path in sorted((root / folder).glob("*.h5")):
                try:
                    fh = h5py.File(path, "r")
                except OSError as exc:
                    raise ValueError(f"{path}: not a readable h5 file ({exc})") from None
                with fh:
                    missing = [k for k in (*CHANNELS, *LABELS) if k not in fh]
                    if missing:
                        raise ValueError(f"{path}: missing key(s) {missing}; has {sorted(fh)}")
                    shapes = {k: fh[k].shape for k in (*CHANNELS, *LABELS)}
                if len(set(shapes.values())) != 1:
                    raise ValueError(f"{path}: channels and labels differ in shape: {shapes}")
                shape = shapes[CHANNELS[0]]
                if len(shape) != ndim:
                    raise ValueError(f"{path}: expected {ndim}-D arrays in {folder}/, got shape {shape}")
                if image_size is None:
                    native = native or shape[-2:]
                    if shape[-2:] != native:
                        raise ValueError(f"{path}: slices are {shape[-2:]}, others {native}; set image_size")
                if ndim == 2:
                    m = pattern.match(path.stem)
                    vol = f"{folder}/{m.group('volume') if m else path.stem}"
                    zs: list[int | None] = [None]
                else:
                    vol = f"{folder}/{path.stem}"
                    zs = list(range(shape[0]))
                for z in zs:
                    parts[folder].append(len(self._rows))
                    self._rows.append((path, z))
                    self._case_ids.append(f"{folder}/{path.stem}" + ("" if z is None else f"/{z:03d}"))
                    self.volume_ids.append(vol)
        if not self._rows:
            raise FileNotFoundError(f"npc: no .h5 files under {root}; expected layout:\n{LAYOUT}")
        self._source_files = sorted({path for path, _ in self._rows})
        self._split = Split(tuple(parts["training_2d"]), tuple(parts["validation"]),
                            tuple(parts["testing"]), protocol="predefined")
        size = image_size or tuple(native)
        self.info = DatasetInfo("npc", len(CHANNELS), len(LABELS),
                                tuple(f"a{k + 1}" for k in range(len(LABELS))), size, "fixed")

    @property
    def group_ids(self) -> list[str]:
        return self.volume_ids

    def __getitem__(self, index: int) -> MultiRaterSample:
        import h5py

        path, z = self._rows[index]
        where = f"{path}" + ("" if z is None else f" slice {z}")
        sel = () if z is None else (z,)
        with h5py.File(path, "r") as fh:
            image = np.stack([np.asarray(fh[k][sel], dtype=np.float32) for k in CHANNELS])
            masks = np.stack([np.asarray(fh[k][sel]) for k in LABELS])
        image_t = resize_image(torch.from_numpy(image), self.size, self.image_mode)
        masks_t = resize_masks(torch.from_numpy(binary_masks(masks, where)), self.size)
        sample = MultiRaterSample(image_t.contiguous(), masks_t.contiguous(),
                                  torch.ones(len(LABELS), dtype=torch.bool),
                                  self._case_ids[index], self.volume_ids[index])
        sample.validate(where)
        return sample

    def predefined_split(self) -> Split | None:
        return self._split


@dataset_factory("npc")
def npc(root: str | Path | None = None, image_size: int | None = 128,
        image_interpolation: Literal["nearest", "bilinear"] = "nearest",
        slice_pattern: str = r"^(?P<volume>.+?)_slice_?\d+$") -> NPC170:
    """NPC-170 (see module docstring). Options: ``image_size`` (128; None = native, which must
    agree), ``image_interpolation`` (nearest, as the reference; or bilinear), ``slice_pattern``
    (regex with a ``volume`` group mapping a training-slice file stem to its volume)."""
    return NPC170(require_root(root, "npc", LAYOUT), to_size(image_size), image_interpolation,
                  slice_pattern)
