"""MetricSuite (capability-driven scoring, tidy rows, summaries), registration, and the input
validation every metric shares."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mrseg_bench.metrics import (
    BUILTIN_SPECS,
    MetricSpec,
    MetricSuite,
    consensus_dice,
    dice_soft,
    ged,
    per_rater_dice,
    per_rater_dice_matched,
    validate_inputs,
)
from mrseg_bench.registry import METRICS, RegistryError
from mrseg_bench.types import Capability, Prediction

ALL = {"ged", "dice_soft", "dice_max", "dice_max_reverse", "dice_match", "hm_iou", "ncc",
       "sample_diversity", "rater_disagreement", "per_rater_dice", "per_rater_dice_mean",
       "per_rater_dice_matched", "consensus_dice", "consensus_dice_soft", "sample_rater_dice",
       "sample_rater_dice_mean", "n_samples"}
DIVERSE = {"n_samples", "ged", "dice_soft", "dice_max", "dice_max_reverse", "dice_match", "hm_iou", "ncc",
           "sample_diversity", "rater_disagreement", "sample_rater_dice", "sample_rater_dice_mean"}
PERSONAL = {"per_rater_dice", "per_rater_dice_mean", "per_rater_dice_matched"}
CONSENSUS = {"consensus_dice", "consensus_dice_soft"}


def _batch(b=3, n=5, r=4, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    raters = (torch.rand(b, r, h, w, generator=g) > 0.6).to(torch.uint8)
    pred = Prediction(
        samples=torch.rand(b, n, h, w, generator=g),
        personalized=torch.rand(b, r, h, w, generator=g),
        consensus=torch.rand(b, h, w, generator=g),
    )
    return pred, raters


def test_registered_names_and_specs():
    assert {s.name for s in BUILTIN_SPECS} == ALL
    assert ALL <= set(METRICS.names())
    by_cap = {c: {s.name for s in BUILTIN_SPECS if s.requires == c} for c in Capability}
    assert by_cap[Capability.DIVERSE] == DIVERSE
    assert by_cap[Capability.PERSONALIZED] == PERSONAL
    assert by_cap[Capability.CONSENSUS] == CONSENSUS
    assert {s.name for s in BUILTIN_SPECS if s.per_rater} == {"per_rater_dice",
                                                              "per_rater_dice_matched",
                                                              "sample_rater_dice"}
    assert {s.name for s in BUILTIN_SPECS if s.descriptive} == {"sample_diversity",
                                                                "rater_disagreement",
                                                                "n_samples"}
    assert MetricSuite.higher_is_better("ged") is False
    assert MetricSuite.higher_is_better("dice_match") is True
    assert MetricSuite.spec("hm_iou").requires == Capability.DIVERSE
    with pytest.raises(dataclasses.FrozenInstanceError):
        MetricSuite.spec("ged").name = "x"  # type: ignore[misc]
    with pytest.raises(RegistryError, match="known: .*dice_match"):
        MetricSuite.spec("dice_nope")


def test_score_all_capabilities_rows_and_values():
    pred, raters = _batch()
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[1, 2] = False
    rows = MetricSuite().score(pred, raters, valid, case_ids=["a", "b", "c"])
    assert {r["metric"] for r in rows} >= ALL
    for r in rows:
        assert set(r) == {"case_id", "metric", "rater", "value"}
        assert isinstance(r["value"], float) and r["case_id"] in ("a", "b", "c")
    per_case = [r for r in rows if r["metric"] == "ged"]
    assert [r["case_id"] for r in per_case] == ["a", "b", "c"]
    assert all(r["rater"] is None for r in per_case)
    want = ged(pred.samples, raters, valid)
    assert [r["value"] for r in per_case] == pytest.approx(want.tolist())
    pr = [r for r in rows if r["metric"] == "per_rater_dice"]
    assert len(pr) == 3 * 4 - 1  # the invalid rater of case b has no row
    assert ("b", 2) not in {(r["case_id"], r["rater"]) for r in pr}
    want = per_rater_dice(pred.personalized, raters, valid)
    got = {(r["case_id"], r["rater"]): r["value"] for r in pr}
    assert got[("b", 3)] == pytest.approx(want[1, 3].item())
    cd = [r["value"] for r in rows if r["metric"] == "consensus_dice"]
    assert cd == pytest.approx(consensus_dice(pred.consensus, raters, valid).tolist())


def test_scores_only_declared_and_present_capabilities():
    pred, raters = _batch()
    suite = MetricSuite()
    only_diverse = Prediction(samples=pred.samples)
    assert {r["metric"] for r in suite.score(only_diverse, raters)} == DIVERSE
    # present but not declared: ignored (nothing is derived from another output)
    rows = suite.score(pred, raters, capabilities=[Capability.PERSONALIZED])
    assert {r["metric"] for r in rows} == PERSONAL
    rows = suite.score(pred, raters, capabilities=["consensus"])
    assert {r["metric"] for r in rows} == CONSENSUS
    # declared but missing: a clear error
    with pytest.raises(ValueError, match=r"declares capabilities \['personalized'\]"):
        suite.score(only_diverse, raters, capabilities=[Capability.DIVERSE,
                                                        Capability.PERSONALIZED])
    with pytest.raises(ValueError, match="unknown capability 'telepathy'"):
        suite.score(pred, raters, capabilities=["telepathy"])
    # no declared capability: nothing scored
    assert suite.score(Prediction(), raters) == []


def test_suite_names_conventions_and_default_case_ids():
    pred, raters = _batch(b=2)
    suite = MetricSuite("ged,dice_max*", convention="dpersona")
    assert suite.names == ["ged", "dice_max", "dice_max_reverse"]
    rows = suite.score(pred, raters)
    assert {r["case_id"] for r in rows} == {"0", "1"}
    g = [r["value"] for r in rows if r["metric"] == "ged"]
    assert g == pytest.approx(ged(pred.samples, raters, convention="dpersona").tolist())
    soft = MetricSuite(["dice_soft"], threshold=0.3).score(pred, raters)
    assert [r["value"] for r in soft] == pytest.approx(dice_soft(pred.samples, raters).tolist())
    with pytest.raises(ValueError, match="convention"):
        MetricSuite(convention="kohl")
    with pytest.raises(RegistryError, match="matches nothing"):
        MetricSuite("nope_*")
    with pytest.raises(ValueError, match="case_ids has 3 entries for a batch of 2"):
        suite.score(pred, raters, case_ids=["a", "b", "c"])


def test_threshold_reaches_binarised_metrics():
    pred, raters = _batch(b=2)
    low = MetricSuite(["per_rater_dice_matched"], threshold=0.2).compute(pred, raters)
    want = per_rater_dice_matched(pred.personalized, raters, threshold=0.2)
    assert torch.allclose(low["per_rater_dice_matched"], want, equal_nan=True)


def test_summarize_by_hand():
    rows = [
        {"case_id": "a", "metric": "ged", "rater": None, "value": 0.2},
        {"case_id": "b", "metric": "ged", "rater": None, "value": 0.4},
        {"case_id": "c", "metric": "ged", "rater": None, "value": math.nan},
        {"case_id": "a", "metric": "per_rater_dice", "rater": 0, "value": 1.0},
        {"case_id": "a", "metric": "per_rater_dice", "rater": 1, "value": 0.5},
        {"case_id": "b", "metric": "per_rater_dice", "rater": 0, "value": 0.0},
    ]
    out = MetricSuite.summarize(rows)
    assert out["ged"] == pytest.approx(0.3)  # NaN case left out
    assert out["per_rater_dice[0]"] == pytest.approx(0.5)
    assert out["per_rater_dice[1]"] == pytest.approx(0.5)
    assert out["per_rater_dice"] == pytest.approx((0.75 + 0.0) / 2)  # per case, then cases
    assert math.isnan(MetricSuite.summarize(
        [{"case_id": "a", "metric": "x", "rater": None, "value": math.nan}])["x"])


def test_summary_of_scored_rows_matches_tensors():
    pred, raters = _batch()
    suite = MetricSuite(["per_rater_dice", "per_rater_dice_mean", "hm_iou"])
    values = suite.compute(pred, raters)
    summary = suite.summarize(suite.score(pred, raters))
    assert summary["hm_iou"] == pytest.approx(values["hm_iou"].mean().item())
    assert summary["per_rater_dice"] == pytest.approx(values["per_rater_dice_mean"].mean().item())
    assert summary["per_rater_dice[3]"] == pytest.approx(values["per_rater_dice"][:, 3].mean().item())


def test_plugin_metric_spec_is_scored():
    pred, raters = _batch(b=2)
    spec = MetricSpec("test_sample_count", lambda ctx: ctx.s.sum((1, 2)), Capability.DIVERSE,
                      True, False, "foreground pixels over all samples")
    METRICS.add(spec.name, spec)
    try:
        rows = MetricSuite(["test_*"]).score(pred, raters)
        want = (pred.samples > 0.5).sum((1, 2, 3)).tolist()
        assert [r["value"] for r in rows] == want
    finally:
        METRICS.remove(spec.name)


def test_gradients_do_not_break_scoring():
    pred, raters = _batch(b=1)
    pred.samples.requires_grad_(True)
    rows = MetricSuite(["dice_match", "hm_iou"]).score(pred, raters)
    assert len(rows) == 2


# ---- validation ---------------------------------------------------------------------------------
Y = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
S = torch.full((2, 5, 4, 4), 0.2)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"raters": Y[0]}, r"raters must be \[B,R,H,W\] \(4 dims\), got shape \(3, 4, 4\)"),
        ({"raters": Y + 2}, r"raters \(2, 3, 4, 4\) must be binary .*\[2\]"),
        ({"raters": Y.float() + 0.5}, r"raters .* must be binary.*0.5"),
        ({"raters": torch.full((2, 3, 4, 4), math.nan)}, r"raters .* must be binary"),
        ({"raters": Y[:, :0]}, r"R, H, W >= 1"),
        ({"raters": Y, "samples": S[:, :, :3]}, r"samples \(2, 5, 3, 4\) and raters \(2, 3, 4, 4\)"),
        ({"raters": Y, "samples": S[:1]}, r"samples \(1, 5, 4, 4\) and raters"),
        ({"raters": Y, "samples": S[:, :0]}, r"N >= 1 sample, got shape \(2, 0, 4, 4\)"),
        ({"raters": Y, "samples": S + 0.9}, r"samples \(2, 5, 4, 4\) must hold probabilities in \[0, 1\].*1.1"),
        ({"raters": Y, "samples": S - 1}, r"samples .* found values in \[-0.8, -0.8\]"),
        ({"raters": Y, "samples": S.clone().index_fill_(0, torch.tensor([1]), math.nan)},
         r"samples \(2, 5, 4, 4\) contains NaN"),
        ({"raters": Y, "samples": (S > 0).to(torch.uint8)}, r"samples must hold probabilities \(a float"),
        ({"raters": Y, "personalized": S}, r"personalized \(2, 5, 4, 4\) must match raters \(2, 3, 4, 4\)"),
        ({"raters": Y, "consensus": S[:, 0, :2]}, r"consensus \(2, 2, 4\) must be \[B,H,W\]"),
        ({"raters": Y, "rater_valid": torch.ones(2, 4, dtype=torch.bool)},
         r"rater_valid \(2, 4\) must be \[B,R\] = \(2, 3\)"),
        ({"raters": Y, "rater_valid": torch.full((2, 3), 2)}, r"rater_valid .* must be bool"),
    ],
)
def test_validation_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate_inputs(**kwargs)


def test_validation_reaches_every_public_metric_and_accepts_good_input():
    with pytest.raises(ValueError, match="samples"):
        ged(S + 1, Y)
    with pytest.raises(ValueError, match="personalized"):
        per_rater_dice(S, Y)
    with pytest.raises(ValueError, match="convention must be one of"):
        ged(S, Y, convention="Standard")
    raters, valid = validate_inputs(Y, S, torch.tensor([[1, 0, 1], [1, 1, 1]]), S[:, :3], S[:, 0])
    assert raters is Y and valid.dtype == torch.bool and valid.tolist()[0] == [True, False, True]
