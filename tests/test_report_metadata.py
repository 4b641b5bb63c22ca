"""Issue 11 report behaviour: tables from MetricSpec metadata (plugin metrics included), rows per
configuration, experiment selection, leak captions, the significance reference, footnotes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from report_stores import scored_rows, write_run
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.metrics import MetricSpec, MetricSuite
from mrseg_bench.registry import METRICS
from mrseg_bench.reports.check import run_check
from mrseg_bench.reports.loader import SelectionError, load_results
from mrseg_bench.reports.report import write_report
from mrseg_bench.reports.summary import summarize
from mrseg_bench.reports.tables import build_tables
from mrseg_bench.store import ResultsStore
from mrseg_bench.types import Capability


def _header(tex: str) -> list[str]:
    head = tex.split("\\toprule")[1].split("\\midrule")[0]
    return [c.strip() for c in head.strip().rstrip("\\").split("&")]


def _rows(tex: str) -> list[str]:
    inner = tex.split("\\midrule")[1].split("\\bottomrule")[0]
    return [r.split("&")[0].strip() for r in inner.strip().split("\\\\") if r.strip()]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    d = tmp_path_factory.mktemp("grid")
    store = d / "results.sqlite"
    for method in ("dpersona", "probunet", "per_rater.separate", "fusion.soft"):
        for seed in (0, 1):
            write_run(store, method, seed)
    paths = write_report(store, d / "out", figures=False)
    return d, store, paths


def test_every_stored_metric_has_a_column(grid):
    d, _, _ = grid
    div = (d / "out" / "synthetic_smoke_diversity.tex").read_text()
    match = (d / "out" / "synthetic_smoke_diversity_match.tex").read_text()  # the split's second part
    labels = [h.split(" $")[0] for h in _header(div) + _header(match)]
    for want in ("N", "GED", "Dice\\_soft", "Dice\\_match", "Dice\\_max", "Dice\\_max\\_rev", "HM-IoU",
                 "NCC", "Dice fixed", "Sample div.", "Rater disagr."):
        assert want in labels, want
    # sample diversity is read next to the raters' own disagreement
    assert labels.index("Rater disagr.") == labels.index("Sample div.") + 1
    pers = (d / "out" / "synthetic_smoke_personalization.tex").read_text()
    assert [h.split(" $")[0] for h in _header(pers)] == ["Method", "R1", "R2", "R3", "Mean", "Matched"]
    csv = pd.read_csv(d / "out" / "synthetic_smoke_personalization.csv").set_index("method")
    # Matched: per case mean over raters of the per-rater matched Dice, then over cases and seeds
    res = load_results(d / "results.sqlite")
    m = res.metrics[res.metrics["metric"] == "per_rater_dice_matched"].merge(res.runs[["run_id", "method", "seed"]])
    want = (m[m["method"] == "dpersona"].groupby(["seed", "case_id"])["value"].mean()
            .groupby("seed").mean().mean())
    assert csv.at["dpersona", "per_rater_dice_matched.mean"] == pytest.approx(want)
    assert csv.at["dpersona", "per_rater_dice_matched.mean"] >= csv.at["dpersona", "per_rater_dice[mean].mean"] - 1e-12


def test_rows_without_outputs_are_left_out_with_a_note(grid):
    d, _, _ = grid
    pers = (d / "out" / "synthetic_smoke_personalization.tex").read_text()
    assert _rows(pers) == ["dpersona", "per\\_rater.separate"]  # the reference first
    assert "Not shown (no personalization output): fusion.soft, probunet." in pers
    cons = (d / "out" / "synthetic_smoke_consensus.md").read_text()
    assert "| fusion.soft" in cons and "| dpersona" not in cons


def test_methods_with_another_n_are_footnoted(grid):
    d, _, _ = grid
    div = (d / "out" / "synthetic_smoke_diversity.tex").read_text()
    rows = _rows(div)
    assert "fusion.soft$^{*}$" in rows and "per\\_rater.separate$^{*}$" in rows
    assert "dpersona" in rows and "probunet" in rows  # N = 10, the common N: no mark
    md = (d / "out" / "synthetic_smoke_diversity.md").read_text()
    assert "fusion.soft (N = 1)" in md and "per\\_rater.separate (N = 3)" in md
    csv = pd.read_csv(d / "out" / "synthetic_smoke_diversity.csv").set_index("method")
    assert csv.at["per_rater.separate", "n_samples.mean"] == 3
    assert "all pairs, i = i' included" in div and "NCC: soft sample maps (PHiSeg)" in div


def test_plugin_metric_appears_without_report_changes(tmp_path):
    def toy_area(ctx):
        return ctx.s_size.mean(-1) / ctx.y.shape[-1]

    def toy_cal(ctx):
        return 1 - (ctx.soft_mean - ctx.rater_mean).abs().mean(-1)

    METRICS.add("toy_area", MetricSpec("toy_area", toy_area, Capability.DIVERSE, True, False,
                                       "mean sample area", label="Toy area", summary=True))
    METRICS.add("toy_cal", MetricSpec("toy_cal", toy_cal, Capability.DIVERSE, True, False,
                                      "toy calibration", table="calibration", label="Toy cal."))
    try:
        store = tmp_path / "s.sqlite"
        for method in ("dpersona", "probunet"):
            ids = [write_run(store, method, seed) for seed in (0, 1)]
        write_report(store, tmp_path / "out", figures=False)
        div = (tmp_path / "out" / "synthetic_smoke_diversity.tex").read_text()
        assert "Toy area $\\uparrow$" in _header(div)
        cal = (tmp_path / "out" / "synthetic_smoke_calibration.md").read_text()
        assert "Toy cal." in cal and "| dpersona" in cal
        with ResultsStore(store) as st:
            frame = summarize(st, ids)
        assert "toy_area" in frame.columns and frame["toy_area"].notna().all()
        assert frame["runs"].tolist() == [2]  # the two probunet seeds the summary averages
    finally:
        METRICS.remove("toy_area")
        METRICS.remove("toy_cal")


def test_each_configuration_gets_a_labelled_row(tmp_path):
    store = tmp_path / "s.sqlite"
    for beta in (0.5, 1.0):
        for seed in (0, 1, 2):  # 3 seeds: enough for the significance test (issue 17)
            write_run(store, "dpersona", seed, overrides={"beta": beta})
    write_run(store, "probunet", 0)
    write_report(store, tmp_path / "out", figures=False)
    tex = (tmp_path / "out" / "synthetic_smoke_diversity.tex").read_text()
    assert _rows(tex) == ["dpersona (beta=0.5)", "dpersona (beta=1.0)", "probunet"]
    csv = pd.read_csv(tmp_path / "out" / "synthetic_smoke_diversity.csv").set_index("method")
    assert (csv["ged.seeds"] == pd.Series({"dpersona (beta=0.5)": 3, "dpersona (beta=1.0)": 3, "probunet": 1})).all()
    # the default reference (dpersona) is ambiguous: no test, said so; an explicit row works
    assert "No significance test" in tex
    write_report(store, tmp_path / "o2", reference="dpersona (beta=1.0)", figures=False)
    tex2 = (tmp_path / "o2" / "synthetic_smoke_diversity.tex").read_text()
    assert _rows(tex2)[0] == "dpersona (beta=1.0)" and "vs dpersona (beta=1.0)" in tex2
    # probunet has one seed: not tested, and the note says so
    div = next(t for t in build_tables(load_results(store), reference="dpersona (beta=1.0)")
               if t.kind == "diversity")
    assert div.pvalue.loc["probunet"].isna().all() and div.pvalue.loc["dpersona (beta=0.5)"].notna().any()
    assert "No significance test (fewer than 3 seeds): probunet." in div.notes
    with pytest.raises(ValueError, match="several rows"):
        write_report(store, tmp_path / "o3", reference="dpersona", figures=False)


def test_reference_option_sets_the_significance_reference(grid, tmp_path):
    store = tmp_path / "s3.sqlite"
    for method in ("dpersona", "probunet"):
        for seed in (0, 1, 2):  # the test needs >= 3 seeds per row (issue 17)
            write_run(store, method, seed)
    tables = build_tables(load_results(store), reference="probunet")
    div = next(t for t in tables if t.kind == "diversity")
    assert div.reference == "probunet" and div.methods[0] == "probunet"
    assert div.pvalue.loc["probunet"].isna().all() and div.pvalue.loc["dpersona"].notna().any()
    assert "vs probunet" in div.caption
    with pytest.raises(ValueError, match="no such method"):
        build_tables(load_results(store), reference="nope")
    res = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "o"),
                                   "--reference", "nope"])
    assert res.exit_code == 2 and "nope" in res.output


def test_tables_never_mix_protocols_and_say_when_one_leaks(tmp_path):
    store = tmp_path / "s.sqlite"
    for protocol in ("default", "dpersona"):
        write_run(store, "dpersona", 0, protocol=protocol)
        write_run(store, "probunet", 0, protocol=protocol)
    write_run(store, "dpersona", 0, run_cfg={"ged_estimator": "distinct"})
    paths = write_report(store, tmp_path / "out", figures=False)
    names = {p.name for p in paths}
    assert {"synthetic_smoke_diversity.tex", "synthetic_smoke_dpersona_diversity.tex",
            "synthetic_smoke_ged_estimator-distinct_diversity.tex"} <= names
    leak = (tmp_path / "out" / "synthetic_smoke_dpersona_diversity.tex").read_text()
    assert "checkpoint chosen on the test fold; not a clean estimate" in leak
    clean = (tmp_path / "out" / "synthetic_smoke_diversity.tex").read_text()
    assert "not a clean estimate" not in clean
    distinct = (tmp_path / "out" / "synthetic_smoke_ged_estimator-distinct_diversity.tex").read_text()
    assert "GED: distinct pairs only" in distinct and _rows(distinct) == ["dpersona"]


def test_ambiguous_experiment_selection_fails_listing_the_choices(tmp_path):
    store = tmp_path / "s.sqlite"
    write_run(store, "dpersona", 0, experiment="smoke")
    write_run(store, "dpersona", 0, experiment="ablation-a")
    with pytest.raises(SelectionError, match="'ablation-a' \\(1 run\\), 'smoke' \\(1 run\\)"):
        write_report(store, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written
    write_report(store, tmp_path / "out", experiment="ablation-a", figures=False)
    assert (tmp_path / "out" / "synthetic_ablation-a_diversity.tex").is_file()
    res = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--experiment" in res.output and "ablation-a" in res.output


def test_check_fails_listing_the_choices_when_the_baseline_is_ambiguous(tmp_path):
    store = tmp_path / "s.sqlite"
    write_run(store, "dpersona", 0, overrides={"beta": 0.5})
    baseline = tmp_path / "baseline.json"
    ok, _ = run_check(store, baseline, update=True)
    assert ok
    data = json.loads(baseline.read_text())
    assert all(e["experiment"] == "smoke" and e["overrides"] == {"beta": 0.5} for e in data["entries"])
    # a second configuration of the same method: the baseline names its overrides -> still fine
    write_run(store, "dpersona", 0, overrides={"beta": 1.0})
    ok, text = run_check(store, baseline)
    assert ok, text
    # an older baseline (no experiment / overrides fields) cannot tell the two apart
    for e in data["entries"]:
        for k in ("experiment", "overrides", "protocol", "convention"):
            e.pop(k)
    baseline.write_text(json.dumps(data))
    with pytest.raises(SelectionError) as info:
        run_check(store, baseline)
    msg = str(info.value)
    assert "beta=0.5" in msg and "beta=1.0" in msg and "dpersona/synthetic/smoke/0" in msg
    res = CliRunner().invoke(app, ["check", "--store", str(store), "--baseline", str(baseline)])
    assert res.exit_code != 0 and "beta=1.0" in res.output


def test_check_selects_the_baselines_experiment(tmp_path):
    store = tmp_path / "s.sqlite"
    write_run(store, "probunet", 0, experiment="smoke")
    baseline = tmp_path / "b.json"
    assert run_check(store, baseline, update=True)[0]
    # another experiment with a much worse probunet: not the baseline's, so not compared
    bad = scored_rows("diverse", 10, 0)
    for r in bad:
        r["value"] = 0.0 if r["metric"] != "ged" else 5.0
    write_run(store, "probunet", 0, experiment="other", rows=bad)
    ok, text = run_check(store, baseline)
    assert ok, text
    # a new baseline on a store with two experiments must be told which
    with pytest.raises(SelectionError, match="several experiments"):
        run_check(store, tmp_path / "new.json", update=True)


def test_suite_metadata_drives_the_summary_columns():
    from mrseg_bench.reports.summary import summary_label, summary_metrics

    assert summary_metrics() == ["ged", "dice_soft", "dice_match", "per_rater_dice_mean", "consensus_dice"]
    assert summary_label("per_rater_dice_mean") == "Mean (personalization)"
    assert summary_label("ged") == "GED"


def test_run_config_metric_options_reach_the_suite():
    from mrseg_bench.engine.evaluate import metric_suite
    from mrseg_bench.engine.run_config import RunConfig

    suite = metric_suite(["ged", "ncc"], ged_estimator="distinct", ncc_maps="binary")
    assert isinstance(suite, MetricSuite) and suite.ged_estimator == "distinct" and suite.ncc_maps == "binary"
    with pytest.raises(ValueError, match="ged_estimator"):
        RunConfig(ged_estimator="nope")
    with pytest.raises(ValueError, match="ncc_maps"):
        RunConfig(ncc_maps="nope")
    assert torch.is_tensor(torch.zeros(1))


def test_every_profile_key_the_runs_write_has_a_label_and_a_table():
    """Every profile name ``engine.profile`` and ``worker`` write is a labelled column, in the cost
    table (the summary) or in cost_detail (per phase and per stage); none shows as its raw key."""
    from mrseg_bench.reports.columns import cost_table, higher_is_better, label

    summary = {"params": "Params (M)", "flops_per_image": "GFLOPs/img", "train_images_per_s": "Train img/s",
               "infer_images_per_s": "Infer img/s", "latency_p50_ms": "Latency p50 (ms)",
               "latency_p95_ms": "Latency p95 (ms)", "peak_memory_mb": "Peak mem (MB)", "eval_wall_s": "Eval (s)"}
    detail = {"peak_memory_predict_mb": ("Peak mem predict (MB)", False),
              "peak_memory_train_mb": ("Peak mem train (MB)", False),
              "peak_memory_baseline_mb": ("Mem baseline (MB)", None),
              "train_images_per_s_run": ("Run train img/s", True),
              "train_images_per_s_warmup": ("Train img/s warmup (profiled)", True),
              "wall_s_stage2": ("Wall stage2 (s)", False)}
    assert {k: label(k) for k in summary} == summary
    assert {k: (label(k), higher_is_better(k)) for k in detail} == detail
    assert {cost_table(k) for k in [*summary, "device"]} == {"cost"}
    assert {cost_table(k) for k in detail} == {"cost_detail"}
