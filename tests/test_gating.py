"""Which baseline values are gated (reports/gating.py): NaN, floor and chance rules, by hand."""

from __future__ import annotations

import json

import pytest

from mrseg_bench.reports.check import load_baseline
from mrseg_bench.reports.gating import GATE_MARGIN, gate_entries, main

RUN = {"method": "m", "dataset": "synthetic", "preset": "ci", "seed": 0}


def _e(metric, value):
    return dict(RUN, metric=metric, value=value)


def _flags(entries):
    return {e["metric"]: (e["gated"], e.get("why"), e.get("chance")) for e in entries}


def test_floor_and_nan_without_chance_values():
    out = gate_entries([_e("dice_match", 0.35), _e("per_rater_dice[1]", 0.09), _e("ged", 0.02),
                        _e("hm_iou", None), _e("sample_diversity", 0.0)])
    assert _flags(out) == {
        "dice_match": (True, None, None),
        "per_rater_dice[1]": (False, "floor", None),  # higher-is-better below 0.1
        "ged": (True, None, None),                     # lower is better: 0.02 is good, not a floor
        "hm_iou": (False, "nan", None),
        "sample_diversity": (True, None, None),        # descriptive: gated both ways
    }


def test_chance_rule_in_each_direction():
    now = [_e("dice_match", 0.45), _e("dice_soft", 0.19), _e("ged", 0.45), _e("ncc", 0.50),
           _e("rater_disagreement", 0.62), _e("sample_diversity", 0.52), _e("dice_max", 0.5)]
    chance = [_e("dice_match", 0.30), _e("dice_soft", 0.13), _e("ged", 0.80), _e("ncc", 0.45),
              _e("rater_disagreement", 0.62), _e("sample_diversity", 0.95)]
    out = _flags(gate_entries(now, chance))
    assert out["dice_match"] == (True, None, 0.30)          # +0.15 above chance
    assert out["dice_soft"] == (False, "chance", 0.13)      # +0.06 < margin
    assert out["ged"] == (True, None, 0.80)                 # lower is better: 0.35 below chance
    assert out["ncc"] == (False, "chance", 0.45)
    assert out["rater_disagreement"] == (False, "chance", 0.62)  # the data's, equal to chance
    assert out["sample_diversity"] == (True, None, 0.95)    # descriptive: |diff| 0.43
    assert out["dice_max"] == (False, "chance", None)       # no chance value: not shown above it
    worse = _flags(gate_entries([_e("ged", 0.75)], [_e("ged", 0.80)]))
    assert worse["ged"][:2] == (False, "chance")


def test_margin_boundary_and_flags_are_recomputed():
    c = [_e("dice_match", 0.25)]
    assert gate_entries([_e("dice_match", 0.25 + GATE_MARGIN + 1e-9)], c)[0]["gated"] is True
    assert gate_entries([_e("dice_match", 0.25 + GATE_MARGIN - 1e-9)], c)[0]["gated"] is False
    stale = dict(_e("dice_match", 0.6), gated=False, why="floor", chance=0.9)
    assert _flags(gate_entries([stale])) == {"dice_match": (True, None, None)}


def test_bad_gated_flag_in_a_baseline_is_refused(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"version": 1, "entries": [dict(_e("ged", 0.3), gated="no")]}))
    with pytest.raises(ValueError, match=r"entries\[0\]\.gated must be true or false"):
        load_baseline(path)


def test_command_line_needs_existing_stores(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--store", str(tmp_path / "none.sqlite"), "--baseline", str(tmp_path / "b.json")])
    assert err.value.code == 2 and "none.sqlite: no such results store" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_command_line_writes_a_marked_baseline_with_its_tolerance(tmp_path, capsys):
    from mrseg_bench.reports.demo import write_demo_store

    store = write_demo_store(tmp_path / "s.sqlite", n_cases=4)
    base = tmp_path / "b.json"
    assert main(["--store", str(store), "--chance-store", str(store), "--baseline", str(base),
                 "--default-tolerance", "0.04"]) == 0
    data = load_baseline(base)
    assert data["tolerance"]["default"] == 0.04 and data["tolerance"]["per_rater_dice_matched"] == 0.05
    # every value equals its own chance value here, so nothing is gated
    assert data["entries"] and not any(e["gated"] for e in data["entries"])
    assert "0 gated" in capsys.readouterr().out
