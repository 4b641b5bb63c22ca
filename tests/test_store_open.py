"""Opening a results store: refuse foreign/empty files without touching them, read-only stores and
folders, schema migration, and the CLI's one-line errors for unusable --out/--store paths."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
import test_engine_toys as toys
from typer.testing import CliRunner

from mrseg_bench import store as store_mod
from mrseg_bench.cli import app
from mrseg_bench.store import ADDED_RUN_COLUMNS, RUN_COLUMNS, ResultsStore

OLD_RUN_COLUMNS = [c for c in RUN_COLUMNS if c not in ADDED_RUN_COLUMNS]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def _old_store(path: Path) -> None:
    """A store written by the previous schema (no run identity columns), in rollback-journal mode."""
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE runs ({', '.join(f'{c} {RUN_COLUMNS[c]}' for c in OLD_RUN_COLUMNS)})")
    con.execute("CREATE TABLE metrics (run_id TEXT, case_id TEXT, metric TEXT, rater INTEGER, value REAL)")
    con.execute("CREATE TABLE profile (run_id TEXT, name TEXT, value REAL, unit TEXT)")
    con.execute("INSERT INTO runs (run_id, method, dataset, seed, preset, config_json, config_hash, status, "
                "finished_at) VALUES ('r0', 'm', 'd', 0, 'smoke', '{\"seed\": 0}', 'h0', 'done', 'T')")
    con.execute("INSERT INTO metrics VALUES ('r0', 'c0', 'ged', NULL, 0.5)")
    con.commit()
    con.close()


@pytest.mark.parametrize("kind", ["empty", "foreign", "text"])
@pytest.mark.parametrize("readonly", [False, True])
def test_refused_files_are_left_untouched(tmp_path, kind, readonly):
    f = tmp_path / "store.sqlite"
    if kind == "empty":
        f.write_bytes(b"")
    elif kind == "text":
        f.write_text("hello")
    else:
        con = sqlite3.connect(f)
        con.execute("CREATE TABLE foo (x INT)")
        con.execute("INSERT INTO foo VALUES (1)")
        con.commit()
        con.close()
    before, names = _digest(f), _siblings(f)
    match = {"empty": "empty file", "foreign": "not a results store.*missing table", "text": "not an SQLite file"}
    with pytest.raises(ValueError, match=f"store.sqlite: .*{match[kind]}"):
        ResultsStore(f, readonly=readonly)
    assert _digest(f) == before and _siblings(f) == names  # no schema, no WAL switch, no -wal/-shm files
    if kind == "foreign":
        assert sqlite3.connect(f).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_old_store_is_migrated_when_opened_to_write_only(tmp_path):
    f = tmp_path / "old.sqlite"
    _old_store(f)
    before = _digest(f)
    with ResultsStore(f, readonly=True) as st:  # reading never changes the file
        runs = st.runs()
        assert list(runs.columns) == list(RUN_COLUMNS) and runs["experiment"].isna().all()
        sel = st.select_runs()
        assert sel["experiment"].tolist() == ["smoke"] and sel["overrides_json"].tolist() == ["{}"]
        with pytest.raises(ValueError, match="read-only"):
            st.write_run({"run_id": "x", "config_hash": "h", "status": "done"})
    assert _digest(f) == before
    with ResultsStore(f) as st:  # opened to write: the new columns are added, old rows kept
        st.write_run({"run_id": "r1", "config_hash": "h1", "status": "done", "experiment": "e1",
                      "overrides_json": {"beta": 1.0}, "data_fingerprint": "sha256:0", "code_json": {"a": 1}})
    cols = [r[1] for r in sqlite3.connect(f).execute("PRAGMA table_info(runs)")]
    assert cols == OLD_RUN_COLUMNS + list(ADDED_RUN_COLUMNS)
    with ResultsStore(f, readonly=True) as st:
        assert st.experiments() == {"e1": 1, "smoke": 1}
        assert st.metrics(["r0"])["value"].tolist() == [0.5]


def test_read_only_store_opens_read_only(tmp_path, monkeypatch):
    f = tmp_path / "s.sqlite"
    with ResultsStore(f) as st:
        st.write_run({"run_id": "r1", "config_hash": "h1", "status": "done", "config_json": {"seed": 0}})
    before = _digest(f)
    # a read-only mount: neither the file nor its folder is writable
    monkeypatch.setattr(store_mod, "_writable", lambda path: False)
    with ResultsStore(f) as st:
        assert st.readonly and st.select_runs()["run_id"].tolist() == ["r1"]
        with pytest.raises(ValueError, match="s.sqlite: opened read-only"):
            st.write_run({"run_id": "r2", "config_hash": "h2", "status": "done"})
    assert _digest(f) == before and _siblings(f) == ["s.sqlite"]
    with pytest.raises(ValueError, match="no such file"):
        ResultsStore(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_store_folder_problems_are_one_line_errors(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"afile is a file, not a folder"):
        ResultsStore(tmp_path / "afile" / "sub" / "r.sqlite")


def test_concurrent_creation_never_sees_a_half_made_store(tmp_path):
    f = tmp_path / "r.sqlite"
    a, b = ResultsStore(f), ResultsStore(f)  # the second opens what the first created
    a.write_run({"run_id": "r1", "config_hash": "h1", "status": "done"})
    assert b.runs()["run_id"].tolist() == ["r1"]
    a.close()
    b.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")] == []


# -- CLI ------------------------------------------------------------------------------------------
PRESET = toys.preset_toml(description=None, num_cases=12, profile=False)


@pytest.fixture
def toy_env(tmp_path):
    (tmp_path / "toy.toml").write_text(PRESET)
    with toys.registered():
        yield tmp_path


def _one_line_exit_2(res, *needles):
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _run_args(env: Path, *extra: str) -> list[str]:
    return ["run", "--methods", "toy", "--dataset", "toyset", "--preset", str(env / "toy.toml"), "--quiet",
            "--no-report", *extra]


def test_run_out_is_a_file(toy_env):
    out = toy_env / "out.txt"
    out.write_text("x")
    res = CliRunner().invoke(app, _run_args(toy_env, "--out", str(out)))
    _one_line_exit_2(res, str(out), "is a file, not a folder")
    res = CliRunner().invoke(app, _run_args(toy_env, "--out", str(out / "deeper")))
    _one_line_exit_2(res, str(out / "deeper"), "is a file, not a folder")
    assert out.read_text() == "x"


def test_run_out_unwritable_or_read_only(toy_env, monkeypatch):
    import os

    out = toy_env / "ro"
    out.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == out and mode & os.W_OK
                        else real(p, mode, *a, **k))
    res = CliRunner().invoke(app, _run_args(toy_env, "--out", str(out)))
    _one_line_exit_2(res, f"--out {out}:")
    monkeypatch.setattr(os, "access", real)
    # a read-only mount os.access does not reveal: the write probe fails
    import tempfile

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    res = CliRunner().invoke(app, _run_args(toy_env, "--out", str(out)))
    _one_line_exit_2(res, f"--out {out}: not writable (Read-only file system)")
    assert list(out.iterdir()) == []


def test_run_refuses_foreign_and_empty_store_untouched(toy_env):
    for name in ("empty.sqlite", "foreign.sqlite"):
        f = toy_env / name
        if name == "empty.sqlite":
            f.write_bytes(b"")
        else:
            con = sqlite3.connect(f)
            con.execute("CREATE TABLE t (x)")
            con.commit()
            con.close()
        before = _digest(f)
        res = CliRunner().invoke(app, _run_args(toy_env, "--out", str(toy_env / "out"), "--store", str(f)))
        _one_line_exit_2(res, name)
        assert _digest(f) == before and not (toy_env / "out").exists()
        assert not Path(str(f) + "-wal").exists()
        res = CliRunner().invoke(app, ["report", "--store", str(f), "--out", str(toy_env / "rep")])
        _one_line_exit_2(res, name)
        assert _digest(f) == before


def test_report_on_read_only_store_and_read_only_out(toy_env, monkeypatch):
    import os

    f = toy_env / "s.sqlite"
    with ResultsStore(f) as st:
        st.write_run({"run_id": "r1", "method": "m", "dataset": "d", "seed": 0, "preset": "p",
                      "config_hash": "h1", "status": "done", "config_json": {"seed": 0}})
    before = _digest(f)
    monkeypatch.setattr(store_mod, "_writable", lambda path: False)  # the store lies on a read-only mount
    res = CliRunner().invoke(app, ["report", "--store", str(f), "--out", str(toy_env / "rep")])
    assert res.exit_code == 0, res.output
    assert "not an SQLite results store" not in res.output and _digest(f) == before
    rep = toy_env / "rep_ro"
    rep.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == rep and mode & os.W_OK
                        else real(p, mode, *a, **k))
    res = CliRunner().invoke(app, ["report", "--store", str(f), "--out", str(rep)])
    _one_line_exit_2(res, f"--out {rep}:")
