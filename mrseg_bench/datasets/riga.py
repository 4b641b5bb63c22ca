"""RIGA retinal fundus images: optic disc and cup, 6 raters.

Layout (any depth below each site folder; BinRushed and Magrabia have sub-folders in the
release)::

    <root>/BinRushed/**/imageNprime.<ext>     the fundus image (RGB)
    <root>/BinRushed/**/imageN-1.<ext> .. imageN-6.<ext>   rater 1..6
    <root>/Magrabia/**/...   <root>/MESSIDOR/**/...        (ext: tif, tiff, png, jpg, bmp)

Assumption about the rater files (document of record): each is a FILLED label map read as
grayscale, 0 = background, the optic disc region (rim) brighter than 0 and the optic cup the
brightest level, e.g. 0 / 128 / 255. ``target="disc"`` keeps ``label > disc_threshold`` (the disc
includes the cup), ``target="cup"`` keeps ``label > cup_threshold``. The original release draws
the raters' OUTLINES on a copy of the fundus photograph instead; such files must first be
converted to filled maps (a colour rater image is refused with that message).

Every image is its own group (RIGA gives no patient ids); ``case_id`` = ``<site>/<relative path
without extension>``. Predefined split: BinRushed + MESSIDOR -> train, Magrabia -> test (val is
carved from train by ``make_split``). Images: RGB float [0,1], resized to ``image_size``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..types import DatasetInfo, MultiRaterSample
from ._common import dataset_factory, require_root, resize_image, resize_masks, to_size
from .base import MultiRaterDataset, Split

SITES = ("BinRushed", "MESSIDOR", "Magrabia")
TEST_SITES = ("Magrabia",)
NUM_RATERS = 6
EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
PRIME_RE = re.compile(r"^image(\d+)prime$", re.IGNORECASE)
LAYOUT = ("  <root>/{BinRushed,MESSIDOR,Magrabia}/**/imageNprime.tif  (fundus image)\n"
          "  <root>/{BinRushed,MESSIDOR,Magrabia}/**/imageN-1.tif .. imageN-6.tif  (filled label maps: "
          "0 background, disc > 0, cup brightest)")


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as exc:  # PIL raises several types for a bad file
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def _find(folder: Path, stem: str) -> Path | None:
    for ext in EXTS:
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


class RIGA(MultiRaterDataset):
    """RIGA (see module docstring)."""

    def __init__(self, root: Path, target: str, image_size: tuple[int, int] | None,
                 disc_threshold: int, cup_threshold: int) -> None:
        if target not in ("disc", "cup"):
            raise ValueError(f"riga: target must be 'disc' or 'cup', got {target!r}")
        self.target, self.size = target, image_size
        self.threshold = disc_threshold if target == "disc" else cup_threshold
        self._rows: list[tuple[Path, list[Path]]] = []
        self._case_ids: list[str] = []
        parts: dict[str, list[int]] = {"train": [], "test": []}
        sites = [s for s in SITES if (root / s).is_dir()]
        if not sites:
            raise FileNotFoundError(f"riga: none of {', '.join(SITES)} under {root}; expected layout:\n{LAYOUT}")
        for site in sites:
            for prime in sorted(p for p in (root / site).rglob("*") if p.suffix.lower() in EXTS
                                and PRIME_RE.match(p.stem)):
                n = PRIME_RE.match(prime.stem).group(1)
                raters = [_find(prime.parent, f"image{n}-{k}") for k in range(1, NUM_RATERS + 1)]
                missing = [k + 1 for k, p in enumerate(raters) if p is None]
                if missing:
                    raise FileNotFoundError(f"riga: {prime} lacks rater file(s) image{n}-{missing} "
                                            f"(expected image{n}-1 .. image{n}-{NUM_RATERS})")
                parts["test" if site in TEST_SITES else "train"].append(len(self._rows))
                self._rows.append((prime, raters))  # type: ignore[arg-type]
                rel = prime.relative_to(root).with_suffix("")
                self._case_ids.append(rel.as_posix())
        if not self._rows:
            raise FileNotFoundError(f"riga: no imageNprime files under {root}; expected layout:\n{LAYOUT}")
        self._source_files = [p for prime, raters in self._rows for p in (prime, *raters)]
        self._split = Split(tuple(parts["train"]), (), tuple(parts["test"]), protocol="predefined")
        size = image_size or tuple(_read(self._rows[0][0]).shape[:2])
        self.info = DatasetInfo("riga", 3, NUM_RATERS,
                                tuple(f"rater{k + 1}" for k in range(NUM_RATERS)), size, "fixed")

    @property
    def group_ids(self) -> list[str]:
        return self._case_ids

    def __getitem__(self, index: int) -> MultiRaterSample:
        prime, raters = self._rows[index]
        img = _read(prime)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        if img.ndim != 3 or img.shape[-1] < 3:
            raise ValueError(f"{prime}: expected an RGB image, got shape {img.shape}")
        image = torch.from_numpy(np.ascontiguousarray(img[..., :3].transpose(2, 0, 1))).float() / 255.0
        masks = []
        for path in raters:
            lab = _read(path)
            if lab.ndim == 3:
                raise ValueError(f"{path}: a colour rater image (outlines drawn on the photograph?); "
                                 "RIGA rater files must be filled grayscale label maps (see riga.py)")
            if lab.shape != img.shape[:2]:
                raise ValueError(f"{path}: rater map {lab.shape} differs from image {img.shape[:2]}")
            masks.append(lab > self.threshold)
        m = torch.from_numpy(np.stack(masks).astype(np.uint8))
        image = resize_image(image, self.size).clamp_(0, 1)
        m = resize_masks(m, self.size)
        sample = MultiRaterSample(image.contiguous(), m.contiguous(),
                                  torch.ones(NUM_RATERS, dtype=torch.bool),
                                  self._case_ids[index], self._case_ids[index])
        sample.validate(str(prime))
        return sample

    def predefined_split(self) -> Split | None:
        return self._split


@dataset_factory("riga")
def riga(root: str | Path | None = None, target: Literal["disc", "cup"] = "disc",
         image_size: int | None = 128, disc_threshold: int = 0, cup_threshold: int = 191) -> RIGA:
    """RIGA (see module docstring). Options: ``target`` (disc | cup), ``image_size`` (128; None =
    native size of the first image), ``disc_threshold`` (0) and ``cup_threshold`` (191): a pixel
    is disc when its label > disc_threshold, cup when > cup_threshold."""
    return RIGA(require_root(root, "riga", LAYOUT), target, to_size(image_size), disc_threshold,
                cup_threshold)
