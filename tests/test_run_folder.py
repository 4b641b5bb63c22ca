"""The run folder as the record: result.json, collect, store errors, --force staging, a full
disk, run specs as JSON (plan --json / run-one), and the interrupted-run message."""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import signal
import sqlite3

import pytest
import test_engine_toys as toys
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.collect import collect
from mrseg_bench.executors.grid import run_grid
from mrseg_bench.interrupts import RunInterrupted, StopFlag
from mrseg_bench.run.overrides import UsageError
from mrseg_bench.run.plan import plan_grid
from mrseg_bench.run.spec import spec_from_json, spec_to_json
from mrseg_bench.run.worker import execute_spec
from mrseg_bench.run_folder import read_result, staging_dir
from mrseg_bench.store import ResultsStore

PRESET = toys.preset_toml(num_cases=16, epochs=2, n_samples=3, profile_steps=1, latency_repeats=2,
                          qualitative_cases=0)


def _tables(store_path):
    with ResultsStore(store_path) as st:
        runs = st.runs().drop(columns=[]).sort_values("run_id").reset_index(drop=True)
        m = st.metrics().sort_values(["run_id", "case_id", "metric", "rater"]).reset_index(drop=True)
        p = st.profile().sort_values(["run_id", "name"]).reset_index(drop=True)
    return runs, m, p


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_result_json_and_collect_restores_an_identical_store_and_report(toy_preset, tmp_path, monkeypatch):
    from mrseg_bench.reports.report import write_report

    out, store = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
    res = run_grid(plan_grid("toy,toy.flat", "toyset", [0], toy_preset), out, store)
    monkeypatch.setenv("MRSEG_TOY_FAIL", "1")
    res += run_grid(plan_grid("toy", "toyset", [1], toy_preset), out, store)
    assert [o.status for o in res] == ["done", "done", "failed"]
    done = read_result(res[0].run_dir / "result.json")
    assert done["schema"] == 1 and done["run"]["status"] == "done" and done["run"]["run_id"] == res[0].run_id
    assert done["run"]["config_hash"] == res[0].spec.config_hash and done["run"]["config_json"] == res[0].spec.config
    assert done["run"]["env_json"]["torch"] and done["run"]["finished_at"] and done["run"]["wall_s"] > 0
    assert {"ged", "per_rater_dice"} <= {m["metric"] for m in done["metrics"]}
    assert "params" in {p["name"] for p in done["profile"]}
    failed = read_result(res[2].run_dir / "result.json")
    assert failed["run"]["status"] == "failed" and "toy failure injected" in failed["run"]["error"]
    assert failed["metrics"] == [] and (res[2].run_dir / "error.txt").is_file()

    before = _tables(store)
    write_report(store, tmp_path / "rep1")
    store.unlink()
    for side in ("-wal", "-shm"):
        (out / f"results.sqlite{side}").unlink(missing_ok=True)
    rep = collect(out, store)
    assert (rep.done, rep.failed, rep.errors) == (2, 1, [])
    for a, b in zip(before, _tables(store), strict=True):
        assert a.equals(b)
    assert collect(out, store).runs == 3  # idempotent
    for a, b in zip(before, _tables(store), strict=True):
        assert a.equals(b)
    write_report(store, tmp_path / "rep2")
    texts = {k: v for k, v in _digest(tmp_path / "rep1").items() if k.endswith((".csv", ".md", ".tex"))}
    assert texts and texts == {k: v for k, v in _digest(tmp_path / "rep2").items() if k in texts}


