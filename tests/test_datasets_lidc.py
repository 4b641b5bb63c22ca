"""LIDC loaders on small files written here in each published format."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrseg_bench.datasets import UnsafePickleError, make_split
from mrseg_bench.datasets.lidc import detect_format
from mrseg_bench.registry import DATASETS

lidc = DATASETS.get("lidc")


def _cases(n: int = 6, size: int = 16, uint8: bool = False, seed: int = 0) -> dict:
    """n slices from n // 2 patients; rater k's mask of case i has k+1 + i rows set (areas known)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        img = rng.random((size, size))
        masks = []
        for k in (2, 0, 3, 1):  # rater order in the file: areas (k+1) rows, deliberately unsorted
            m = np.zeros((size, size), np.uint8)
            m[: k + 1, : i + 1] = 1
            masks.append(m)
        out[f"slice{i:02d}"] = {
            "image": (img * 255).astype(np.uint8) if uint8 else img.astype(np.float32),
            "masks": masks,
            "series_uid": f"LIDC-IDRI-{i // 2:04d}_nodule{i % 2}",
            "alpha": np.zeros((size, size), np.uint8),
        }
    return out


def _write(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


@pytest.mark.parametrize("name,uint8", [("data_lidc.pickle", False), ("lidc_attributes.pkl", True)])
def test_pickle_formats(tmp_path: Path, name: str, uint8: bool) -> None:
    raw = _cases(uint8=uint8)
    _write(tmp_path / name, raw)
    ds = lidc(tmp_path, image_size=None)  # auto-detected from the folder
    assert len(ds) == 6 and ds.info.num_raters == 4 and ds.info.rater_identity == "anonymous"
    assert ds.info.image_size == (16, 16) and ds.info.in_channels == 1
    s = ds[3]
    s.validate()
    expected = raw["slice03"]["image"].astype(np.float32) / (255.0 if uint8 else 1.0)
    assert torch.allclose(s.image[0], torch.from_numpy(expected))
    assert 0 <= float(s.image.min()) and float(s.image.max()) <= 1
    # rater order as in the file: areas (k+1) * (i+1) rows x cols
    assert s.masks.flatten(1).sum(1).tolist() == [3 * 4, 1 * 4, 4 * 4, 2 * 4]
    assert ds.case_ids[:2] == ["slice00", "slice01"]
    assert ds.group_ids == ["LIDC-IDRI-0000"] * 2 + ["LIDC-IDRI-0001"] * 2 + ["LIDC-IDRI-0002"] * 2
    assert ds.predefined_split() is None


def test_sort_masks_by_area_and_resize(tmp_path: Path) -> None:
    f = _write(tmp_path / "lidc_attributes.pkl", _cases(uint8=True))
    ds = lidc(f, sort_masks_by_area=True, image_size=32)
    s = ds[1]
    assert s.image.shape == (1, 32, 32) and s.masks.shape == (4, 32, 32)
    areas = s.masks.flatten(1).sum(1)
    assert areas.tolist() == sorted(areas.tolist())
    assert areas.tolist() == [k * 2 * 4 for k in (1, 2, 3, 4)]  # (k rows x 2 cols), x4 pixels at 2x


def test_split_never_puts_a_patient_on_two_sides(tmp_path: Path) -> None:
    f = _write(tmp_path / "data_lidc.pickle", _cases(n=40))
    ds = lidc(f, image_size=None)
    for seed in range(5):
        sp = make_split(ds, seed=seed, val_fraction=0.2, test_fraction=0.2)
        sides = [{ds.group_ids[i] for i in part} for part in (sp.train, sp.val, sp.test)]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
        assert sorted(sp.train + sp.val + sp.test) == list(range(40))


def test_bad_pickles(tmp_path: Path) -> None:
    raw = _cases()
    raw["slice02"]["masks"] = raw["slice02"]["masks"][:3]
    with pytest.raises(ValueError, match=r"case 'slice02'.*3 masks, but 4"):
        lidc(_write(tmp_path / "a.pkl", raw))
    raw = _cases()
    raw["slice01"]["masks"][0][0, 0] = 2
    with pytest.raises(ValueError, match=r"slice01.*binary"):
        lidc(_write(tmp_path / "b.pkl", raw))
    raw = _cases()
    raw["slice04"]["image"] = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match=r"slice04"):
        lidc(_write(tmp_path / "c.pkl", raw), image_size=None)
    raw = _cases()
    del raw["slice00"]["series_uid"]
    with pytest.raises(ValueError, match=r"slice00.*series_uid"):
        lidc(_write(tmp_path / "d.pkl", raw))
    raw = _cases()
    raw["slice00"]["image"] = raw["slice00"]["image"] * 300
    with pytest.raises(ValueError, match=r"slice00.*\[0,1\]"):
        lidc(_write(tmp_path / "e.pickle", raw))
    with pytest.raises(ValueError, match="expected a non-empty dict"):
        lidc(_write(tmp_path / "f.pkl", [1, 2]))


