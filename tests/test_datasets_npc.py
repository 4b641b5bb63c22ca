"""NPC-170: 2-D training slices and 3-D validation/testing volumes written here."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrseg_bench.datasets import make_split
from mrseg_bench.registry import DATASETS

npc = DATASETS.get("npc")


def _write(path: Path, shape: tuple[int, ...], marker: float, missing: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        for c, key in enumerate(("t1", "t1c", "t2")):  # channel c holds marker + c
            fh[key] = np.full(shape, marker + c, np.float32)
        for k in range(4):  # rater k marks k+1 rows in every slice
            lab = np.zeros(shape, np.uint8)
            lab[..., : k + 1, :] = 1
            if missing != f"label_a{k + 1}":
                fh[f"label_a{k + 1}"] = lab


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    _write(tmp_path / "training_2d" / "P001_slice_3.h5", (16, 16), 10)
    _write(tmp_path / "training_2d" / "P001_slice_4.h5", (16, 16), 20)
    _write(tmp_path / "training_2d" / "P002_slice12.h5", (16, 16), 30)
    _write(tmp_path / "training_2d" / "odd.h5", (16, 16), 40)
    _write(tmp_path / "validation" / "P003.h5", (5, 16, 16), 50)
    _write(tmp_path / "testing" / "P004.h5", (2, 16, 16), 60)
    return tmp_path


def test_slices_volumes_groups(root: Path) -> None:
    ds = npc(root, image_size=None)
    assert len(ds) == 4 + 5 + 2
    assert ds.info.in_channels == 3 and ds.info.num_raters == 4 and ds.info.image_size == (16, 16)
    assert ds.case_ids[:4] == ["training_2d/P001_slice_3", "training_2d/P001_slice_4",
                               "training_2d/P002_slice12", "training_2d/odd"]
    assert ds.group_ids[:4] == ["training_2d/P001", "training_2d/P001", "training_2d/P002", "training_2d/odd"]
    assert ds.case_ids[4:6] == ["validation/P003/000", "validation/P003/001"]
    assert ds.volume_ids[4:9] == ["validation/P003"] * 5 and ds.group_ids == ds.volume_ids
    sp = ds.predefined_split()
    assert sp.train == (0, 1, 2, 3) and sp.val == (4, 5, 6, 7, 8) and sp.test == (9, 10)
    assert make_split(ds).protocol == "predefined"
    s = ds[6]
    s.validate()
    assert s.image[:, 0, 0].tolist() == [50.0, 51.0, 52.0]  # t1, t1c, t2 order
    assert s.masks.flatten(1).sum(1).tolist() == [16, 32, 48, 64]  # label_a1..a4 order


def test_resize_default_128(root: Path) -> None:
    ds = npc(root)
    s = ds[0]
    assert s.image.shape == (3, 128, 128) and s.masks.shape == (4, 128, 128)
    assert torch.equal(s.image[1], torch.full((128, 128), 11.0))
    assert s.masks.flatten(1).sum(1).tolist() == [128 * 8 * k for k in (1, 2, 3, 4)]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="training_2d"):
        npc(tmp_path)
    _write(tmp_path / "training_2d" / "a_slice_1.h5", (16, 16), 0, missing="label_a3")
    with pytest.raises(ValueError, match=r"a_slice_1.h5: missing key\(s\) \['label_a3'\]"):
        npc(tmp_path)
    (tmp_path / "training_2d" / "a_slice_1.h5").unlink()
    _write(tmp_path / "training_2d" / "b_slice_1.h5", (4, 16, 16), 0)
    with pytest.raises(ValueError, match="expected 2-D"):
        npc(tmp_path)
    with pytest.raises(FileNotFoundError, match="expected layout"):
        npc(tmp_path / "absent")
