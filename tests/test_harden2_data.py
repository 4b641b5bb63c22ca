"""Folder data, its cache and data check against damaged or hostile inputs: a cache entry damaged
in place is caught by its checksum, NIfTI size is capped from the header, broken file entries are
problems, resize is bounded, names with ``$`` and unwritable --out give one line, inverted
masks are flagged."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.datacheck import check_dataset
from mrseg_bench.datasets.folder import folder, scan_folder
from mrseg_bench.datasets.readers import decode_mask


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRSEG_BENCH_CACHE", str(tmp_path / "cache"))


def _folder(root: Path, n: int = 3, names=None, raters=("a", "b"), fg: tuple[int, int] = (255, 0)) -> Path:
    """n 16x16 grey images; each rater's mask is a 6x6 box of value fg[0] on fg[1]."""
    names = names or [f"c{i}" for i in range(n)]
    for i, name in enumerate(names):
        (root / "images").mkdir(parents=True, exist_ok=True)
        img = np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"{name}.png")
        for r in raters:
            (root / "masks" / r).mkdir(parents=True, exist_ok=True)
            m = np.full((16, 16), fg[1], np.uint8)
            m[3:9, 3:9] = fg[0]
            Image.fromarray(m).save(root / "masks" / r / f"{name}.png")
    return root


def _entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "decoded").rglob("*.npy"))


# item 2: a cache entry damaged in place, keeping its size
def test_cache_entry_overwritten_in_place_is_detected_named_and_rebuilt(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=1, raters=("a",))
    first = folder(root)
    truth = first[0].masks.clone()
    assert truth.sum() == 36
    mask_entry = next(e for e in _entries(tmp_path) if np.load(e).max() == 255)
    raw = bytearray(mask_entry.read_bytes())
    header = len(raw) - 16 * 16
    raw[header:] = b"\x01" * (16 * 16)  # every pixel foreground, same size
    mask_entry.write_bytes(bytes(raw))
    ds, problems, notes = scan_folder(root)
    assert not problems
    assert any(str(mask_entry) in n and "checksum mismatch" in n for n in notes), notes
    assert np.array_equal(ds[0].masks.numpy(), truth.numpy())  # rebuilt from the source
    assert ds.cache.misses == 1 and ds.cache.hits == 1


def test_cache_entry_swapped_for_another_array_is_not_blamed_on_the_source(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=1, raters=("a",))
    folder(root)
    mask_entry = next(e for e in _entries(tmp_path) if np.load(e).max() == 255)
    np.save(mask_entry, np.zeros((5, 5), np.uint8))  # np.save writes to the same name
    ds, problems, notes = scan_folder(root)
    assert not problems  # not "mask size differs" on the intact mask file
    assert any(str(mask_entry) in n for n in notes) and ds[0].masks.sum() == 36


# item 3: NIfTI voxel cap from the header
def test_huge_nifti_refused_from_its_header_before_reading(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.nii.gz"
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1000, 1000, 1000))
    hdr.set_data_dtype(np.uint8)
    with gzip.open(path, "wb") as fh:  # header only, then a little data: a few hundred bytes
        fh.write(hdr.binaryblock + b"\x00" * 4 + b"\x00" * 1024)
    assert path.stat().st_size < 2000
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"big\.nii\.gz: NIfTI header declares shape \(1000, 1000, 1000\) "
                                         r"\(1,000,000,000 voxels\).*MRSEG_MAX_VOXELS"):
        decode_mask(path)
    assert tracemalloc.get_traced_memory()[1] < 8 << 20
    tracemalloc.stop()
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), str(small))
    assert decode_mask(small).shape == (4, 4, 4)
    monkeypatch.setenv("MRSEG_MAX_VOXELS", "63")
    with pytest.raises(ValueError, match="64 voxels"):
        decode_mask(small)


def test_huge_nifti_in_a_folder_writes_no_cache_entry(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=1, raters=("a",))
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1000, 1000, 1000))
    with gzip.open(root / "images" / "vol.nii.gz", "wb") as fh:
        fh.write(hdr.binaryblock + b"\x00" * 1028)
    _, problems, _ = scan_folder(root)
    assert any("vol.nii.gz" in p.file and "voxel cap" in p.reason for p in problems)
    assert all(e.stat().st_size < 1 << 20 for e in _entries(tmp_path))


