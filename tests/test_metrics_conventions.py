"""Metric conventions by paper name (metrics/conventions.py): each variant on a hand-computed case.

Masks are 1 x 4 pixel strips; every number is worked out in the comments."""

from __future__ import annotations

import pytest
import torch

from mrseg_bench.metrics import MetricSuite, dice_soft, ged, hm_iou
from mrseg_bench.metrics.conventions import CONVENTION_SPECS, convention_caption, resolve_convention
from mrseg_bench.types import Prediction


def strips(*rows: list[float]) -> torch.Tensor:
    """``[1, len(rows), 1, 4]``: one case, one 1x4 mask (or probability map) per row."""
    return torch.tensor(rows, dtype=torch.float32)[None, :, None, :]


# GED: S = [1,1,0,0]; Y1 = [1,1,0,0], Y2 = [1,0,0,0].
# d(S,Y1) = 0, d(S,Y2) = 1 - 1/2 = 1/2 -> E d(S,Y) = 1/4; E d(S,S') = 0 (one sample);
# E d(Y,Y') over all 4 ordered pairs = (0 + 1/2 + 1/2 + 0) / 4 = 1/4.
# GED^2 = 2 * 1/4 - 0 - 1/4 = 1/4; GED = sqrt(1/4) = 1/2.
GED_S, GED_Y = strips([1, 1, 0, 0]), strips([1, 1, 0, 0], [1, 0, 0, 0])


def test_ged_squared_and_root_by_hand():
    assert ged(GED_S, GED_Y).item() == pytest.approx(0.25)
    assert ged(GED_S, GED_Y, form="squared").item() == pytest.approx(0.25)
    assert ged(GED_S, GED_Y, form="root").item() == pytest.approx(0.5)
    for name in ("phiseg", "ccdm", "flowssn"):  # every named paper reports the squared form
        assert ged(GED_S, GED_Y, convention=name).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="ged_form"):
        ged(GED_S, GED_Y, form="cubed")


def test_ged_root_of_a_negative_distinct_estimate_is_zero():
    # distinct estimator, two equal samples [1,0,0,0] and raters Y1 = Y2 = [1,0,0,0]:
    # E d(S,Y) = 0, distinct E d(S,S') = 0, E d(Y,Y') = 0 -> 0; root 0 (no NaN)
    s, y = strips([1, 0, 0, 0], [1, 0, 0, 0]), strips([1, 0, 0, 0], [1, 0, 0, 0])
    assert ged(s, y, estimator="distinct", form="root").item() == 0.0


# HM-IoU: raters Y1 = [1,1,0,0], Y2 = empty; samples S1 = [1,1,0,0], S2 = empty, S3 = [1,0,0,0].
# IoU matrix (samples x raters), empty pair = 1 ("standard"):
#   S1: (1, 0); S2: (0, 1); S3: (1/2, 0).
# best_of_n (Flow-SSN): match min(3, 2) = 2 pairs: S1-Y1 (1) + S2-Y2 (1) -> mean 1.
# replicate (lcm(3, 2) = 6: samples x2, raters x3): Y1's copies take S1, S1, S3 (1 + 1 + 1/2),
# Y2's copies take S2, S2 and the other S3 (1 + 1 + 0): 4.5 / 6 = 0.75.
# dpersona (empty pair IoU 0): S2-Y2 = 0, so Y1 takes S1, S1, S3 = 2.5 and Y2 scores 0: 2.5 / 6.
HM_S = strips([1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0])
HM_Y = strips([1, 1, 0, 0], [0, 0, 0, 0])


def test_hm_iou_replicate_vs_best_of_n_by_hand():
    assert hm_iou(HM_S, HM_Y).item() == pytest.approx(0.75)
    assert hm_iou(HM_S, HM_Y, matching="replicate").item() == pytest.approx(0.75)
    assert hm_iou(HM_S, HM_Y, matching="best_of_n").item() == pytest.approx(1.0)
    assert hm_iou(HM_S, HM_Y, convention="flowssn").item() == pytest.approx(1.0)
    assert hm_iou(HM_S, HM_Y, convention="ccdm").item() == pytest.approx(0.75)
    assert hm_iou(HM_S, HM_Y, convention="dpersona").item() == pytest.approx(2.5 / 6, abs=1e-6)


def test_hm_iou_best_of_n_with_fewer_samples_than_raters():
    # N = 1 (S1) vs R = 2: best_of_n matches one pair, S1-Y1 = 1 -> 1; replicate tiles S1 twice:
    # S1-Y1 (1) + S1-Y2 (0) -> 1/2
    s = strips([1, 1, 0, 0])
    assert hm_iou(s, HM_Y, matching="best_of_n").item() == pytest.approx(1.0)
    assert hm_iou(s, HM_Y, matching="replicate").item() == pytest.approx(0.5)


