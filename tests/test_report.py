"""Report tables, LaTeX/Markdown/CSV rendering and figures from a small store built here."""

from __future__ import annotations

import math
import shutil
import sqlite3
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wilcoxon

from mrseg_bench.reports.demo import write_demo_store
from mrseg_bench.reports.figures import qualitative_grid
from mrseg_bench.reports.latex import check_latex, escape_latex
from mrseg_bench.reports.loader import load_results
from mrseg_bench.reports.qualitative import load_qualitative, save_qualitative
from mrseg_bench.reports.report import write_report
from mrseg_bench.reports.significance import paired_pvalues, wilcoxon_p
from mrseg_bench.reports.tables import build_tables
from mrseg_bench.store import ResultsStore
from mrseg_bench.types import Prediction


def _toy_cases(k=2, r=3, h=16):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
    disk = lambda rad, k_: ((yy - h // 2 - k_) ** 2 + (xx - h // 2) ** 2 < rad)  # noqa: E731
    image = torch.stack([disk(20, i).float() for i in range(k)])[:, None]
    masks = torch.stack([torch.stack([disk(10 + 6 * j, i) for j in range(r)]) for i in range(k)])
    return image, masks.to(torch.uint8)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two methods (dpersona: diverse+personalized, probunet: diverse), seeds 0 and 1,
    6 cases, 3 raters; per-rater rows for dpersona only; plus one failed run."""
    d = tmp_path_factory.mktemp("rep")
    store = write_demo_store(d / "results.sqlite", methods=("dpersona", "probunet"), run_dir=d / "runs")
    image, masks = _toy_cases()
    soft = masks.float() * 0.8 + 0.1
    ids = ["case000", "case001"]
    save_qualitative(d / "runs" / "dpersona-synthetic-smoke-s0", image, masks,
                     Prediction(samples=soft[:, [0, 1, 2, 1, 0, 2]], personalized=soft), ids)
    save_qualitative(d / "runs" / "probunet-synthetic-smoke-s0", image, masks,
                     Prediction(samples=soft[:, [2, 1]]), ids)
    with ResultsStore(store) as s:
        s.write_run({"run_id": "broken", "method": "ghost", "dataset": "synthetic", "seed": 0,
                     "preset": "smoke", "config_hash": "h-broken", "status": "failed",
                     "error": "boom"})
    paths = write_report(store, d / "out")
    return d, store, paths


def _tex_rows(text: str) -> tuple[list[str], list[list[str]]]:
    inner = text.split("\\midrule")[1].split("\\bottomrule")[0]
    head = text.split("\\toprule")[1].split("\\midrule")[0]
    header = [c.strip() for c in head.strip().rstrip("\\").split("&")]
    rows = [[c.strip() for c in r.split("&")] for r in inner.strip().split("\\\\") if r.strip()]
    return header, rows


def test_report_writes_every_file(report):
    d, _, paths = report
    names = {p.name for p in paths}
    for kind in ("diversity", "personalization", "cost", "cost_detail"):
        for ext in ("tex", "md", "csv"):
            assert f"synthetic_smoke_{kind}.{ext}" in names
    for fig in ("throughput", "per_rater", "qualitative"):
        for ext in ("png", "pdf"):
            assert f"synthetic_smoke_{fig}.{ext}" in names
    assert {"tables.tex", "report.md"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert set(paths) == {p for p in (d / "out").iterdir() if not p.name.startswith(".")}
    # the failed run never reaches a table
    assert "ghost" not in (d / "out" / "report.md").read_text()


def test_mean_and_std_are_over_seeds(report):
    d, _, _ = report
    csv = pd.read_csv(d / "out" / "synthetic_smoke_diversity.csv").set_index("method")
    # per case 0.30 + 0.02 s + 0.01 c, c = 0..5: run means 0.325 (s=0) and 0.345 (s=1)
    assert csv.at["dpersona", "ged.mean"] == pytest.approx(0.335)
    assert csv.at["dpersona", "ged.std"] == pytest.approx(0.02 / math.sqrt(2))  # ddof=1 over 2 seeds
    assert csv.at["dpersona", "ged.seeds"] == 2
    # not the std over cases (0.0187) nor over all 12 case values
    assert abs(csv.at["dpersona", "ged.std"] - np.std(np.arange(6) * 0.01, ddof=1)) > 1e-3
    assert csv.at["probunet", "dice_soft.mean"] == pytest.approx(0.72 + 0.01 + 0.025)
    md = (d / "out" / "synthetic_smoke_diversity.md").read_text()
    assert "0.335 ± 0.014" in md


def test_one_seed_has_no_plus_minus(tmp_path):
    store = write_demo_store(tmp_path / "s.sqlite", seeds=(3,))
    write_report(store, tmp_path / "out", figures=False)
    md = (tmp_path / "out" / "synthetic_smoke_diversity.md").read_text()
    tex = (tmp_path / "out" / "synthetic_smoke_diversity.tex").read_text()
    table = md.split("\n\n")[0]
    assert "±" not in table and "\\pm" not in tex.split("\\toprule")[1].split("\\bottomrule")[0]
    csv = pd.read_csv(tmp_path / "out" / "synthetic_smoke_diversity.csv")
    assert csv["ged.std"].isna().all() and (csv["ged.seeds"] == 1).all()
    assert csv.set_index("method").at["dpersona", "ged.mean"] == pytest.approx(0.30 + 0.06 + 0.025)


def test_bold_is_the_numerically_best_cell(report):
    d, _, _ = report
    tex = (d / "out" / "synthetic_smoke_diversity.tex").read_text()
    csv = pd.read_csv(d / "out" / "synthetic_smoke_diversity.csv").set_index("method")
    header, rows = _tex_rows(tex)
    keys = {"GED $\\downarrow$": ("ged", False), "Dice\\_soft $\\uparrow$": ("dice_soft", True),
            "Dice\\_match $\\uparrow$": ("dice_match", True), "HM-IoU $\\uparrow$": ("hm_iou", True)}
    for col, (key, higher) in keys.items():
        j = header.index(col)
        bold = [r[0] for r in rows if "\\textbf" in r[j]]
        vals = csv[f"{key}.mean"]
        lead, other = (vals.idxmax(), vals.idxmin()) if higher else (vals.idxmin(), vals.idxmax())
        ahead = abs(vals[lead] - vals[other]) > 0.05 * max(abs(vals[lead]), abs(vals[other]))  # 2 seeds: margin
        assert bold == ([lead] if ahead else []), col
    # descriptive column: no arrow, never bold
    j = header.index("Sample div.")
    assert not any("\\textbf" in r[j] for r in rows)
    cost = pd.read_csv(d / "out" / "synthetic_smoke_cost.csv").set_index("method")
    h, rws = _tex_rows((d / "out" / "synthetic_smoke_cost.tex").read_text())
    j = h.index("Params (M) $\\downarrow$")
    assert [r[0] for r in rws if "\\textbf" in r[j]] == [cost["params.mean"].idxmin()]
    # the cost table keeps the summary; per-phase and per-stage figures have their own table, and
    # every column there has a label (no raw profile keys, which made a 20-column unreadable table)
    assert not any(k in cost.columns for k in ("wall_s_stage1_mean", "peak_memory_train_mb_mean"))
    # transposed: one column per method, one row per quantity (the table fits the page)
    hd, drows = _tex_rows((d / "out" / "synthetic_smoke_cost_detail.tex").read_text())
    assert [r[0] for r in drows] == ["Peak mem predict (MB) $\\downarrow$", "Peak mem train (MB) $\\downarrow$",
                                     "Train img/s stage1 (profiled) $\\uparrow$",
                                     "Train img/s stage2 (profiled) $\\uparrow$",
                                     "Train img/s train (profiled) $\\uparrow$", "Wall stage1 (s) $\\downarrow$",
                                     "Wall stage2 (s) $\\downarrow$", "Wall train (s) $\\downarrow$"]
    assert hd == ["Quantity"] + [r[0] for r in rws]
    wall1 = drows[[r[0] for r in drows].index("Wall stage1 (s) $\\downarrow$")]
    assert wall1[hd.index("probunet")] == "---"  # not a stage of probunet


def test_rows_without_the_tables_outputs_are_left_out_and_named(report):
    # issue 11: probunet has no personalised output, so it is not a row of dashes but a note
    d, _, _ = report
    md = (d / "out" / "synthetic_smoke_personalization.md").read_text()
    assert not any(line.startswith("| probunet") for line in md.splitlines())
    assert "Not shown (no personalization output): probunet" in md
    header, rows = _tex_rows((d / "out" / "synthetic_smoke_personalization.tex").read_text())
    assert header == ["Method", "R1 $\\uparrow$", "R2 $\\uparrow$", "R3 $\\uparrow$", "Mean $\\uparrow$"]
    assert [r[0] for r in rows] == ["dpersona"]
    csv = pd.read_csv(d / "out" / "synthetic_smoke_personalization.csv").set_index("method")
    assert "probunet" not in csv.index
    assert csv.at["dpersona", "per_rater_dice[2].mean"] == pytest.approx(0.70 + 0.1 + 0.01 + 0.025)


def test_significance_marker_against_dpersona(tmp_path):
    # 3 seeds: the test is run (issue 17: fewer seeds per row give no markers)
    store = write_demo_store(tmp_path / "s.sqlite", seeds=(0, 1, 2))
    write_report(store, tmp_path / "out", figures=False)
    d = tmp_path
    header, rows = _tex_rows((d / "out" / "synthetic_smoke_diversity.tex").read_text())
    by = {r[0]: r for r in rows}
    # probunet - dpersona is the same nonzero value on all 6 cases: exact p = 2 / 2**6
    assert all("\\dagger" in c for c in by["probunet"][1:])
    assert not any("\\dagger" in c for c in by["dpersona"][1:])
    csv = pd.read_csv(d / "out" / "synthetic_smoke_diversity.csv").set_index("method")
    assert csv.at["probunet", "ged.p"] == pytest.approx(2 / 64)
    md = (d / "out" / "synthetic_smoke_diversity.md").read_text()
    assert "Mean ± std over 3 seeds" in md and "† p \\< 0.05 vs dpersona" in md


@pytest.mark.parametrize("seeds, text", [
    ((3,), "One seed per row (no ± std). Bold: the best method"),
    ((0, 1), "Mean ± std over 2 seeds. Bold: the best method"),
])
def test_fewer_than_three_seeds_give_no_significance_markers(tmp_path, seeds, text):
    # issue 17: the same store with 3 seeds has † on every probunet cell (test above)
    store = write_demo_store(tmp_path / "s.sqlite", seeds=seeds)
    write_report(store, tmp_path / "out", figures=False)
    for kind in ("diversity", "personalization"):
        md = (tmp_path / "out" / f"synthetic_smoke_{kind}.md").read_text()
        tex = (tmp_path / "out" / f"synthetic_smoke_{kind}.tex").read_text()
        assert "†" not in md.split("\n\n")[0] and "\\dagger" not in tex
        # the personalisation table has dpersona alone: nothing to test or bold, nothing to say
        assert (text in md) == (kind == "diversity")
        assert ("No significance markers: they need ≥ 3 seeds per row." in md) == (kind == "diversity")
    csv = pd.read_csv(tmp_path / "out" / "synthetic_smoke_diversity.csv")
    assert csv["ged.p"].isna().all()
    cost = (tmp_path / "out" / "synthetic_smoke_cost.md").read_text()
    assert ("One seed per row" in cost) == (len(seeds) == 1) and "significance" not in cost


def test_wilcoxon_hand_values():
    assert wilcoxon_p(np.arange(1, 7, dtype=float)) == pytest.approx(2 / 64)
    assert wilcoxon_p(np.zeros(5)) == 1.0
    assert math.isnan(wilcoxon_p(np.array([0.3])))
    rng = np.random.default_rng(0)
    diff = rng.normal(size=12)
    assert wilcoxon_p(diff) == pytest.approx(wilcoxon(diff).pvalue)


def test_paired_pvalues_pair_by_case_id_and_average_seeds():
    rng = np.random.default_rng(1)
    cases = [f"c{i}" for i in range(10)]
    ref = rng.uniform(size=10)
    other = ref + rng.normal(0.05, 0.05, size=10)
    rows = []
    for seed, shift in ((0, -0.01), (1, 0.01)):  # seed effects cancel in the seed average
        rows += [("dpersona", seed, c, "ged", v + shift) for c, v in zip(cases, ref, strict=True)]
        rows += [("probunet", seed, c, "ged", v + shift) for c, v in zip(cases, other, strict=True)]
    frame = pd.DataFrame(rows, columns=["method", "seed", "case_id", "key", "value"])
    frame = frame.sample(frac=1.0, random_state=3)  # row order must not matter
    out = paired_pvalues(frame, "dpersona")
    assert list(out["method"]) == ["probunet"] and out["n_pairs"].iloc[0] == 10
    assert out["p"].iloc[0] == pytest.approx(wilcoxon(other - ref).pvalue)
    assert paired_pvalues(frame, "absent").empty


def test_latex_escapes_method_names(tmp_path):
    name = "per_rater.multi_head&co%#"
    store = write_demo_store(tmp_path / "s.sqlite", methods=("dpersona", name, "fusion.soft"))
    paths = write_report(store, tmp_path / "out", figures=False)
    assert not any(p.suffix == ".png" for p in paths)
    tex = (tmp_path / "out" / "synthetic_smoke_diversity.tex").read_text().replace("\\allowbreak{}", "")
    assert "per\\_rater.multi\\_head\\&co\\%\\#" in tex  # a long label wraps (break points removed)
    assert name not in tex
    for p in paths:
        if p.suffix == ".tex":
            assert check_latex(p.read_text()) == [], p.name
    md = (tmp_path / "out" / "synthetic_smoke_diversity.md").read_text()
    assert "per\\_rater.multi\\_head&co%#" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len({line.count(" | ") for line in table}) == 1  # same number of cells per row


def test_escape_latex_hand():
    assert escape_latex("a_b&c%d$e#f{g}h~i^j\\k") == (
        "a\\_b\\&c\\%d\\$e\\#f\\{g\\}h\\textasciitilde{}i\\textasciicircum{}j\\textbackslash{}k")
    assert escape_latex("0.5 ± 0.1 ↑") == "0.5 $\\pm$ 0.1 $\\uparrow$"


def test_latex_structure_checker_catches_errors(report):
    d, _, _ = report
    good = (d / "out" / "synthetic_smoke_diversity.tex").read_text()
    assert check_latex(good) == []
    assert check_latex((d / "out" / "tables.tex").read_text()) == []
    bad = {
        "brace": good.replace("\\textbf{", "\\textbf{{", 1),
        "end": good.replace("\\end{tabular}", "", 1),
        "cells": good.replace(" \\\\\n\\bottomrule", " & extra \\\\\n\\bottomrule", 1),
        "rule": good.replace("\\midrule", "", 1),
        "underscore": good.replace("Dice\\_soft", "Dice_soft", 1),
        "math": good.replace("$\\pm$", "$\\pm", 1),
        "unicode": good.replace("---", "—", 1),
    }
    for what, text in bad.items():
        assert text != good, what
        assert check_latex(text), what


def test_tables_compile_when_a_tex_engine_exists(report, tmp_path):
    d, _, _ = report
    doc = ("\\documentclass{article}\\usepackage{booktabs,graphicx}\\begin{document}\n"
           + (d / "out" / "tables.tex").read_text() + "\n\\end{document}\n")
    assert check_latex(doc) == []  # always: the structure check
    if shutil.which("pdflatex"):  # and, where TeX is installed, a real compile
        (tmp_path / "t.tex").write_text(doc)
        res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout[-2000:]


def test_qualitative_contract_and_grid(report, tmp_path):
    d, _, _ = report
    data = load_qualitative(d / "runs" / "dpersona-synthetic-smoke-s0" / "qualitative.pt")
    assert data["samples"].shape == (2, 4, 16, 16)  # capped at 4 samples
    assert data["personalized"].shape == (2, 3, 16, 16)
    assert data["consensus"] is None and data["case_ids"] == ["case000", "case001"]
    image, masks = _toy_cases()
    soft = masks.float().mean(1)
    direct = qualitative_grid(image, masks, {"m": Prediction(consensus=soft)}, tmp_path / "grid")
    assert [p.suffix for p in direct] == [".png", ".pdf"] and direct[0].stat().st_size > 1000
    with pytest.raises(ValueError, match="does not match"):
        qualitative_grid(image, masks, {"m": Prediction(consensus=soft[:, :8])}, tmp_path / "g2")


def test_bad_qualitative_file_names_it(tmp_path):
    bad = tmp_path / "qualitative.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="qualitative.pt"):
        load_qualitative(bad)
    torch.save({"image": torch.zeros(2, 1, 8, 8), "masks": torch.zeros(3, 2, 8, 8)}, bad)
    with pytest.raises(ValueError, match="'masks'"):
        load_qualitative(bad)


def test_bad_store_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.sqlite"):
        write_report(tmp_path / "nope.sqlite", tmp_path / "out")
    junk = tmp_path / "junk.sqlite"
    junk.write_text("hello, not a database")
    with pytest.raises(ValueError, match="junk.sqlite"):
        write_report(junk, tmp_path / "out")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ValueError, match="other.sqlite"):
        load_results(other)
    empty = tmp_path / "empty.sqlite"
    ResultsStore(empty).close()
    with pytest.raises(ValueError, match="no finished"):
        write_report(empty, tmp_path / "out")


def test_bold_needs_a_lead_beyond_the_margin_with_two_seeds(report):
    _, store, _ = report
    table = next(t for t in build_tables(load_results(store)) if t.kind == "diversity")
    assert table.methods == ["dpersona", "probunet"]  # the reference first; 2 seeds each
    best = table.mean.at["dpersona", "ged"]
    table.mean.at["probunet", "ged"] = best + 1e-5  # prints the same: a tie, nothing bold
    assert table.best()["ged"].tolist() == [False, False]
    table.mean.at["probunet", "ged"] = best * 1.04  # 4% behind: within the 5% margin
    assert table.best()["ged"].tolist() == [False, False]
    table.mean.at["probunet", "ged"] = best * 1.06
    assert table.best()["ged"].tolist() == [True, False]
    table.mean.at["probunet", "ged"] = best * 0.94  # lower GED is better
    assert table.best()["ged"].tolist() == [False, True]


def test_column_directions_and_capabilities():
    from mrseg_bench.reports.columns import higher_is_better, label, required_capability
    from mrseg_bench.types import Capability

    expected = {"ged": False, "dice_soft": True, "dice_match": True, "per_rater_dice[3]": True,
                "consensus_dice": True, "sample_diversity": None, "rater_disagreement": None,
                "params": False, "flops_per_image": False, "infer_images_per_s": True,
                "train_images_per_s": True, "latency_p50_ms": False, "peak_memory_mb": False,
                "wall_s_stage1": False, "no_such_column": None}
    assert {k: higher_is_better(k) for k in expected} == expected
    assert required_capability("per_rater_dice[0]") is Capability.PERSONALIZED
    assert required_capability("ged") is Capability.DIVERSE
    assert required_capability("consensus_dice_soft") is Capability.CONSENSUS
    assert required_capability("params") is None
    assert label("per_rater_dice[0]") == "R1" and label("ged") == "GED"


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n_seeds=st.integers(1, 4), n_cases=st.integers(1, 6))
def test_aggregation_property(data, n_seeds, n_cases):
    """mean/std over seeds of per-run case means == numpy on the nested array, any row order."""
    from mrseg_bench.reports.aggregate import run_means, seed_stats
    from mrseg_bench.reports.loader import Results

    vals = np.array(data.draw(st.lists(st.floats(0, 1), min_size=n_seeds * n_cases,
                                       max_size=n_seeds * n_cases))).reshape(n_seeds, n_cases)
    runs = pd.DataFrame({"run_id": [f"r{s}" for s in range(n_seeds)], "method": "m",
                         "dataset": "d", "preset": "p", "seed": range(n_seeds)})
    rows = [(f"r{s}", f"c{c}", "ged", pd.NA, vals[s, c]) for s in range(n_seeds) for c in range(n_cases)]
    metrics = pd.DataFrame(rows, columns=["run_id", "case_id", "metric", "rater", "value"])
    metrics = metrics.sample(frac=1.0, random_state=data.draw(st.integers(0, 100)))
    metrics["rater"] = metrics["rater"].astype("Int64")
    res = Results(runs, metrics, pd.DataFrame(columns=["run_id", "name", "value", "unit"]))
    out = seed_stats(run_means(res)).set_index("key")
    per_run = vals.mean(axis=1)
    assert out.at["ged", "mean"] == pytest.approx(per_run.mean())
    assert out.at["ged", "n"] == n_seeds
    if n_seeds > 1:
        assert out.at["ged", "std"] == pytest.approx(np.std(per_run, ddof=1), abs=1e-12)
    else:
        assert math.isnan(out.at["ged", "std"])