# item 11: dangling symlinks and folders at file paths
def test_dangling_mask_symlink_and_folder_are_problems_not_missing_raters(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=2)
    (root / "masks" / "a" / "c0.png").unlink()
    os.symlink(tmp_path / "nowhere.png", root / "masks" / "a" / "c0.png")
    (root / "masks" / "b" / "c1.png").unlink()
    (root / "masks" / "b" / "c1.png").mkdir()
    _, problems, _ = scan_folder(root)
    by_file = {p.file: p.reason for p in problems}
    assert "symlink to a missing file" in by_file[str(root / "masks" / "a" / "c0.png")]
    assert "a folder" in by_file[str(root / "masks" / "b" / "c1.png")]


def test_dangling_image_symlink_is_named_without_blaming_its_masks(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=2)
    (root / "images" / "c1.png").unlink()
    os.symlink(tmp_path / "gone.png", root / "images" / "c1.png")
    _, problems, _ = scan_folder(root)
    assert [p.file for p in problems] == [str(root / "images" / "c1.png")]
    assert "symlink to a missing file" in problems[0].reason


# item 14: resize bounds
@pytest.mark.parametrize("value", [100000, [16, 100000], 0])
def test_resize_out_of_bounds_is_a_problem(tmp_path: Path, value) -> None:
    root = _folder(tmp_path / "d", n=1)
    (root / "dataset.json").write_text(json.dumps({"resize": value}))
    ds, problems, _ = scan_folder(root)
    assert ds is None and len(problems) == 1
    assert problems[0].file == str(root / "dataset.json") and "resize=" in problems[0].reason


def test_resize_within_bounds_still_works(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=1)
    (root / "dataset.json").write_text(json.dumps({"resize": [8, 4096]}))
    ds, problems, _ = scan_folder(root)
    assert not problems and ds.info.image_size == (8, 4096)


# items 12, 13: data check --out
def test_data_check_names_with_dollar_signs_draw_and_print(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", names=["c0$\\nosuchcmd$", "c1"], raters=("r$\\x$", "b"))
    res = CliRunner().invoke(app, ["data", "check", "--dataset", "folder", "--data-root", str(root),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "preview.png").stat().st_size > 1000


def test_data_check_unwritable_out_is_one_line_exit_2(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(app, ["data", "check", "--dataset", "folder", "--data-root", str(root),
                                   "--out", str(blocker / "out")])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(blocker / "out") in lines[0] and "writable --out" in lines[0]


# item 23: inverted masks and the non-binary hint
def test_non_binary_hint_names_the_minority_value(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=1, raters=("a",), fg=(0, 255))  # black object on white
    m = np.array(Image.open(root / "masks" / "a" / "c0.png"))
    m[0, 0] = 128  # one anti-aliased pixel: not binary
    Image.fromarray(m).save(root / "masks" / "a" / "c0.png")
    _, problems, _ = scan_folder(root)
    assert len(problems) == 1
    reason = problems[0].reason
    assert "minority value 0 (14% of the pixels; 255 covers 86%)" in reason and '"label": 0' in reason


def test_every_rater_above_half_foreground_warns_inverted(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=2, fg=(0, 255))  # binary 0/255, object 0: read inverted
    res = check_dataset("folder", root)
    assert res.ok and res.summary["foreground_fraction"]["a"] == pytest.approx(1 - 36 / 256)
    assert any("masks may be inverted" in n and "0.86-0.86" in n for n in res.notes)
    (root / "dataset.json").write_text(json.dumps({"label": 0}))
    fixed = check_dataset("folder", root)
    assert fixed.summary["foreground_fraction"]["a"] == pytest.approx(36 / 256)
    assert not any("inverted" in n for n in fixed.notes)


def test_data_check_read_only_out_is_one_line_exit_2(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    root = _folder(tmp_path / "d", n=1)
    (tmp_path / "ro").mkdir()

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)  # what a read-only folder answers (root ignores modes)
    res = CliRunner().invoke(app, ["data", "check", "--dataset", "folder", "--data-root", str(root),
                                   "--out", str(tmp_path / "ro" / "out")])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Permission denied" in lines[0] and str(tmp_path / "ro" / "out") in lines[0]
    assert not (tmp_path / "ro" / "out").exists()