# Dice_soft: samples S1 = [.9, .6, .2, 0], S2 = [.9, .2, .2, 0] -> mean m = [.9, .4, .2, 0];
# raters Y1 = [1,1,0,0], Y2 = [1,0,0,0] -> mean y = [1, .5, 0, 0]. "> t" is "> t + 1e-6":
#   t = .1: m -> [1,1,1,0], y -> [1,1,0,0]: Dice 2*2 / (3+2) = 0.8
#   t = .3: [1,1,0,0] vs [1,1,0,0]: 1;  t = .5: [1,0,0,0] vs [1,0,0,0] (.5 is not > .5): 1
#   t = .7: [1,0,0,0] vs [1,0,0,0]: 1;  t = .9: [0,0,0,0] (.9 is not > .9) vs [1,0,0,0]: 0
# QUBIQ set: (0.8 + 1 + 1 + 1 + 0) / 5 = 0.76; the single threshold 0.5 (Flow-SSN): 1.
SD_S = strips([0.9, 0.6, 0.2, 0.0], [0.9, 0.2, 0.2, 0.0])
SD_Y = strips([1, 1, 0, 0], [1, 0, 0, 0])


def test_soft_dice_threshold_set_vs_single_threshold_by_hand():
    assert dice_soft(SD_S, SD_Y).item() == pytest.approx(0.76)
    assert dice_soft(SD_S, SD_Y, thresholds=(0.5,)).item() == pytest.approx(1.0)
    assert dice_soft(SD_S, SD_Y, convention="flowssn").item() == pytest.approx(1.0)
    assert dice_soft(SD_S, SD_Y, thresholds=(0.1, 0.9)).item() == pytest.approx(0.4)  # (0.8 + 0) / 2
    with pytest.raises(ValueError, match="thresholds"):
        dice_soft(SD_S, SD_Y, thresholds=())
    with pytest.raises(ValueError, match="thresholds"):
        dice_soft(SD_S, SD_Y, thresholds=(1.5,))


def test_suite_applies_the_named_convention_to_every_metric():
    pred = Prediction(samples=HM_S)
    std = MetricSuite(["ged", "hm_iou", "dice_soft"], convention="standard").compute(pred, HM_Y)
    flow = MetricSuite(["ged", "hm_iou", "dice_soft"], convention="flowssn").compute(pred, HM_Y)
    assert std["hm_iou"].item() == pytest.approx(0.75) and flow["hm_iou"].item() == pytest.approx(1.0)
    assert std["ged"].item() == pytest.approx(flow["ged"].item())  # same GED^2, same empty rule
    # Dice_soft of HM_S: mean map [2/3, 1/3, 0, 0] vs rater mean [1/2, 1/2, 0, 0]:
    #   t = .1, .3: [1,1,0,0] vs [1,1,0,0]: 1; t = .5: [1,0,0,0] vs [0,0,0,0]: 0; t = .7, .9: both empty: 1
    #   -> 4/5 (QUBIQ set); at 0.5 only -> 0
    assert std["dice_soft"].item() == pytest.approx(0.8) and flow["dice_soft"].item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="convention must be one of"):
        MetricSuite(["ged"], convention="nature2031")


def test_conventions_table_and_caption():
    assert set(CONVENTION_SPECS) == {"standard", "dpersona", "phiseg", "ccdm", "flowssn"}
    flow = resolve_convention("flowssn")
    assert (flow.overlap, flow.ged, flow.hm_iou, flow.soft_dice, flow.n_samples) == \
        ("standard", "squared", "best_of_n", (0.5,), 100)
    assert resolve_convention("dpersona").overlap == "dpersona"
    text = convention_caption("flowssn", [100, 100])
    assert text.startswith("Convention flowssn:") and "N = 100 samples per image" in text and "best" in text
    assert "N = 10-50" in convention_caption("standard", [50, 10])
    assert convention_caption("standard") == f"Convention standard: {resolve_convention('standard').describe()}."


def test_diversity_caption_names_the_convention_and_n(tmp_path):
    from mrseg_bench.reports.demo import write_demo_store
    from mrseg_bench.reports.loader import load_results
    from mrseg_bench.reports.tables import _caption, build_tables

    store = write_demo_store(tmp_path / "s.sqlite", convention="flowssn")
    tables = {t.kind: t for t in build_tables(load_results(store))}
    assert "Convention flowssn: two empty masks IoU 1; GED^2; HM-IoU best" in tables["diversity"].caption
    assert "Convention flowssn:" not in tables["personalization"].caption  # diversity only
    key = {"dataset": "lidc", "experiment": "e", "protocol": "default", "convention": "flowssn",
           "ged_estimator": "all_pairs", "ncc_maps": "soft", "threshold": 0.5}
    assert "N = 100 samples per image." in _caption("diversity", key, None, 0.05, False, n_values=[100, 100])
