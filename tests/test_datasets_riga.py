"""RIGA: six raters' filled label maps (0 / 128 disc / 255 cup) written here as TIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrseg_bench.datasets import make_split
from mrseg_bench.registry import DATASETS

riga = DATASETS.get("riga")


def _label(size: int, k: int) -> np.ndarray:
    """Rater k: disc = rows [0, 4+k), cup = rows [0, k+1) (cup inside disc)."""
    lab = np.zeros((size, size), np.uint8)
    lab[: 4 + k] = 128
    lab[: k + 1] = 255
    return lab


def _case(folder: Path, n: int, size: int = 16, colour_rater: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10 * n, 100, 200
    Image.fromarray(rgb).save(folder / f"image{n}prime.tif")
    for k in range(1, 7):
        lab = _label(size, k)
        if colour_rater and k == 2:
            lab = np.repeat(lab[..., None], 3, axis=-1)
        Image.fromarray(lab).save(folder / f"image{n}-{k}.tif")


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    _case(tmp_path / "BinRushed" / "BinRushed1", 1)
    _case(tmp_path / "BinRushed" / "BinRushed2", 2)
    _case(tmp_path / "MESSIDOR", 3)
    _case(tmp_path / "MESSIDOR", 4)
    _case(tmp_path / "Magrabia" / "MagrabiaMale", 5)
    return tmp_path


def test_disc_and_cup(root: Path) -> None:
    disc = riga(root, image_size=None)
    assert len(disc) == 5 and disc.info.num_raters == 6 and disc.info.in_channels == 3
    assert disc.case_ids[0] == "BinRushed/BinRushed1/image1prime"
    assert disc.case_ids[-1] == "Magrabia/MagrabiaMale/image5prime"
    s = disc[2]
    s.validate()
    assert s.masks.flatten(1).sum(1).tolist() == [16 * (4 + k) for k in range(1, 7)]
    assert abs(float(s.image[0, 0, 0]) - 30 / 255) < 1e-6 and abs(float(s.image[2, 0, 0]) - 200 / 255) < 1e-6
    cup = riga(root, target="cup", image_size=None)
    assert cup[2].masks.flatten(1).sum(1).tolist() == [16 * (k + 1) for k in range(1, 7)]
    sp = disc.predefined_split()
    assert sp.test == (4,) and sp.train == (0, 1, 2, 3) and sp.val == ()
    full = make_split(disc, val_fraction=0.25)
    assert full.test == (4,) and len(full.val) == 1 and len(full.train) == 3
    assert riga(root)[0].image.shape == (3, 128, 128)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="none of BinRushed"):
        riga(tmp_path)
    _case(tmp_path / "MESSIDOR", 1, colour_rater=True)
    with pytest.raises(ValueError, match=r"image1-2.tif: a colour rater image"):
        riga(tmp_path)[0]
    (tmp_path / "MESSIDOR" / "image1-6.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks rater file\(s\) image1-\[6\]"):
        riga(tmp_path)
    with pytest.raises(ValueError, match="target"):
        riga(tmp_path, target="vessel")
