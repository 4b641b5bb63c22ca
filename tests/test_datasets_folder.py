"""The ``folder`` dataset: every supported format loads into the same tensors; bad inputs are
listed, each naming its file; cases.csv fixes splits; 3-D NIfTI volumes become slices; the
decoded-array cache is used on the second read."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from mrseg_bench.datasets.folder import FolderDataError, folder, scan_folder
from mrseg_bench.datasets.splits import make_split

RATERS = ("alice", "bob", "carol")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRSEG_BENCH_CACHE", str(tmp_path / "cache"))


def _data(n: int = 4, size: tuple[int, int] = (12, 10), rgb: bool = False, seed: int = 0):
    """Images uint8 (each holds 0 and 255) and boxes per rater (rater k box grows with k)."""
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if rgb else size
    imgs = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    imgs[:, 0, 0] = 0
    imgs[:, 0, 1] = 255
    masks = np.zeros((n, len(RATERS), *size), dtype=np.uint8)
    for i in range(n):
        for r in range(len(RATERS)):
            masks[i, r, 2 + i % 3: 5 + i % 3 + r, 3:7] = 1
    return imgs, masks


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.name.lower()
    if ext.endswith(".npy"):
        np.save(path, arr)
    elif ext.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    else:
        Image.fromarray(arr).save(path)


def _make(root: Path, imgs: np.ndarray, masks: np.ndarray, img_ext: str, mask_ext: str,
          mask_scale: int = 255, mask_dtype=np.uint8) -> Path:
    for i in range(len(imgs)):
        _save(root / "images" / f"case{i}{img_ext}", imgs[i])
        for r, name in enumerate(RATERS):
            _save(root / "masks" / name / f"case{i}{mask_ext}", (masks[i, r] * mask_scale).astype(mask_dtype))
    return root


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    samples = [ds[i] for i in range(len(ds))]
    return (torch.stack([s.image for s in samples]), torch.stack([s.masks for s in samples]),
            torch.stack([s.rater_valid for s in samples]))


@pytest.mark.parametrize("img_ext,mask_ext,scale", [
    (".png", ".png", 255), (".tif", ".tiff", 1), (".npy", ".npy", 1), (".bmp", ".png", 255),
    (".npy", ".png", 255), (".png", ".nii.gz", 1),
])
def test_grey_formats_load_the_same_tensors(tmp_path: Path, img_ext: str, mask_ext: str, scale: int) -> None:
    imgs, masks = _data()
    ds = folder(_make(tmp_path / "d", imgs, masks, img_ext, mask_ext, scale))
    image, m, valid = _tensors(ds)
    expect = torch.from_numpy(imgs).float()[:, None] / 255  # per-image min-max: 0 and 255 present
    assert image.dtype == torch.float32 and torch.allclose(image, expect, atol=1e-6)
    assert torch.equal(m, torch.from_numpy(masks)) and bool(valid.all())
    assert ds.info.rater_names == RATERS and ds.info.in_channels == 1 and ds.info.image_size == (12, 10)
    assert ds.case_ids == [f"case{i}" for i in range(4)] and ds.group_ids == ds.case_ids


@pytest.mark.parametrize("img_ext", [".png", ".tif", ".npy"])
def test_rgb_formats_load_the_same_tensors(tmp_path: Path, img_ext: str) -> None:
    imgs, masks = _data(rgb=True)
    ds = folder(_make(tmp_path / "d", imgs, masks, img_ext, ".png"))
    image, m, _ = _tensors(ds)
    assert ds.info.in_channels == 3
    assert torch.allclose(image, torch.from_numpy(imgs).float().permute(0, 3, 1, 2) / 255, atol=1e-6)
    assert torch.equal(m, torch.from_numpy(masks))


def test_uint16_and_float_images_normalised_per_image(tmp_path: Path) -> None:
    imgs, masks = _data()
    ref = _tensors(folder(_make(tmp_path / "u8", imgs, masks, ".png", ".png")))[0]
    u16 = _tensors(folder(_make(tmp_path / "u16", imgs.astype(np.uint16) * 257, masks, ".png", ".png")))[0]
    f = _tensors(folder(_make(tmp_path / "f", imgs.astype(np.float32) * 0.01 - 3, masks, ".npy", ".png")))[0]
    assert torch.allclose(u16, ref, atol=1e-6) and torch.allclose(f, ref, atol=1e-5)
    raw = _tensors(folder(tmp_path / "u8", normalize="none"))[0]
    assert torch.equal(raw, torch.from_numpy(imgs).float()[:, None])
    imgs2 = imgs.copy()
    imgs2[0] //= 2  # case0 now spans 0..127: per-image stretches it, dataset-wide does not
    d2 = _make(tmp_path / "half", imgs2, masks, ".npy", ".png")
    assert float(folder(d2)[0].image.max()) == 1.0
    assert float(folder(d2, normalize="dataset")[0].image.max()) == pytest.approx(127 / 255)


def test_grey_among_rgb_is_repeated(tmp_path: Path) -> None:
    imgs, masks = _data(rgb=True)
    root = _make(tmp_path / "d", imgs, masks, ".png", ".png")
    (root / "images" / "case0.png").unlink()
    _save(root / "images" / "case0.png", imgs[0, ..., 0])
    s = folder(root)[0]
    assert s.image.shape == (3, 12, 10) and torch.equal(s.image[0], s.image[2])


def test_mask_value_conventions(tmp_path: Path) -> None:
    imgs, masks = _data()
    a = _tensors(folder(_make(tmp_path / "a", imgs, masks, ".png", ".png", 255)))[1]  # 0/255
    b = _tensors(folder(_make(tmp_path / "b", imgs, masks, ".png", ".png", 1)))[1]  # 0/1
    c = _tensors(folder(_make(tmp_path / "c", imgs, masks.astype(bool), ".png", ".npy", 1, bool)))[1]
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, torch.from_numpy(masks))


def test_multi_label_masks_need_label(tmp_path: Path) -> None:
    imgs, masks = _data()
    multi = masks.copy()
    multi[:, :, 0, :] = 2  # a second label on row 0
    root = _make(tmp_path / "d", imgs, multi, ".png", ".png", 1)
    ds, problems, _ = scan_folder(root)
    assert ds is None and len(problems) == 4 * 3  # every mask named
    assert all("not binary" in p.reason and p.file.endswith(".png") and "/masks/" in p.file for p in problems)
    assert str(root / "masks" / "alice" / "case0.png") in {p.file for p in problems}
    one = _tensors(folder(root, label="1"))[1]
    assert torch.equal(one, torch.from_numpy(masks).masked_fill(torch.from_numpy(multi == 2), 0))
    two = _tensors(folder(root, label="2"))[1]
    assert torch.equal(two, torch.from_numpy((multi == 2).astype(np.uint8)))
    both = _tensors(folder(root, label="1,2"))[1]
    assert torch.equal(both, torch.from_numpy((multi > 0).astype(np.uint8)))
    (root / "dataset.json").write_text(json.dumps({"label": "any"}))
    assert torch.equal(_tensors(folder(root))[1], both)


def test_rgb_and_palette_masks_are_label_maps(tmp_path: Path) -> None:
    imgs, masks = _data(n=2)
    root = tmp_path / "d"
    for i in range(2):
        _save(root / "images" / f"case{i}.png", imgs[i])
        rgb = np.zeros((12, 10, 3), np.uint8)
        rgb[masks[i, 0] == 1] = (255, 0, 0)
        rgb[0, :] = (0, 255, 0)  # another label
        _save(root / "masks" / "alice" / f"case{i}.png", rgb)
        pal = Image.fromarray(masks[i, 1] * 3, mode="P")  # palette index 3 = foreground
        pal.putpalette([0, 0, 0] * 3 + [255, 255, 0] + [0, 0, 0] * 252)
        (root / "masks" / "bob").mkdir(parents=True, exist_ok=True)
        pal.save(root / "masks" / "bob" / f"case{i}.png")
    with pytest.raises(FolderDataError, match="not binary"):
        folder(root)
    (root / "dataset.json").write_text(json.dumps({"label": ["#ff0000", 3]}))
    ds = folder(root)
    assert ds.info.rater_names == ("alice", "bob")
    assert torch.equal(_tensors(ds)[1], torch.from_numpy(masks[:, :2]))


def test_missing_rater_file_is_invalid_rater(tmp_path: Path) -> None:
    imgs, masks = _data()
    root = _make(tmp_path / "d", imgs, masks, ".png", ".png")
    (root / "masks" / "bob" / "case2.png").unlink()
    ds = folder(root)
    s = ds[2]
    assert s.rater_valid.tolist() == [True, False, True] and int(s.masks[1].sum()) == 0
    assert torch.equal(s.masks[2], torch.from_numpy(masks[2, 2]))


def test_every_problem_listed_with_its_file(tmp_path: Path) -> None:
    imgs, masks = _data(n=5)
    root = _make(tmp_path / "d", imgs, masks, ".png", ".png")
    (root / "images" / "case0.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")  # corrupted
    (root / "masks" / "alice" / "case1.png").unlink()
    _save(root / "masks" / "alice" / "case1.png", np.zeros((8, 8), np.uint8))  # size mismatch
    for r in RATERS:
        (root / "masks" / r / "case2.png").unlink()  # case with no rater
    _save(root / "images" / "case3.npy", imgs[3])  # duplicate case id
    (root / "masks" / "dave").mkdir()  # empty rater folder
    (root / "cases.csv").write_text("case,group,split\ncase0,p0,train\ncase1,p1,train\ncase2,p1,test\n"
                                    "case3,p3,val\n")  # case4 missing; group p1 split
    ds, problems, _ = scan_folder(root)
    assert ds is None
    text = [str(p) for p in problems]
    expect = [
        (root / "images" / "case0.png", "not a readable image"),
        (root / "masks" / "alice" / "case1.png", "mask size (8, 8) differs from its image (12, 10)"),
        (root / "images" / "case2.png", "has no valid rater"),
        (root / "images" / "case3.png", "duplicate case id 'case3' (also case3.npy)"),
        (root / "masks" / "dave", "rater folder with no mask files"),
        (root / "images" / "case4.png", "missing from cases.csv"),
        (root / "cases.csv", "group 'p1' is split across test, train"),
    ]
    for path, reason in expect:
        hits = [t for t in text if t.startswith(f"{path}: ") and reason in t]
        assert hits, f"no problem {reason!r} for {path}: {text}"
    with pytest.raises(FolderDataError) as err:
        folder(root)
    first_line = str(err.value).splitlines()[0]
    assert f"{len(problems)} problem(s)" in first_line and "data check" in first_line


def test_cases_csv_fixes_the_split_and_groups(tmp_path: Path) -> None:
    imgs, masks = _data(n=6)
    root = _make(tmp_path / "d", imgs, masks, ".png", ".png")
    rows = ["case,group,split"] + [f"case{i},p{i // 2},{['train', 'train', 'val', 'val', 'test', 'test'][i]}"
                                   for i in range(6)]
    (root / "cases.csv").write_text("\n".join(rows) + "\n")
    ds = folder(root)
    assert ds.group_ids == ["p0", "p0", "p1", "p1", "p2", "p2"]
    split = make_split(ds, seed=3)
    assert (split.train, split.val, split.test, split.protocol) == ((0, 1), (2, 3), (4, 5), "predefined")
    (root / "cases.csv").write_text("case,group\n" + "".join(f"case{i},p{i // 3}\n" for i in range(6)))
    ds = folder(root)
    assert ds.predefined_split() is None
    drawn = make_split(ds, val_fraction=0.0, test_fraction=0.4)
    assert {ds.group_ids[i] for i in drawn.train}.isdisjoint({ds.group_ids[i] for i in drawn.test})


def test_sizes_differ_without_resize_and_masks_never_interpolated(tmp_path: Path) -> None:
    imgs, masks = _data(n=3)
    root = _make(tmp_path / "d", imgs, masks, ".png", ".png")
    big = np.kron(imgs[0], np.ones((2, 2), np.uint8))
    (root / "images" / "case0.png").unlink()
    _save(root / "images" / "case0.png", big)
    for r, name in enumerate(RATERS):
        _save(root / "masks" / name / "case0.png", np.kron(masks[0, r], np.ones((2, 2), np.uint8)) * 255)
    with pytest.raises(FolderDataError, match=r"case0.png: image size \(24, 20\) differs"):
        folder(root)
    (root / "dataset.json").write_text(json.dumps({"resize": [12, 10]}))
    ds = folder(root)
    assert ds.info.image_size == (12, 10)
    m = _tensors(ds)[1]
    assert set(m.unique().tolist()) <= {0, 1} and torch.equal(m, torch.from_numpy(masks))
    assert folder(root, image_size=7)[0].masks.shape == (3, 7, 7)


def _volume_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """One NIfTI volume (12,10,5) and the same data as 2-D PNG slices named <vol>_s<k>."""
    imgs, masks = _data(n=5)
    vol = np.moveaxis(imgs, 0, -1)  # (12,10,5), slice k = imgs[k]
    mvol = np.moveaxis(masks, 0, -1)  # (3,12,10,5)
    mvol[:, :, :, 0] = 0  # slice 0 unmarked
    mvol[1, :, :, 4] = 0
    mvol[0, :, :, 4] = 0
    mvol[2, :, :, 4] = 0  # slice 4 unmarked
    _save(root / "images" / "vol.nii.gz", vol)
    for r, name in enumerate(RATERS):
        _save(root / "masks" / name / "vol.nii.gz", mvol[r])
    return vol, mvol


def test_nifti_volume_as_slices_equals_png_slices(tmp_path: Path) -> None:
    vol, mvol = _volume_folder(tmp_path / "v")
    for k in range(5):
        _save(tmp_path / "p" / "images" / f"vol_s{k}.png", vol[..., k])
        for r, name in enumerate(RATERS):
            _save(tmp_path / "p" / "masks" / name / f"vol_s{k}.png", mvol[r, ..., k] * 255)
    ds = folder(tmp_path / "v")
    flat = folder(tmp_path / "p")
    assert ds.case_ids == flat.case_ids == [f"vol_s{k}" for k in range(5)]
    assert ds.group_ids == ["vol"] * 5 and ds.volume_ids == ["vol"] * 5
    for a, b in zip(_tensors(ds), _tensors(flat), strict=True):
        assert torch.equal(a, b)
    fg = folder(tmp_path / "v", slices="foreground")
    assert fg.case_ids == ["vol_s1", "vol_s2", "vol_s3"]
    ctx = folder(tmp_path / "v", slices="foreground", context=1)
    assert ctx.case_ids == [f"vol_s{k}" for k in range(5)]
    ax0 = folder(tmp_path / "v", slice_axis=0)
    assert len(ax0) == 12 and ax0.info.image_size == (10, 5)
    assert torch.equal(ax0[3].masks, torch.from_numpy(mvol[:, 3]))


def test_cache_second_scan_decodes_nothing(tmp_path: Path) -> None:
    imgs, masks = _data()
    root = _make(tmp_path / "d", imgs, masks, ".png", ".png")
    first = folder(root)
    assert first.cache.misses == 16 and first.cache.dir.parent == tmp_path / "cache"
    second = folder(root)
    a = _tensors(second)
    assert second.cache.misses == 0 and second.cache.hits >= 16
    assert all(torch.equal(x, y) for x, y in zip(a, _tensors(first), strict=True))
    _save(root / "images" / "case1.png", 255 - imgs[1])  # changed content: decoded again
    third = folder(root)
    assert third.cache.misses == 1 and torch.allclose(third[1].image, 1 - a[0][1], atol=1e-6)
    off = folder(root, cache=False)
    assert off.cache.misses == 0 and off.cache.hits == 0 and torch.equal(_tensors(off)[1], a[1])


def test_dataset_json_options_and_errors(tmp_path: Path) -> None:
    imgs, masks = _data()
    root = _make(tmp_path / "d", imgs, masks, ".png", ".png")
    (root / "dataset.json").write_text(json.dumps({"name": "mine", "rater_identity": "anonymous",
                                                   "raters": ["carol", "alice"], "channels": 3}))
    ds = folder(root)
    assert ds.info.name == "mine" and ds.info.rater_identity == "anonymous"
    assert ds.info.rater_names == ("carol", "alice") and ds.info.in_channels == 3
    assert torch.equal(ds[0].masks, torch.from_numpy(masks[0, [2, 0]]))
    (root / "dataset.json").write_text(json.dumps({"slices": "some", "colour": 1, "raters": ["zed"]}))
    _, problems, _ = scan_folder(root)
    reasons = " | ".join(str(p) for p in problems)
    assert "slices='some'" in reasons and "unknown key(s) colour" in reasons and "masks/zed" in reasons
    assert all(p.file.startswith(str(root)) for p in problems)


def test_fingerprint_covers_every_image_and_mask_file(tmp_path: Path) -> None:
    """The run identity hashes the folder's files: one changed mask changes the fingerprint."""
    from mrseg_bench.identity import data_fingerprint

    imgs, masks = _data()
    root = _make(tmp_path / "d", imgs, masks, ".png", ".png")
    ds = folder(root)
    files = {p.relative_to(root).as_posix() for p in ds.files()}
    assert files == {f"images/case{i}.png" for i in range(4)} | {
        f"masks/{r}/case{i}.png" for r in RATERS for i in range(4)}
    before = data_fingerprint(ds)
    masks[1, 0] = 1 - masks[1, 0]
    _save(root / "masks" / RATERS[0] / "case1.png", (masks[1, 0] * 255).astype(np.uint8))
    assert data_fingerprint(folder(root)) != before