def test_collect_reports_an_unreadable_result_and_goes_on(tmp_path):
    bad = tmp_path / "runs" / "ds" / "m" / "x_seed0_abc"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text('{"schema": 1, "run": {"run_id": "r"}}')
    (tmp_path / "runs" / "ds" / "m" / "x_seed0_abc.force").mkdir()
    (tmp_path / "runs" / "ds" / "m" / "x_seed0_abc.force" / "result.json").write_text("{}")  # staging: not read
    rep = collect(tmp_path / "runs", tmp_path / "s.sqlite")
    assert rep.runs == 0 and len(rep.errors) == 1 and "x_seed0_abc/result.json" in rep.errors[0]
    res = CliRunner().invoke(app, ["collect", "--out", str(tmp_path / "runs"), "--store", str(tmp_path / "s.sqlite")])
    assert res.exit_code == 1 and "result.json: not a result file: needs" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["collect", "--out", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such folder" in res.output


@pytest.mark.slow
def test_a_store_error_never_fails_a_finished_run(toy_preset, tmp_path, monkeypatch):
    out, store = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
    plan = plan_grid("toy,toy.flat", "toyset", [0], toy_preset)

    def broken(self, *a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ResultsStore, "write_run", broken)
    res = run_grid(plan, out, store)
    assert [o.status for o in res] == ["done", "done"]  # both ran: the grid went on
    assert all("disk I/O error" in o.store_error for o in res)
    assert all(read_result(o.run_dir / "result.json")["run"]["status"] == "done" for o in res)
    monkeypatch.undo()
    toys.register()
    with ResultsStore(store) as st:
        assert st.runs().empty
    assert collect(out, store).done == 2
    with ResultsStore(store) as st:
        assert sorted(st.runs("done")["run_id"]) == sorted(o.run_id for o in res)
    # a rerun skips them (done in their folders) and indexes what the store lacks
    again = run_grid(plan, out, store)
    assert [o.status for o in again] == ["skipped", "skipped"]


@pytest.mark.slow
def test_interrupted_or_failed_force_leaves_the_done_run_intact(toy_preset, tmp_path, monkeypatch):
    out, store = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
    plan = plan_grid("toy", "toyset", [0], toy_preset)
    first = run_grid(plan, out, store)[0]
    run_dir = first.run_dir
    intact = _digest(run_dir)
    spec_json = spec_to_json(plan.specs[0])
    flag = StopFlag()
    flag.signum = signal.SIGTERM  # a signal already arrived: stop after the first step
    with pytest.raises(RunInterrupted) as info:
        execute_spec(spec_json, out, force=True, stop=flag)
    assert info.value.exit_code == 143 and info.value.checkpoint.is_file()
    assert staging_dir(run_dir) in info.value.checkpoint.parents
    assert "run the same command to resume it" in info.value.message()
    assert _digest(run_dir) == intact
    monkeypatch.setenv("MRSEG_TOY_FAIL", "1")
    failed = execute_spec(spec_json, out, force=True)  # resumes the staging run, which now fails
    assert failed.status == "failed" and _digest(run_dir) == intact
    monkeypatch.delenv("MRSEG_TOY_FAIL")
    forced = run_grid(plan, out, store, force=True)[0]
    assert forced.status == "done" and forced.run_id != first.run_id and forced.run_dir == run_dir
    assert read_result(run_dir / "result.json")["run"]["run_id"] == forced.run_id
    assert not staging_dir(run_dir).exists() and [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]
    with ResultsStore(store) as st:
        assert st.runs("done")["run_id"].tolist() == [forced.run_id]
    log = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("stage1", 0), ("stage1", 1), ("stage2", 0)]


