"""QUBIQ: the real brain-growth pickle (7 raters) and a small NIfTI tree written here."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrseg_bench.datasets import make_split, safe_load
from mrseg_bench.registry import DATASETS

QUBIQ_DIR = Path(__file__).parents[2] / "shared" / "data" / "qubiq_brain_growth"
qubiq = DATASETS.get("qubiq")


def test_real_brain_growth_pickle() -> None:
    ds = qubiq(QUBIQ_DIR / "brain_growth_alpha.pkl", image_size=None)
    raw = safe_load(QUBIQ_DIR / "brain_growth_alpha.pkl")
    assert len(ds) == 39 and ds.info.num_raters == 7 and ds.info.image_size == (128, 128)
    assert ds.info.rater_identity == "fixed" and ds.info.in_channels == 1
    assert ds.case_ids[0] == "case01" and ds.group_ids[:2] == ["case01", "case02"]
    for i in (0, 20, 38):
        s = ds[i]
        s.validate()
        r = raw[ds.case_ids[i]]
        assert torch.allclose(s.image[0], torch.from_numpy(r["image"].astype(np.float32) / 255))
        for k in range(7):  # rater order as in the file
            assert torch.equal(s.masks[k], torch.from_numpy(r["masks"][k]))
    imgs = torch.stack([ds[i].image for i in range(39)])
    assert imgs.min() >= 0 and imgs.max() <= 1 and imgs.max() > 0.9
    sp = make_split(ds, seed=0)
    assert len(sp.test) == 8 and len(sp.val) == 6 and len(sp.train) == 25


def test_real_pickle_from_folder_resized() -> None:
    ds = qubiq(QUBIQ_DIR, image_size=64)  # folder with a .pkl and no task folders
    s = ds[0]
    assert s.image.shape == (1, 64, 64) and s.masks.shape == (7, 64, 64)
    assert set(s.masks.unique().tolist()) <= {0, 1}
    full = qubiq(QUBIQ_DIR)[0].masks.float().sum((1, 2))
    assert torch.allclose(s.masks.float().sum((1, 2)) * 4, full, rtol=0.1)


def _nii(path: Path, arr: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))


def _case(folder: Path, img: np.ndarray, segs: dict[tuple[int, int], np.ndarray]) -> None:
    folder.mkdir(parents=True)
    _nii(folder / "image.nii.gz", img)
    for (task, rater), m in segs.items():
        _nii(folder / f"task{task:02d}_seg{rater:02d}.nii.gz", m)


def _box(size: int, rows: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[:rows] = 1
    return m


def test_nifti_layout_brain_growth(tmp_path: Path) -> None:
    root = tmp_path / "qubiq2020"
    img = np.arange(16 * 16, dtype=np.float64).reshape(16, 16) * 3 + 100
    _case(root / "brain-growth" / "Training" / "case01", img,
          {(1, r): _box(16, r) for r in range(1, 8)})
    _case(root / "brain-growth" / "Training" / "case02", img[..., None],  # (H,W,1) squeezed
          {(1, r): _box(16, r) * 255 for r in range(1, 7)})  # 0/255 masks, rater 7 missing
    _case(root / "brain-growth" / "Validation" / "case01", img, {(1, r): _box(16, 1) for r in range(1, 8)})
    ds = qubiq(root, image_size=None)
    assert len(ds) == 3 and ds.info.num_raters == 7 and ds.info.in_channels == 1
    assert ds.case_ids == ["Training/case01", "Training/case02", "Validation/case01"]
    s0, s1 = ds[0], ds[1]
    assert s0.masks.flatten(1).sum(1).tolist() == [16 * r for r in range(1, 8)]  # rater order
    assert s1.rater_valid.tolist() == [True] * 6 + [False]
    assert s1.masks[6].sum() == 0 and s1.masks[5].sum() == 16 * 6
    assert float(s0.image.min()) == 0.0 and float(s0.image.max()) == 1.0  # min-max scaled
    assert torch.allclose(s0.image[0], torch.from_numpy((img - img.min()) / (img.max() - img.min())).float())
    sp = ds.predefined_split()
    assert sp.train == (0, 1) and sp.val == () and sp.test == (2,)
    full = make_split(ds, val_fraction=0.5)
    assert full.test == (2,) and len(full.val) == 1 and len(full.train) == 1
    resized = qubiq(root / "brain-growth", image_size=32)  # the task folder itself as root
    assert resized[0].masks.shape == (7, 32, 32) and resized[0].masks[2].sum() == 3 * 16 * 4


def test_nifti_subtasks_and_channels(tmp_path: Path) -> None:
    root = tmp_path
    img = np.random.default_rng(0).random((16, 16, 2))  # 2 channels
    segs = {(t, r): _box(16, t + r) for t in (1, 2) for r in range(1, 7)}
    _case(root / "prostate" / "Training" / "case01", img, segs)
    _case(root / "prostate" / "Training" / "case02", img, segs)
    ds = qubiq(root, task="prostate", subtask=2, image_size=None)
    assert ds.info.num_raters == 6 and ds.info.in_channels == 2
    assert ds[0].masks.flatten(1).sum(1).tolist() == [16 * (2 + r) for r in range(1, 7)]
    with pytest.raises(ValueError, match="sub-tasks 1..2"):
        qubiq(root, task="prostate", subtask=3)


def test_nifti_errors(tmp_path: Path) -> None:
    bad = _box(16, 3)
    bad[5, 5] = 2
    _case(tmp_path / "kidney" / "Training" / "case01", np.ones((16, 16)), {(1, 1): bad})
    with pytest.raises(ValueError, match=r"task01_seg01.*binary"):
        qubiq(tmp_path, task="kidney")
    _case(tmp_path / "kidney2" / "kidney" / "Training" / "case01", np.ones((16, 16)),
          {(1, 1): np.zeros((8, 8), np.uint8)})
    with pytest.raises(ValueError, match="differs from its image"):
        qubiq(tmp_path / "kidney2", task="kidney")
    _case(tmp_path / "k3" / "kidney" / "Training" / "case01", np.ones((16, 16)),
          {(1, 4): _box(16, 1)})
    with pytest.raises(ValueError, match="outside 1..3"):
        qubiq(tmp_path / "k3", task="kidney")
    # a 3-D image whose masks are 2-D is neither a 2-D slice nor a volume (3-D volumes load, see below)
    _case(tmp_path / "vol" / "kidney" / "Training" / "case01", np.ones((16, 16, 9)),
          {(1, 1): np.zeros((16, 16), np.uint8)})
    with pytest.raises(ValueError, match="not a 2-D slice"):
        qubiq(tmp_path / "vol", task="kidney")
    with pytest.raises(FileNotFoundError, match="no brain-tumor/Training"):
        qubiq(tmp_path / "vol", task="brain-tumor")
    with pytest.raises(FileNotFoundError, match="expected layout"):
        qubiq(tmp_path / "absent")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRSEG_BENCH_CACHE", str(tmp_path / "cache"))


def test_nifti_3d_task_as_slices(tmp_path: Path) -> None:
    """A QUBIQ 2021 3-D task (e.g. pancreas, 2 raters) loads as 2-D slices grouped by volume."""
    root = tmp_path / "qubiq2021"
    vol = np.arange(12 * 10 * 6, dtype=np.float64).reshape(12, 10, 6)  # (X,Y,Z)
    segs = {}
    for r in (1, 2):
        m = np.zeros((12, 10, 6), np.uint8)
        m[2:6, 3:7, 2:4] = 1  # slices 2, 3 for both raters
        if r == 2:
            m[2:4, 3:5, 4] = 1  # rater 2 also marks slice 4
        segs[(1, r)] = m
    _case(root / "pancreas" / "Training" / "case01", vol, segs)
    _case(root / "pancreas" / "Validation" / "case02", vol, {(1, 1): segs[(1, 1)]})  # rater 2 missing
    ds = qubiq(root, task="pancreas", image_size=None)
    assert ds.info.num_raters == 2 and ds.info.image_size == (12, 10) and len(ds) == 12
    assert ds.case_ids[:2] == ["Training/case01_s0", "Training/case01_s1"]
    assert set(ds.group_ids[:6]) == {"Training/case01"} and ds.volume_ids[7] == "Validation/case02"
    s3 = ds[3]
    assert torch.equal(s3.masks[0], torch.from_numpy(segs[(1, 1)][:, :, 3]))
    assert s3.masks.flatten(1).sum(1).tolist() == [16, 16]
    lo, hi = vol.min(), vol.max()  # min-max over the whole volume, not per slice
    assert torch.allclose(s3.image[0], torch.from_numpy((vol[:, :, 3] - lo) / (hi - lo)).float())
    assert ds[9].rater_valid.tolist() == [True, False]
    split = ds.predefined_split()
    assert split.train == tuple(range(6)) and split.test == tuple(range(6, 12))
    fg = qubiq(root, task="pancreas", image_size=None, slices="foreground", context=1)
    # case01: foreground slices 2,3,4 (+1 context: 1..5); case02: 2,3 (+1: 1..4)
    assert fg.case_ids == [f"Training/case01_s{k}" for k in range(1, 6)] + \
        [f"Validation/case02_s{k}" for k in range(1, 5)]
    ax0 = qubiq(root, task="pancreas", image_size=None, slice_axis=0)
    assert len(ax0) == 24 and ax0.info.image_size == (10, 6)
    with pytest.raises(ValueError, match="slices="):
        qubiq(root, task="pancreas", slices="some")
