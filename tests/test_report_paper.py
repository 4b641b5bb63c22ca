"""Paper-ready reports (issue 27): rater names everywhere, bold only where a best is shown,
tables that fit (scale >= 0.8, bounded column count), reference-first rows, cost captions that
say what produced them, readable CSV columns and headings, figure intervals."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from report_stores import scored_rows, write_run

from mrseg_bench.reports import figures
from mrseg_bench.reports.aggregate import intervals
from mrseg_bench.reports.latex import MIN_SCALE
from mrseg_bench.reports.loader import load_results
from mrseg_bench.reports.report import write_report
from mrseg_bench.reports.tables import MAX_COLUMNS, build_tables

NAMES = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    d = tmp_path_factory.mktemp("named")
    store = d / "s.sqlite"
    env = {"rater_names": NAMES, "threads": 1, "cpu_count": 2, "load_avg_1m": 0.2, "device_name": "Test CPU"}
    for method in ("probunet", "dpersona", "fusion.soft"):
        write_run(store, method, 0, env=env)
    write_report(store, d / "out")
    return d, store


def test_rater_names_in_headers_csv_and_markdown(named):
    d, _ = named
    tex = (d / "out" / "synthetic_smoke_personalization.tex").read_text()
    head = tex.split("\\toprule")[1].split("\\midrule")[0]
    assert [h.split(" $")[0].strip() for h in head.split("&")[1:4]] == NAMES and "R1" not in head
    csv = pd.read_csv(d / "out" / "synthetic_smoke_personalization.csv")
    assert {f"per_rater_dice[{n}].mean" for n in NAMES} <= set(csv.columns)
    assert "per_rater_dice[mean].mean" in csv.columns and not any("_mean_mean" in c for c in csv.columns)
    md = (d / "out" / "report.md").read_text()
    assert "### Personalisation (output r vs rater r)" in md and "### Personalization" not in md
    assert "| alice ↑ | bob ↑ | carol ↑ |" in md


def test_long_rater_names_are_abbreviated_with_a_legend(tmp_path):
    store = tmp_path / "s.sqlite"
    write_run(store, "dpersona", 0, env={"rater_names": ["tight", "generous", "strong-only"]})
    t = next(t for t in build_tables(load_results(store)) if t.kind == "personalization")
    assert [c.label for c in t.columns[:3]] == ["tight", "generous", "str."]
    assert any("Raters: str. = strong-only." in n for n in t.notes)


def test_rater_names_in_the_figures(monkeypatch, tmp_path, named):
    _, store = named
    drawn = {}

    def keep(fig, stem):
        drawn[stem.name] = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()] + \
            [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        return []

    monkeypatch.setattr(figures, "save_figure", keep)
    import torch

    from mrseg_bench.types import Prediction

    masks = (torch.rand(2, 3, 8, 8) > 0.5).to(torch.uint8)
    figures.qualitative_grid(torch.rand(2, 1, 8, 8), masks, {"m": Prediction(personalized=torch.rand(2, 3, 8, 8))},
                             tmp_path / "q", rater_names=NAMES)
    write_report(store, tmp_path / "out")
    assert set(NAMES) <= set(drawn["synthetic_smoke_per_rater"])
    assert set(NAMES) <= set(drawn["q"])


def _bold_cells(tex: str) -> int:
    return tex.count("\\textbf")


def test_no_bold_in_a_one_method_table(tmp_path):
    store = tmp_path / "s.sqlite"
    write_run(store, "dpersona", 0)
    write_report(store, tmp_path / "out", figures=False)
    tex = (tmp_path / "out" / "tables.tex").read_text()
    assert _bold_cells(tex) == 0 and "Bold:" not in tex


def test_no_bold_in_a_single_seed_tie(tmp_path):
    store = tmp_path / "s.sqlite"
    rows = scored_rows("diverse", 10, 0)
    write_run(store, "dpersona", 0, rows=rows)
    near = [{**r, "value": r["value"] * 1.01} if isinstance(r["value"], float) else r for r in rows]
    write_run(store, "probunet", 0, rows=near)  # 1% apart: within the 5% margin
    t = next(t for t in build_tables(load_results(store)) if t.kind == "diversity")
    assert not t.best().to_numpy().any()
    far = [{**r, "value": r["value"] * 1.5} if r["metric"] == "ged" else r for r in rows]
    write_run(store, "probunet", 0, rows=far, finished="2026-01-02T00:00:00Z")  # a rerun replaces it
    t = next(t for t in build_tables(load_results(store)) if t.kind == "diversity")
    assert t.best()["ged"].tolist() == [True, False]  # dpersona's GED is 33% lower


def test_tables_fit_scale_and_columns(named):
    d, _ = named
    tex = (d / "out" / "tables.tex").read_text()
    boxes = re.findall(r"\\resizebox\{(.*?)\}\{!\}", tex)
    assert boxes and all(b.startswith(f"\\ifdim\\width>{1 / MIN_SCALE:g}\\linewidth {MIN_SCALE:g}\\width")
                         for b in boxes)
    assert MIN_SCALE >= 0.8
    for spec in re.findall(r"\\begin\{tabular\}\{([^}]*(?:\{[^}]*\}[^}]*)*)\}", tex):
        assert len(re.findall(r"[lrc]|p\{", spec)) <= MAX_COLUMNS + 1, spec


def test_reference_first_then_primary_metric(named):
    _, store = named
    t = next(t for t in build_tables(load_results(store)) if t.kind == "diversity")
    assert t.methods[0] == "dpersona"
    ged = t.mean["ged"].iloc[1:]
    assert ged.is_monotonic_increasing  # lower GED is better
    cost = next(t for t in build_tables(load_results(store)) if t.kind == "cost")
    assert cost.methods[0] == "dpersona"


def test_cost_caption_says_what_produced_it(tmp_path, named):
    _, store = named
    cost = next(t for t in build_tables(load_results(store)) if t.kind == "cost")
    assert "Measured on Test CPU; threads 1; load average at start 0.2 on 2 CPUs." in cost.caption
    assert "busy" not in cost.caption and "experiment" in cost.caption and "protocol" not in cost.caption
    busy = tmp_path / "b.sqlite"
    write_run(busy, "dpersona", 0, env={"load_avg_1m": 7.5, "cpu_count": 2, "threads": 2})
    cost = next(t for t in build_tables(load_results(busy)) if t.kind == "cost")
    assert "Warning: the machine was busy when dpersona started" in cost.caption


def test_intervals_std_over_seeds_or_bootstrap_over_cases():
    stats = pd.DataFrame({"method": ["a", "b"], "key": ["ged", "ged"], "mean": [0.5, 0.3],
                          "std": [0.1, np.nan], "n": [3, 1]})
    cases = pd.DataFrame({"method": ["b"] * 4, "key": ["ged"] * 4, "value": [0.3, 0.3, 0.3, 0.3]})
    out = intervals(stats, cases).set_index("method")
    assert out.loc["a", ["lo", "hi"]].tolist() == pytest.approx([0.4, 0.6])
    assert out.loc["b", ["lo", "hi"]].tolist() == pytest.approx([0.3, 0.3])  # constant cases: no spread
    cases["value"] = [0.0, 0.0, 1.0, 1.0]
    lo, hi = intervals(stats, cases).set_index("method").loc["b", ["lo", "hi"]]
    assert 0.0 <= lo < 0.5 < hi <= 1.0


def test_small_test_split_warns(named, tmp_path):
    _, store = named  # 4 test cases per run
    t = next(t for t in build_tables(load_results(store)) if t.kind == "diversity")
    assert t.notes[0].startswith("Warning: only 4 test cases per run (fewer than 10)")
