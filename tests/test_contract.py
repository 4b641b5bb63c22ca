"""The data contract (types.py) and typed config overrides (config.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from mrseg_bench.config import apply_overrides
from mrseg_bench.types import (
    Capability,
    DatasetInfo,
    MultiRaterSample,
    Prediction,
    collate_samples,
)


def _sample(i: int, r: int = 3, h: int = 8) -> MultiRaterSample:
    masks = torch.zeros(r, h, h, dtype=torch.uint8)
    masks[:, : i + 1, : i + 1] = 1
    return MultiRaterSample(
        image=torch.full((1, h, h), float(i)),
        masks=masks,
        rater_valid=torch.tensor([True] * (r - 1) + [False]),
        case_id=f"c{i}",
        group_id=f"p{i // 2}",
    )


def test_collate_stacks_in_order():
    batch = collate_samples([_sample(0), _sample(1), _sample(2)])
    assert batch.image.shape == (3, 1, 8, 8)
    assert batch.masks.shape == (3, 3, 8, 8) and batch.masks.dtype == torch.uint8
    assert batch.rater_valid.shape == (3, 3)
    assert batch.case_id == ["c0", "c1", "c2"] and batch.group_id == ["p0", "p0", "p1"]
    assert batch.image[2].max().item() == 2.0
    assert int(batch.masks[1, 0].sum()) == 4
    assert len(batch) == 3


def test_collate_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        collate_samples([])


def test_sample_validate_rejects_bad_masks():
    s = _sample(1)
    s.validate()
    s.masks[0, 0, 0] = 2
    with pytest.raises(ValueError, match="binary"):
        s.validate("case c1")
    s = _sample(1)
    s.masks = s.masks[:, :4]
    with pytest.raises(ValueError, match="case x"):
        s.validate("case x")


def test_dataset_info_checks_rater_names():
    DatasetInfo("d", 1, 2, ("a", "b"), (8, 8))
    with pytest.raises(ValueError, match="rater_names"):
        DatasetInfo("d", 1, 3, ("a", "b"), (8, 8))
    with pytest.raises(ValueError, match="rater_identity"):
        DatasetInfo("d", 1, 2, ("a", "b"), (8, 8), rater_identity="secret")  # type: ignore[arg-type]


def test_prediction_capabilities_reflect_present_outputs():
    p = Prediction(samples=torch.rand(1, 2, 4, 4))
    assert p.capabilities() == {Capability.DIVERSE}
    p = Prediction(personalized=torch.rand(1, 3, 4, 4), consensus=torch.rand(1, 4, 4))
    assert p.capabilities() == {Capability.PERSONALIZED, Capability.CONSENSUS}


@dataclass
class _Cfg:
    lr: float = 1e-4
    epochs: int = 3
    name: str = "x"
    weights: str | None = None
    flag: bool = False
    mode: Literal["posterior", "prior"] = "posterior"
    channels: tuple[int, ...] = (16, 8)


def test_apply_overrides_converts_cli_strings():
    cfg = apply_overrides(
        _Cfg(),
        {"lr": "0.01", "epochs": "7", "weights": "none", "flag": "true", "mode": "prior",
         "channels": "32,16,8"},
    )
    assert cfg.lr == 0.01 and cfg.epochs == 7 and cfg.weights is None
    assert cfg.flag is True and cfg.mode == "prior" and cfg.channels == (32, 16, 8)
    assert _Cfg().epochs == 3  # original untouched


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("epochs", "three", "epochs='three' is not a valid int"),
        ("flag", "maybe", "not a boolean"),
        ("mode", "both", "not one of"),
        ("epochs", "2.5", "not a valid int"),
    ],
)
def test_apply_overrides_rejects_bad_values(key, value, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(_Cfg(), {key: value}, where="method 'x'")


def test_apply_overrides_unknown_key_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown key\(s\) epoch; valid: channels, epochs, flag"):
        apply_overrides(_Cfg(), {"epoch": "1"})