@pytest.mark.slow
def test_a_full_disk_fails_the_run_cleanly_and_the_grid_goes_on(toy_preset, tmp_path, monkeypatch):
    import torch

    rf = importlib.import_module("mrseg_bench.run_folder")
    out, store = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
    real_save, real_fsync = torch.save, rf._fsync

    def in_toy(path) -> bool:
        return "/toy/" in str(path)

    def save(obj, f, *a, **k):
        if in_toy(f):
            with open(f, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    def fsync(fd):
        if in_toy(__import__("os").readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(rf, "_fsync", fsync)
    res = run_grid(plan_grid("toy,toy.flat", "toyset", [0], toy_preset), out, store)
    assert [o.status for o in res] == ["failed", "done"]
    assert "No space left on device" in res[0].error
    with ResultsStore(store) as st:
        assert st.runs("failed")["method"].tolist() == ["toy"]
        assert "No space left" in st.runs("failed")["error"].iloc[0]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not list(out.rglob("*.claim"))


def test_spec_json_round_trip_and_tampering(toy_preset):
    plan = plan_grid("toy,toy.flat", "toyset", [0, 3], toy_preset, ["run.batch_size=2", "width=6"])
    for spec in plan.specs:
        data = json.loads(json.dumps(spec_to_json(spec)))
        back = spec_from_json(data)
        assert (back.method, back.dataset, back.seed, back.preset) == (spec.method, spec.dataset, spec.seed, spec.preset)
        assert back.method_obj.cfg == spec.method_obj.cfg and back.run_cfg == spec.run_cfg
        assert back.config == spec.config and back.config_hash == spec.config_hash
        assert back.device == spec.device and back.precision == spec.precision
        assert spec_to_json(back) == data
    data = spec_to_json(plan.specs[0])
    for key, value, match in [("method_config", {**data["method_config"], "width": 9}, "differs from the one in its config"),
                              ("config", {**data["config"], "seed": 9}, "config_hash does not match"),
                              ("run_dir", "../../etc", "run_dir"), ("schema", 2, "schema 1"),
                              ("dataset", "../../escape", "not a valid name"),  # the preset is no folder name (experiment slug)
                              ("seed", "0", "'seed' is missing or not a int"),
                              ("run_config", {**data["run_config"], "batch_size": 0}, "batch_size=0")]:
        with pytest.raises(UsageError, match=match):
            spec_from_json({**data, key: value})


@pytest.mark.slow
def test_plan_json_writes_nothing_and_run_one_runs_a_spec(toy_preset, tmp_path):
    runner = CliRunner()
    out = tmp_path / "runs"
    res = runner.invoke(app, ["plan", "--methods", "toy,toy.flat", "--dataset", "toyset", "--preset", toy_preset,
                              "--seeds", "0,1", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    specs = json.loads(res.stdout)
    assert [(s["method"], s["seed"]) for s in specs] == [("toy", 0), ("toy", 1), ("toy.flat", 0), ("toy.flat", 1)]
    assert all(len(s["config_hash"]) == 64 and s["run_dir"].startswith(f"toyset/{s['method']}/") for s in specs)
    assert not out.exists()
    res = runner.invoke(app, ["plan", "--methods", "nope", "--dataset", "toyset", "--json"])
    assert res.exit_code == 2 and "unknown method 'nope'" in res.output
    spec_file = tmp_path / "specs.json"
    spec_file.write_text(json.dumps(specs))
    res = runner.invoke(app, ["run-one", "--spec", str(spec_file), "--out", str(out)])
    assert res.exit_code == 2 and "holds 4 specs; pick one with --index 0..3" in " ".join(res.output.split())
    res = runner.invoke(app, ["run-one", "--spec", "-", "--out", str(out), "--quiet"], input=json.dumps(specs[2]))
    assert res.exit_code == 0, res.output
    run_dir = out / specs[2]["run_dir"]
    assert read_result(run_dir / "result.json")["run"]["status"] == "done"
    assert not (out / "results.sqlite").exists()  # a worker never writes the store
    res = runner.invoke(app, ["run-one", "--spec", str(spec_file), "--index", "2", "--out", str(out),
                              "--store", str(tmp_path / "s.sqlite")])
    assert res.exit_code == 0 and "skip toy.flat toyset seed 0: done" in res.output
    with ResultsStore(tmp_path / "s.sqlite") as st:
        assert st.runs()["method"].tolist() == ["toy.flat"]
    res = runner.invoke(app, ["run-one", "--spec", "-", "--out", str(out)], input="{not json")
    assert res.exit_code == 2 and "--spec stdin: cannot be read as JSON" in res.output


@pytest.mark.slow
def test_sigterm_prints_one_line_and_the_same_command_resumes(toy_preset, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    argv = ["run", "--methods", "toy", "--dataset", "toyset", "--preset", toy_preset, "--out", str(out),
            "--quiet", "--no-report"]
    monkeypatch.setenv("MRSEG_TOY_SIGNAL_AFTER", "5")  # epoch 1 step 0 of stage 1
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine: no busy note
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 143, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: toy toyset seed 0; its last checkpoint is ")
    assert "stage1_last.pt; run the same command to resume it" in lines[0]
    assert not list(out.rglob("*.claim"))  # released: the same command resumes at once
    monkeypatch.delenv("MRSEG_TOY_SIGNAL_AFTER")
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    run_dir = next(out.glob("toyset/toy/*_seed0_*"))
    log = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("stage1", 0), ("stage1", 1), ("stage2", 0)]


def test_an_unwritable_claim_fails_that_run_only(toy_preset, tmp_path, monkeypatch):
    worker = importlib.import_module("mrseg_bench.run.worker")

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(worker, "try_claim", no_space)
    out, store = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
    res = run_grid(plan_grid("toy,toy.flat", "toyset", [0], toy_preset), out, store)
    assert [o.status for o in res] == ["failed", "failed"] and "No space left" in res[1].error
    with ResultsStore(store) as st:
        assert sorted(st.runs("failed")["method"]) == ["toy", "toy.flat"]
