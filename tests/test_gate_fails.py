"""The regression gate can fail: a deliberately broken method (predictions multiplied by 0.5
before thresholding, training untouched) makes ``mrseg-bench check`` exit non-zero and name the
metrics that got worse; the unbroken rerun passes the same baseline. Values at the floor are
written ``"gated": false`` and never fail."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from mrseg_bench.baselines.per_rater import MultiHeadPerRater
from mrseg_bench.cli import app

METHOD = "per_rater.multihead"
# the ci preset, shortened: this test shows the gate fires, not how well the method trains
RUN = ["run", "--methods", METHOD, "--preset", "ci", "--seeds", "0", "--device", "cpu",
       "--set", "epochs=4", "--no-report", "--quiet"]


def _cli(*args: str):
    res = CliRunner().invoke(app, list(args))
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    res = _cli(*RUN, "--out", str(root / "good"))
    assert res.exit_code == 0, res.output
    base = root / "baseline.json"
    res = _cli("check", "--store", str(root / "good" / "results.sqlite"), "--baseline", str(base), "--update")
    assert res.exit_code == 0, res.output
    return base


@pytest.mark.slow
def test_unchanged_method_passes_its_baseline(baseline, tmp_path):
    entries = json.loads(baseline.read_text())["entries"]
    gated = {e["metric"] for e in entries if e["gated"]}
    assert {"per_rater_dice_mean", "dice_match", "ged"} <= gated, entries
    assert all(e["value"] is not None and e["value"] >= 0.1 for e in entries
               if e["gated"] and e["metric"] != "ged")  # nothing gated at the floor
    assert _cli(*RUN, "--out", str(tmp_path)).exit_code == 0
    res = _cli("check", "--store", str(tmp_path / "results.sqlite"), "--baseline", str(baseline))
    assert res.exit_code == 0 and "PASS" in res.output, res.output


@pytest.mark.slow
def test_predictions_halved_before_thresholding_fail_the_gate(baseline, tmp_path, monkeypatch):
    original = MultiHeadPerRater.predict

    def broken_predict(self, model, images, n_samples):
        pred = original(self, model, images, n_samples)
        return dataclasses.replace(pred, samples=pred.samples * 0.5, personalized=pred.personalized * 0.5)

    monkeypatch.setattr(MultiHeadPerRater, "predict", broken_predict)
    assert _cli(*RUN, "--out", str(tmp_path)).exit_code == 0
    res = _cli("check", "--store", str(tmp_path / "results.sqlite"), "--baseline", str(baseline))
    assert res.exit_code == 1, res.output
    worse = [line for line in res.output.splitlines() if line.startswith(METHOD) and "WORSE" in line]
    named = {line.split()[4] for line in worse}
    assert {"per_rater_dice_mean", "dice_match"} <= named, res.output
    assert "FAIL" in res.output.splitlines()[0]


def test_floor_values_are_not_gated_and_never_fail(tmp_path):
    """A baseline value at the floor (0.0) cannot get worse: it is written ungated, and a check
    where that metric stays at 0 while a gated one drops fails only on the gated one."""
    from mrseg_bench.reports.check import compare, load_baseline, write_baseline

    run = {"method": "m", "dataset": "d", "preset": "ci", "seed": 0}
    now = [dict(run, metric="dice_match", value=0.6), dict(run, metric="per_rater_dice[0]", value=0.0),
           dict(run, metric="ged", value=None)]
    path = tmp_path / "b.json"
    write_baseline(path, now, [])
    base = load_baseline(path)
    flags = {e["metric"]: (e["gated"], e.get("why")) for e in base["entries"]}
    assert flags == {"dice_match": (True, None), "per_rater_dice[0]": (False, "floor"),
                     "ged": (False, "nan")}
    ok, text = compare(base, now, [])
    assert ok and "2 not gated" in text
    ok, text = compare(base, [dict(run, metric="dice_match", value=0.5), *now[1:]], [])
    assert not ok and "dice_match" in text and "per_rater_dice[0]" not in text.split("Failing:")[1]
