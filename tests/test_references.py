"""Issue 17: the dataset's reference scores (synthetic oracle / shared mask) travel with each run
and appear as reference rows (personalisation table) and lines (per-rater figure)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import test_engine_toys as toys

from mrseg_bench.datasets.synthetic import SyntheticMultiRater
from mrseg_bench.executors.grid import run_grid
from mrseg_bench.references import REFERENCE_CASE, reference_rows, split_reference_rows
from mrseg_bench.reports import figures
from mrseg_bench.reports.demo import write_demo_store
from mrseg_bench.reports.loader import load_results
from mrseg_bench.reports.report import write_report
from mrseg_bench.reports.tables import build_tables
from mrseg_bench.run.plan import plan_grid
from mrseg_bench.store import ResultsStore


def test_synthetic_reference_scores_are_its_oracles_on_the_given_cases():
    ds = SyntheticMultiRater(num_cases=10, image_size=32)
    idx = [1, 4, 7]
    rows = reference_rows(ds, idx)
    by = {(r["metric"], r["rater"]): r["value"] for r in rows}
    assert all(r["case_id"] == REFERENCE_CASE for r in rows) and len(rows) == 2 * 4
    oracle, shared = ds.oracle_dice(idx), ds.shared_oracle_dice(idx)
    for r in range(4):
        assert by[("reference:oracle", r)] == pytest.approx(float(oracle[r]))
        assert by[("reference:shared mask", r)] == pytest.approx(float(shared[r]))
    # other cases give other values: the scores are those of the run's test cases
    assert ds.oracle_dice([0, 2]).tolist() != oracle.tolist()
    assert reference_rows(ds, []) == []


def test_synthetic_version_2_adds_attainable_and_the_disagreement_split():
    ds = SyntheticMultiRater(num_cases=10, image_size=32, version=2)
    idx = [1, 4, 7]
    rows = reference_rows(ds, idx)
    per_rater = [r for r in rows if r["rater"] is not None]
    scalar = {r["metric"]: r["value"] for r in rows if r["rater"] is None}
    assert [r["metric"] for r in per_rater[::4]] == ["reference:oracle", "reference:attainable",
                                                      "reference:shared mask"]
    by = {(r["metric"], r["rater"]): r["value"] for r in per_rater}
    att = ds.attainable_dice(idx)
    assert [by[("reference:attainable", r)] for r in range(4)] == pytest.approx(att.tolist())
    split = ds.disagreement_split(idx)
    assert scalar == {"reference:style disagreement": pytest.approx(split["style"]),
                      "reference:ambiguity disagreement": pytest.approx(split["ambiguity"])}
    assert all(r["case_id"] == REFERENCE_CASE for r in rows)


class _Values:  # a dataset with data-level values only
    info = type("Info", (), {"name": "vals", "num_raters": 2})()

    def __init__(self, values):
        self.values = values

    def reference_values(self, indices):
        return self.values


def test_reference_values_are_rows_without_a_rater():
    rows = reference_rows(_Values({"ambiguity disagreement": 0.25}), [0])
    assert rows == [{"case_id": REFERENCE_CASE, "metric": "reference:ambiguity disagreement", "rater": None,
                     "value": 0.25}]
    for bad, match in (([0.1], "must return a dict"), ({"x": 2.0}, r"must be in \[0, 1\]"),
                       ({"x": "a"}, r"must be in \[0, 1\]"), ({" ": 0.1}, "bad reference name")):
        with pytest.raises(ValueError, match=f"dataset 'vals'.*{match}"):
            reference_rows(_Values(bad), [0])


class _Plain:  # a dataset without reference scores
    pass


class _Bad:
    def __init__(self, scores):
        self.scores = scores
        self.info = type("Info", (), {"name": "bad", "num_raters": 2})()

    def reference_scores(self, indices):
        return self.scores


@pytest.mark.parametrize("scores, match", [
    ([0.5, 0.5], "must return a dict"),
    ({"oracle": [0.5]}, "1 values, expected one per rater"),
    ({"oracle": [0.5, 1.5]}, r"must be in \[0, 1\]"),
    ({"oracle": [0.5, float("nan")]}, r"must be in \[0, 1\]"),
    ({"oracle": [0.5, "x"]}, r"must be in \[0, 1\]"),
    ({"": [0.5, 0.5]}, "bad reference name"),
])
def test_bad_reference_scores_name_the_dataset(scores, match):
    assert reference_rows(_Plain(), [0, 1]) == []
    with pytest.raises(ValueError, match=f"dataset 'bad'.*{match}"):
        reference_rows(_Bad(scores), [0, 1])


def test_split_reference_rows():
    m = pd.DataFrame({"run_id": ["a"] * 3, "case_id": ["c0", REFERENCE_CASE, REFERENCE_CASE],
                      "metric": ["ged", "reference:oracle", "reference:oracle"],
                      "rater": pd.array([None, 0, 1], dtype="Int64"), "value": [0.1, 0.9, 0.8]})
    rest, refs = split_reference_rows(m)
    assert rest["metric"].tolist() == ["ged"]
    assert refs["name"].tolist() == ["oracle", "oracle"] and refs["value"].tolist() == [0.9, 0.8]


def _store_with_references(tmp_path, seeds=(0, 1, 2), oracle=(0.99, 0.98, 0.97), split=None):
    """Demo store (dpersona personalised, per_rater_dice 0.70 + ...; 3 raters) plus reference
    rows stored with every run, as the runner writes them (``split``: data-level values too)."""
    store = write_demo_store(tmp_path / "s.sqlite", seeds=seeds)
    refs = {"oracle": list(oracle), "shared mask": [0.60, 0.50, 0.40]}
    with ResultsStore(store) as s:
        runs = s.runs()
    con_rows = [(rid, REFERENCE_CASE, f"reference:{n}", r, v)
                for rid in runs["run_id"] for n, vals in refs.items() for r, v in enumerate(vals)]
    con_rows += [(rid, REFERENCE_CASE, f"reference:{n}", None, v)
                 for rid in runs["run_id"] for n, v in (split or {}).items()]
    import sqlite3

    con = sqlite3.connect(store)
    con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", con_rows)
    con.commit()
    con.close()
    return store


def test_reference_rows_in_the_personalisation_table_are_not_ranked(tmp_path):
    store = _store_with_references(tmp_path)
    res = load_results(store)
    assert REFERENCE_CASE not in set(res.metrics["case_id"])  # never a case of a method
    tables = build_tables(res)
    pers = next(t for t in tables if t.kind == "personalization")
    assert pers.methods == ["dpersona", "oracle (reference)", "shared mask (reference)"]
    assert pers.reference_rows == ["oracle (reference)", "shared mask (reference)"]
    assert pers.mean.at["oracle (reference)", "per_rater_dice[1]"] == pytest.approx(0.98)
    assert pers.mean.at["oracle (reference)", "per_rater_dice_mean"] == pytest.approx(0.98)
    # the oracle is higher than dpersona everywhere, yet is not ranked: one method, nothing bold
    best = pers.best()
    assert not best.any().any()
    assert pers.pvalue.loc[pers.reference_rows].isna().all().all()
    # no other table gains reference rows, and the diversity table's case count is unchanged
    div = next(t for t in tables if t.kind == "diversity")
    assert "oracle (reference)" not in div.methods and "mean over the 6 test cases" in " ".join(div.notes)
    out = tmp_path / "out"
    write_report(store, out)
    md = (out / "synthetic_smoke_personalization.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| oracle (reference)"))
    assert "0.990" in line and "**" not in line and "±" not in line and "†" not in line
    assert "Reference rows (oracle, shared mask) are not methods" in md
    # 3 seeds, and no method to test against dpersona here: no marker text at all
    assert "Mean ± std over 3 seeds." in md and "Bold" not in md and "significance markers" not in md
    tex = (out / "synthetic_smoke_personalization.tex").read_text()
    body = tex.split("\\bottomrule")[0]
    # a rule separates the methods from the reference rows
    assert body.index("dpersona") < body.rindex("\\midrule") < body.index("oracle (reference)")
    csv = pd.read_csv(out / "synthetic_smoke_personalization.csv").set_index("method")
    assert csv["reference"].to_dict() == {"dpersona": False, "oracle (reference)": True,
                                          "shared mask (reference)": True}


def test_diversity_table_shows_the_ambiguity_part(tmp_path):
    split = {"style disagreement": 0.412, "ambiguity disagreement": 0.093}
    res = load_results(_store_with_references(tmp_path, split=split))
    tables = build_tables(res)
    div = next(t for t in tables if t.kind == "diversity")
    assert div.reference_rows == ["ambiguity (reference)"] and div.methods[-1] == "ambiguity (reference)"
    assert div.mean.at["ambiguity (reference)", "sample_diversity"] == pytest.approx(0.093)
    assert not div.best().loc["ambiguity (reference)"].any()
    assert not div.available.loc["ambiguity (reference)"].drop("sample_diversity").any()
    note = next(n for n in div.notes if n.startswith("Rater disagreement split"))
    assert "style part 0.412" in note and "ambiguity part 0.093" in note
    # the per-rater table keeps its own references only
    pers = next(t for t in tables if t.kind == "personalization")
    assert pers.reference_rows == ["oracle (reference)", "shared mask (reference)"]
    out = tmp_path / "out"
    write_report(_store_with_references(tmp_path / "b", split=split), out)
    md = (out / "synthetic_smoke_diversity.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| ambiguity (reference)"))
    assert "0.093" in line and "**" not in line
    # without a stored split the diversity table has no reference row
    plain = next(t for t in build_tables(load_results(_store_with_references(tmp_path / "c")))
                 if t.kind == "diversity")
    assert plain.reference_rows == []


def test_per_rater_figure_draws_one_line_per_reference(tmp_path, monkeypatch):
    store = _store_with_references(tmp_path)
    drawn = []
    real = figures.plt.Axes.hlines

    def spy(self, y, *args, **kwargs):
        if "linestyles" in kwargs:  # the reference lines (error bars use hlines too)
            drawn.append((float(y), kwargs.get("label")))
        return real(self, y, *args, **kwargs)

    monkeypatch.setattr(figures.plt.Axes, "hlines", spy)
    paths = write_report(store, tmp_path / "out")
    assert any(p.name == "synthetic_smoke_per_rater.png" for p in paths)
    # 3 raters + the mean, for each of the two references; one legend entry per reference
    assert sorted(y for y, _ in drawn) == pytest.approx(sorted([0.99, 0.98, 0.97, 0.98, 0.6, 0.5, 0.4, 0.5]))
    assert sorted(lab for _, lab in drawn if lab) == ["oracle (reference)", "shared mask (reference)"]


PRESET = toys.preset_toml("synthetic", description="toy preset on synthetic", num_cases=12, image_size=32,
                          profile=False)


@pytest.mark.parametrize("version", [1, 2])
def test_runner_stores_the_oracle_of_the_runs_test_cases(tmp_path, version):
    toys.register()
    try:
        preset = tmp_path / "toy.toml"
        preset.write_text(PRESET.replace("[dataset.synthetic]", f"[dataset.synthetic]\nversion = {version}"))
        plan = plan_grid("toy", "synthetic", [0], str(preset))
        out = run_grid(plan, tmp_path / "runs", tmp_path / "runs" / "results.sqlite")
        assert out[0].status == "done", out[0].error
        test = json.loads((out[0].run_dir / "split.json").read_text())["test"]
        ds = plan.datasets["synthetic"]
        idx = [ds.case_ids.index(c) if isinstance(c, str) else int(c) for c in test]
        res = load_results(tmp_path / "runs" / "results.sqlite")
        refs = res.references.set_index(["name", "rater"])["value"]
        assert refs.loc[("oracle", 2)] == pytest.approx(float(ds.oracle_dice(idx)[2]))
        assert refs.loc[("shared mask", 0)] == pytest.approx(float(ds.shared_oracle_dice(idx)[0]))
        tables = build_tables(res)
        pers = next(t for t in tables if t.kind == "personalization")
        div = next(t for t in tables if t.kind == "diversity")
        if version == 1:  # as before version 2: no new rows
            assert pers.reference_rows == ["oracle (reference)", "shared mask (reference)"]
            assert set(res.references["name"]) == {"oracle", "shared mask"} and div.reference_rows == []
        else:
            assert pers.reference_rows == ["oracle (reference)", "attainable (reference)", "shared mask (reference)"]
            assert refs.loc[("attainable", 1)] == pytest.approx(float(ds.attainable_dice(idx)[1]))
            amb = res.references[res.references["name"] == "ambiguity disagreement"]
            assert amb["rater"].isna().all() and len(amb) == 1
            assert amb["value"].iloc[0] == pytest.approx(ds.disagreement_split(idx)["ambiguity"])
            assert div.reference_rows == ["ambiguity (reference)"]
    finally:
        toys.unregister()