def test_malicious_pickle_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit",))

    with pytest.raises(UnsafePickleError, match="evil.pkl"):
        lidc(_write(tmp_path / "evil.pkl", {"a": Evil()}))


def _write_phiseg(path: Path, counts=(4, 2, 2), size: int = 16) -> dict:
    rng = np.random.default_rng(1)
    truth = {}
    with h5py.File(path, "w") as fh:
        for g, n in zip(("train", "val", "test"), counts, strict=True):
            img = rng.random((n, size, size))
            lab = (rng.random((n, size, size, 4)) > 0.7).astype(np.uint8)
            grp = fh.create_group(g)
            grp.create_dataset("images", data=img - 0.5)
            grp.create_dataset("labels", data=lab)
            grp.create_dataset("uids", data=np.arange(n, dtype=np.int64) // 2 + 100 * len(truth))
            truth[g] = (img, lab)
    return truth


def test_phiseg_hdf5(tmp_path: Path) -> None:
    truth = _write_phiseg(tmp_path / "data_lidc.hdf5")
    ds = lidc(tmp_path, image_size=None)
    assert len(ds) == 8 and ds.info.image_size == (16, 16)
    sp = ds.predefined_split()
    assert sp.train == (0, 1, 2, 3) and sp.val == (4, 5) and sp.test == (6, 7)
    s = ds[5]  # val case 1
    img, lab = truth["val"]
    assert torch.allclose(s.image[0], torch.from_numpy(img[1]).float(), atol=1e-6)
    assert torch.equal(s.masks, torch.from_numpy(np.moveaxis(lab[1], -1, 0)))
    assert ds.case_ids[5] == "val/1" and ds.group_ids[:4] == ["0", "0", "1", "1"]
    assert ds.group_ids[4] == "100" and ds.group_ids[6] == "200"
    assert make_split(ds).protocol == "predefined"
    # a pickled-and-restored dataset (DataLoader workers) reopens the file
    again = pickle.loads(pickle.dumps(ds))
    assert torch.equal(again[5].masks, s.masks)
    big = lidc(tmp_path / "data_lidc.hdf5", image_size=32, sort_masks_by_area=True)
    areas = big[0].masks.flatten(1).sum(1)
    assert big[0].image.shape == (1, 32, 32) and areas.tolist() == sorted(areas.tolist())


def test_phiseg_bad_layout(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "data_lidc.hdf5", "w") as fh:
        fh.create_group("train").create_dataset("images", data=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="lacks dataset 'labels'"):
        lidc(tmp_path)


def test_missing_root_and_detection(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist; expected layout:\n.*data_lidc.pickle"):
        lidc(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="needs a data root"):
        lidc()
    with pytest.raises(FileNotFoundError, match="no data_lidc.pickle"):
        lidc(tmp_path)
    assert detect_format(tmp_path / "x.h5")[1] == "phiseg"
    assert detect_format(tmp_path / "data_lidc.pickle")[1] == "knegt"
    with pytest.raises(ValueError, match="format"):
        lidc(tmp_path, format="dicom")
    with pytest.raises(TypeError, match="valid: format, image_size, sort_masks_by_area"):
        lidc(tmp_path, sort_by_area=True)
