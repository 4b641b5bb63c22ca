"""LIDC-IDRI lung nodules, 4 anonymous raters, from any of its three published preprocessings.

Formats (``format="auto"`` detects them from the file name, or from ``root`` being a folder that
holds one of these files):

- ``knegt``: ``data_lidc.pickle`` (Knegt's 128x128 crops; image float [0,1]);
- ``matting``: ``lidc_attributes.pkl`` (Medical Matting, what D-Persona trains on; image uint8
  0..255 -> float [0,1]; the ``alpha`` soft map is ignored);
- ``phiseg``: ``data_lidc.hdf5`` (PHiSeg: groups ``train``/``val``/``test`` with ``images``
  (N,128,128) = image - 0.5 (0.5 is added back), ``labels`` uint8 (N,128,128,4), ``uids``).

Both pickles share one schema (``{key: {'image', 'masks', 'series_uid'}}``) and are read with the
restricted unpickler (``safe_pickle``). Memory: a pickle is loaded into memory once (the 2.4 GiB
Knegt file needs about 2-3 GiB RAM while loading and ~1.3 GiB after); the hdf5 file is read
lazily, one slice per ``__getitem__``.

Patient id (``group_id``): pickles - ``series_uid`` before its first ``_`` (the whole uid when it
has none; the D-Persona reference's rule); hdf5 - the ``uids`` entry (PHiSeg's hash of the
series uid). Rater identity is anonymous: "rater k" is not the same person across nodules.
``sort_masks_by_area=True`` orders each case's masks smallest first, as D-Persona does.
"""

from __future__ import annotations

import os
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
from .in_memory import InMemoryMultiRaterDataset, read_matting_pickle

FILES = {"knegt": "data_lidc.pickle", "matting": "lidc_attributes.pkl", "phiseg": "data_lidc.hdf5"}
LAYOUT = ("  <root>/data_lidc.pickle     (Knegt pickle)   or\n"
          "  <root>/lidc_attributes.pkl   (Medical Matting pickle)   or\n"
          "  <root>/data_lidc.hdf5        (PHiSeg hdf5: train/val/test groups with images, labels, uids)\n"
          "  (or pass the file itself as root)")
NUM_RATERS = 4
PHISEG_GROUPS = ("train", "val", "test")


def _info(size: tuple[int, int]) -> DatasetInfo:
    return DatasetInfo("lidc", 1, NUM_RATERS, tuple(f"annotation{k + 1}" for k in range(NUM_RATERS)),
                       size, "anonymous")


def detect_format(root: Path, fmt: str = "auto") -> tuple[Path, str]:
    """Resolve (file, format) from a file or a folder holding one of ``FILES``."""
    if fmt not in ("auto", *FILES):
        raise ValueError(f"lidc: format={fmt!r} is not one of auto, {', '.join(FILES)}")
    if root.is_dir():
        names = [FILES[fmt]] if fmt != "auto" else list(FILES.values())
        for name in names:
            if (root / name).is_file():
                path = root / name
                break
        else:
            raise FileNotFoundError(f"lidc: no {' / '.join(names)} in {root}; expected layout:\n{LAYOUT}")
    else:
        path = root
    if fmt != "auto":
        return path, fmt
    suffix = path.suffix.lower()
    if suffix in (".hdf5", ".h5"):
        return path, "phiseg"
    if suffix in (".pkl", ".pickle"):
        return path, "matting" if "attributes" in path.name or suffix == ".pkl" else "knegt"
    raise ValueError(f"lidc: cannot tell the format of {path} from its name; pass format= "
                     f"({', '.join(FILES)})")


