"""Data errors (issue 12.13): NaN pixels and 0x0 images name the file and the case."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mrseg_bench.datasets.in_memory import read_matting_pickle
from mrseg_bench.types import MultiRaterSample


def _case(image, masks=None):
    h, w = image.shape
    masks = masks if masks is not None else [np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8)]
    return {"image": image, "masks": masks, "series_uid": "p1_a"}


def _write(tmp_path, bad):
    good = np.full((4, 4), 0.5, np.float32)
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps({"ok": _case(good), "broken": bad}, protocol=4))
    return path


def test_nan_pixels_are_a_data_error_naming_file_and_case(tmp_path):
    img = np.full((4, 4), 0.5, np.float32)
    img[1, 2] = np.nan
    path = _write(tmp_path, _case(img))
    with pytest.raises(ValueError, match=r"data\.pkl: case 'broken': image has 1 NaN and 0 infinite pixel"):
        read_matting_pickle(path, None)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_empty_image_is_a_data_error(tmp_path, dtype):
    img = np.zeros((0, 0), dtype)
    path = _write(tmp_path, _case(img, masks=[np.zeros((0, 0), np.uint8)] * 2))
    with pytest.raises(ValueError, match=r"data\.pkl: case 'broken': image is empty \(shape \(0, 0\)\)"):
        read_matting_pickle(path, (8, 8))


def test_sample_contract_refuses_nan_and_empty_images():
    masks = torch.zeros(2, 3, 3, dtype=torch.uint8)
    valid = torch.ones(2, dtype=torch.bool)
    img = torch.zeros(1, 3, 3)
    img[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="src: case c: image has NaN"):
        MultiRaterSample(img, masks, valid, "c", "g").validate("src: case c")
    with pytest.raises(ValueError, match="src: image is empty"):
        MultiRaterSample(torch.zeros(1, 0, 0), torch.zeros(2, 0, 0, dtype=torch.uint8), valid, "c", "g").validate("src")
