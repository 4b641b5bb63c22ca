"""The embedded synthetic set: deterministic, contract-valid, raters with their documented styles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrseg_bench.datasets.synthetic import (
    DEFAULT_STYLES,
    EXPECTED_AREA_ORDER,
    SyntheticMultiRater,
    _dice,
)
from mrseg_bench.registry import DATASETS


@pytest.fixture(scope="module")
def ds64() -> SyntheticMultiRater:
    return DATASETS.get("synthetic")(num_cases=48, image_size=64, seed=3)


@pytest.fixture(scope="module")
def masks64(ds64: SyntheticMultiRater) -> torch.Tensor:
    return torch.stack([ds64[i].masks for i in range(len(ds64))])


def test_contract_and_info(ds64: SyntheticMultiRater) -> None:
    s = ds64[0]
    s.validate()
    assert s.image.shape == (1, 64, 64) and s.image.dtype == torch.float32
    assert s.masks.shape == (4, 64, 64) and s.masks.dtype == torch.uint8
    assert s.rater_valid.all()
    assert ds64.info.num_raters == 4 and ds64.info.rater_identity == "fixed"
    assert ds64.info.rater_names == ("tight", "generous", "smooth", "strong-only")
    assert len(set(ds64.group_ids)) == len(ds64) == 48
    assert ds64.case_ids == ds64.group_ids and ds64.predefined_split() is None
    assert [st.name for st in ds64.rater_styles] == list(ds64.info.rater_names)


def test_deterministic_per_seed_and_index() -> None:
    a = SyntheticMultiRater(num_cases=10, image_size=32, seed=7)
    b = SyntheticMultiRater(num_cases=50, image_size=32, seed=7, cache=False)
    c = SyntheticMultiRater(num_cases=10, image_size=32, seed=8)
    for i in (9, 0, 5):  # access order and set size do not matter
        assert torch.equal(a[i].image, b[i].image) and torch.equal(a[i].masks, b[i].masks)
    assert torch.equal(a[5].image, a[5].image)  # cached copy unchanged
    assert not torch.equal(a[5].image, c[5].image)
    assert not torch.equal(a[4].image, a[5].image)
    assert torch.equal(a[-1].masks, a[9].masks)


def test_returned_samples_are_copies() -> None:
    ds = SyntheticMultiRater(num_cases=2, image_size=32)
    s = ds[0]
    s.image.zero_()
    s.masks.zero_()
    assert ds[0].image.abs().sum() > 0


def test_mean_area_ordered_as_documented(ds64: SyntheticMultiRater, masks64: torch.Tensor) -> None:
    area = masks64.float().sum((2, 3)).mean(0)
    assert torch.argsort(area).tolist() == list(EXPECTED_AREA_ORDER) == [0, 3, 2, 1]
    truth = torch.stack([ds64.true_mask(i) for i in range(len(ds64))]).float().sum((1, 2)).mean()
    assert area[0] < 0.5 * truth < area[3] < area[2] < truth * 1.2 < 1.6 * truth < area[1]


def test_styles_hold_per_case(ds64: SyntheticMultiRater, masks64: torch.Tensor) -> None:
    tight, generous = masks64[:, 0].bool(), masks64[:, 1].bool()
    assert not (tight & ~generous).any()  # erosion inside dilation in every case
    for i in range(len(ds64)):
        p = ds64._draw(i)
        faint = p["contrast"][: p["n"]] < DEFAULT_STYLES[3].min_contrast
        empty3 = masks64[i, 3].sum() == 0
        assert bool(empty3) == bool(faint.all()), i  # strong-only is empty iff every lesion is faint
        assert ds64.true_mask(i).any()


def test_raters_disagree(masks64: torch.Tensor) -> None:
    m = masks64.bool().numpy()
    pair = [_dice(m[:, a], m[:, b]).mean() for a in range(4) for b in range(a + 1, 4)]
    assert max(pair) < 0.9 and min(pair) > 0.2
    assert (m.any(1) & ~m.all(1)).sum() > 0


def test_oracle_dice_beats_shared_prediction(ds64: SyntheticMultiRater) -> None:
    own = ds64.oracle_dice()
    shared = ds64.shared_oracle_dice()
    print("oracle dice per rater", own.numpy().round(3), "shared (true object)", shared.numpy().round(3))
    assert own.shape == (4,) and ((own > 0.8) & (own <= 1)).all()
    assert (own > shared).all()
    assert (own - shared)[[0, 1, 3]].min() > 0.15  # styles a personalised model can exploit
    sub = ds64.oracle_dice([0, 1])
    assert sub.shape == (4,) and not torch.equal(sub, own)


def test_dice_hand_computed() -> None:
    a = np.zeros((2, 3, 3), bool)
    b = np.zeros((2, 3, 3), bool)
    a[0, 0, :2] = True  # |a| = 2
    b[0, 0, 1:] = True  # |b| = 2, |a & b| = 1 -> 2*1/4
    assert _dice(a, b).tolist() == [0.5, 1.0]  # second pair: both empty -> 1


def test_options_checked() -> None:
    factory = DATASETS.get("synthetic")
    with pytest.raises(TypeError, match="valid: num_cases, image_size, num_raters, seed, cache"):
        factory(num_case=3)
    with pytest.raises(ValueError, match="num_raters"):
        factory(num_raters=5)
    ds = factory(num_cases="3", image_size="32", num_raters="2", cache="false")
    assert len(ds) == 3 and ds.info.num_raters == 2 and ds[2].masks.shape == (2, 32, 32)
    assert ds.expected_area_order == (0, 1)
    with pytest.raises(IndexError):
        ds[3]