class PhisegLIDC(MultiRaterDataset):
    """PHiSeg's ``data_lidc.hdf5``, read lazily (one h5py handle per process)."""

    def __init__(self, path: Path, image_size: tuple[int, int] | None, sort_masks_by_area: bool) -> None:
        import h5py

        self.path = path
        self.size = image_size
        self.sort_masks_by_area = sort_masks_by_area
        self._rows: list[tuple[str, int]] = []
        self._case_ids: list[str] = []
        self._group_ids: list[str] = []
        parts: dict[str, list[int]] = {}
        try:
            fh = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"{path}: not a readable hdf5 file ({exc})") from None
        with fh:
            missing = [g for g in PHISEG_GROUPS if g not in fh]
            if len(missing) == len(PHISEG_GROUPS):
                raise ValueError(f"{path}: none of the groups {PHISEG_GROUPS}; has {sorted(fh)}")
            native = None
            for g in PHISEG_GROUPS:
                if g not in fh:
                    continue
                grp = fh[g]
                for key in ("images", "labels", "uids"):
                    if key not in grp:
                        raise ValueError(f"{path}: group {g!r} lacks dataset {key!r}; has {sorted(grp)}")
                n = grp["images"].shape[0]
                ish, lsh = grp["images"].shape, grp["labels"].shape
                if len(ish) != 3 or len(lsh) != 4 or lsh[:3] != ish or grp["uids"].shape[0] != n:
                    raise ValueError(f"{path}: group {g!r}: images {ish}, labels {lsh}, uids "
                                     f"{grp['uids'].shape} do not match (N,H,W), (N,H,W,R), (N,)")
                if lsh[3] != NUM_RATERS:
                    raise ValueError(f"{path}: group {g!r}: {lsh[3]} raters, expected {NUM_RATERS}")
                if native is None:
                    native = ish[1:]
                elif ish[1:] != native:
                    raise ValueError(f"{path}: group {g!r} images are {ish[1:]}, others {native}")
                uids = grp["uids"][()]
                start = len(self._rows)
                for i in range(n):
                    self._rows.append((g, i))
                    self._case_ids.append(f"{g}/{i}")
                    self._group_ids.append(_uid_str(uids[i]))
                parts[g] = list(range(start, start + n))
        self._split = Split(tuple(parts.get("train", ())), tuple(parts.get("val", ())),
                            tuple(parts.get("test", ())), protocol="predefined")
        self.info = _info(image_size or tuple(native))
        self._fh = None
        self._pid = None

    def _file(self):
        import h5py

        if self._fh is None or self._pid != os.getpid():  # a fresh handle in each worker
            self._fh = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._fh

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fh"] = None
        return state

    def __getitem__(self, index: int) -> MultiRaterSample:
        g, i = self._rows[index]
        grp = self._file()[g]
        where = f"{self.path}: case {g}/{i}"
        image = torch.from_numpy(np.asarray(grp["images"][i], dtype=np.float32) + 0.5)[None]
        masks = torch.from_numpy(binary_masks(np.moveaxis(grp["labels"][i], -1, 0), where))
        image = resize_image(image, self.size)
        masks = resize_masks(masks, self.size)
        if self.sort_masks_by_area:
            masks = masks[torch.argsort(masks.flatten(1).sum(1), stable=True)]
        sample = MultiRaterSample(image.contiguous(), masks.contiguous(),
                                  torch.ones(NUM_RATERS, dtype=torch.bool),
                                  self._case_ids[index], self._group_ids[index])
        sample.validate(where)
        return sample

    def predefined_split(self) -> Split | None:
        return self._split


def _uid_str(uid: object) -> str:
    if isinstance(uid, bytes):
        return uid.decode("utf-8", "replace")
    if isinstance(uid, np.generic):
        return str(uid.item())
    return str(uid)


@dataset_factory("lidc")
def lidc(root: str | Path | None = None, format: Literal["auto", "knegt", "matting", "phiseg"] = "auto",
         image_size: int | None = 128, sort_masks_by_area: bool = False) -> MultiRaterDataset:
    """LIDC-IDRI (see module docstring). Options: ``format`` (auto | knegt | matting | phiseg),
    ``image_size`` (128; None keeps the native size; masks are resized nearest),
    ``sort_masks_by_area`` (False; True = D-Persona's smallest-first order).
    Only the PHiSeg hdf5 has a predefined split (its train/val/test groups)."""
    path, fmt = detect_format(require_root(root, "lidc", LAYOUT), format)
    size = to_size(image_size)
    if fmt == "phiseg":
        ds: MultiRaterDataset = PhisegLIDC(path, size, sort_masks_by_area)
    else:
        case_ids, group_ids, images, masks = read_matting_pickle(path, size, NUM_RATERS)
        ds = InMemoryMultiRaterDataset(_info(tuple(images.shape[-2:])), images, masks, case_ids, group_ids,
                                       sort_masks_by_area=sort_masks_by_area, source=str(path))
    ds._source_files = [path]
    return ds
