"""Results store: schema, one-transaction writes, skip/replace by config hash, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from mrseg_bench.store import RUN_COLUMNS, ResultsStore


def _run(run_id: str, h: str = "h1", status: str = "done", **kw):
    base = dict(run_id=run_id, method="m", dataset="d", seed=0, preset="smoke", protocol="default",
                config_json={"a": 1}, config_hash=h, status=status, capabilities=["diverse"],
                started_at="2026-01-01T00:00:00Z", finished_at=kw.pop("finished_at", "2026-01-01T00:01:00Z"))
    base.update(kw)
    return base


METRICS = [
    {"case_id": "c0", "metric": "ged", "rater": None, "value": 0.5},
    {"case_id": "c0", "metric": "per_rater_dice", "rater": 1, "value": 0.25},
]
PROFILE = [{"name": "params", "value": 123.0, "unit": "count"}]


def test_roundtrip_and_schema(tmp_path):
    s = ResultsStore(tmp_path / "r.sqlite")
    s.write_run(_run("r1"), METRICS, PROFILE)
    runs = s.runs()
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert runs.loc[0, "capabilities"] == "diverse" and runs.loc[0, "config_json"] == '{"a": 1}'
    m = s.metrics(["r1"])
    assert list(m.columns) == ["run_id", "case_id", "metric", "rater", "value"]
    assert m["rater"].isna().tolist() == [True, False] and int(m["rater"].iloc[1]) == 1
    assert m["value"].tolist() == [0.5, 0.25]
    assert s.profile().to_dict("records") == [{"run_id": "r1", "name": "params", "value": 123.0, "unit": "count"}]
    assert s.done_run_id("h1") == "r1" and s.done_run_id("nope") is None
    assert s.metrics([]).empty
    mode = sqlite3.connect(tmp_path / "r.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_failed_replaced_by_done_and_force_replaces(tmp_path):
    s = ResultsStore(tmp_path / "r.sqlite")
    s.write_run(_run("f1", status="failed", error="boom"))
    assert s.done_run_id("h1") is None
    s.write_run(_run("d1"), METRICS, PROFILE)
    assert s.runs()["run_id"].tolist() == ["d1"]
    s.write_run(_run("d2", finished_at="2026-01-02T00:00:00Z"), METRICS[:1], PROFILE)  # --force rerun
    assert s.runs()["run_id"].tolist() == ["d2"]
    assert s.metrics()["run_id"].tolist() == ["d2"]
    # a failed attempt never removes a done run of the same hash
    s.write_run(_run("f2", status="failed", error="x"))
    assert sorted(s.runs()["run_id"]) == ["d2", "f2"] and s.done_run_id("h1") == "d2"


def _cfg(seed=0, code="c1", **kw):
    return {"method": "m", "method_config": {"beta": 0.5}, "seed": seed, "code": {"git_commit": code}, **kw}


def test_select_runs_one_row_per_config_latest_code_wins(tmp_path):
    s = ResultsStore(tmp_path / "r.sqlite")
    # the same config on two code versions: the later one is the result; other configs stay
    s.write_run(_run("old", h="h1", config_json=_cfg(code="c1"), finished_at="2026-01-01T00:00:01Z"))
    s.write_run(_run("new", h="h2", config_json=_cfg(code="c2"), finished_at="2026-01-01T00:00:02Z"))
    s.write_run(_run("s1", h="h3", config_json=_cfg(seed=1), seed=1))
    s.write_run(_run("beta", h="h4", config_json={**_cfg(), "method_config": {"beta": 1.0}},
                     overrides_json={"beta": 1.0}))
    s.write_run(_run("x", h="h5", status="failed"))
    sel = s.select_runs().set_index("run_id")
    assert sorted(sel.index) == ["beta", "new", "s1"]
    # one table row = one config_key: seeds 0 and 1 of beta=0.5 share it, beta=1.0 has its own
    assert sel.loc["new", "config_key"] == sel.loc["s1", "config_key"] != sel.loc["beta", "config_key"]
    assert sel.loc["new", "result_key"] != sel.loc["s1", "result_key"]
    assert sel.loc["beta", "overrides_json"] == '{"beta": 1.0}' and sel.loc["new", "overrides_json"] == "{}"
    assert sel["experiment"].tolist() == ["smoke"] * 3  # no experiment column value: the preset
    assert s.select_runs(status="failed")["run_id"].tolist() == ["x"]
    assert s.select_runs(method="nope").empty and "config_key" in s.select_runs(method="nope")


def test_select_runs_ambiguous_experiment_lists_the_choices(tmp_path):
    s = ResultsStore(tmp_path / "r.sqlite")
    s.write_run(_run("a", h="h1", config_json=_cfg(), experiment="smoke"))
    s.write_run(_run("b", h="h2", config_json=_cfg(), experiment="ablation"))
    s.write_run(_run("c", h="h3", config_json=_cfg(seed=1), experiment="ablation", seed=1))
    s.write_run(_run("d", h="h4", config_json=_cfg(), dataset="other", experiment="ablation"))
    with pytest.raises(ValueError, match=r"several experiments.*'ablation' \(3 runs\), 'smoke' \(1 run\)"):
        s.select_runs()
    assert sorted(s.select_runs("ablation")["run_id"]) == ["b", "c", "d"]
    assert s.select_runs("ablation", dataset="other")["run_id"].tolist() == ["d"]
    assert s.select_runs(dataset="other")["run_id"].tolist() == ["d"]  # one experiment left: no error
    assert sorted(s.select_runs("*")["run_id"]) == ["a", "b", "c", "d"]
    assert s.experiments() == {"ablation": 3, "smoke": 1}
    assert s.select_runs("nope").empty


def test_failed_transaction_leaves_nothing(tmp_path):
    s = ResultsStore(tmp_path / "r.sqlite")
    bad_metrics = METRICS + [{"case_id": "c1", "metric": "ged", "value": "not-a-number"}]
    with pytest.raises(ValueError):
        s.write_run(_run("r1"), bad_metrics, PROFILE)
    with pytest.raises(ValueError, match="status"):
        s.write_run(_run("r1", status="running"))
    with pytest.raises(ValueError, match="unknown run column"):
        s.write_run({**_run("r1"), "colour": 1})
    with pytest.raises(ValueError, match=r"profile\[0\]\.unit"):  # refused before the transaction
        s.write_run(_run("r1"), METRICS, [{"name": "p", "value": 1.0, "unit": object()}])
    # a failure inside the transaction (after the run row was inserted) rolls back
    s._conn.execute("CREATE TEMP TRIGGER boom BEFORE INSERT ON profile BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.IntegrityError, match="boom"):
        s.write_run(_run("r1"), METRICS, PROFILE)
    assert s.runs().empty and s.metrics().empty and s.profile().empty


def test_rejects_non_store_files(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ValueError, match="junk.sqlite"):
        ResultsStore(junk)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE foo (x INT)")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="other.sqlite.*missing table"):
        ResultsStore(other)
    with pytest.raises(ValueError, match="directory"):
        ResultsStore(tmp_path)


def _writer(path: str, tag: str, n: int) -> None:
    s = ResultsStore(path)
    for i in range(n):
        rows = [{"case_id": f"c{j}", "metric": "ged", "rater": None, "value": float(j)} for j in range(20)]
        s.write_run(_run(f"{tag}{i}", h=f"{tag}{i}"), rows, PROFILE)
    s.close()


def test_two_processes_lose_no_rows(tmp_path):
    path = str(tmp_path / "r.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag, 15)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = ResultsStore(path)
    assert len(s.runs()) == 30
    assert len(s.metrics()) == 30 * 20
    assert len(s.profile()) == 30
