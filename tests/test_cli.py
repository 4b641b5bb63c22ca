"""CLI: bad input exits 2 with one line and writes nothing; a third-party plugin (entry point)
runs through ``mrseg-bench run`` in two concurrent processes sharing a store; a SIGKILLed run
resumes and ends identical to a straight run; report/check delegate to the reports package."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import test_engine_toys as toys
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.store import ResultsStore

TESTS = Path(__file__).resolve().parent
PRESET = toys.preset_toml(num_cases=16, epochs=2, n_samples=3, profile_steps=1, latency_repeats=2,
                          checkpoint_interval_s=0)


@pytest.fixture
def toy_env(tmp_path):
    (tmp_path / "toy.toml").write_text(PRESET)
    with toys.registered():
        yield tmp_path


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*"))


@pytest.mark.parametrize("args, needle", [
    (["--methods", "nope"], "unknown method 'nope'; known:"),
    (["--methods", "toy", "--dataset", "nodata"], "unknown dataset 'nodata'; known:"),
    (["--methods", "toy", "--set", "width=wide"], "width='wide'"),
    (["--methods", "toy", "--set", "colour=1"], "no selected method has this key; valid:"),
    (["--methods", "toy", "--set", "run.speed=1"], "unknown key(s) speed; valid:"),
    (["--methods", "toy", "--data-root", "/no/such/dir"], "--data-root /no/such/dir: does not exist"),
    (["--methods", "toy", "--preset", "huge"], "unknown preset 'huge'; valid: ci, default, paper, smoke"),
    (["--methods", "toy", "--seeds", "a,b"], "--seeds 'a,b': expected comma-separated integers"),
    (["--methods", "toy", "--device", "tpu"], "choose auto|cpu|cuda"),
    (["--methods", "toy", "--precision", "fp8"], "precision='fp8' is not one of ['auto', 'bf16', 'fp32']"),
    (["--methods", "toy", "--set", "run.protocol=mine"], "run.protocol='mine' is not valid; choose default, dpersona"),
    (["--methods", "toy", "--set", "run.convention=mine"], "convention must be one of ['standard', 'dpersona', 'phiseg', 'ccdm', 'flowssn']"),
    (["--methods", "toy", "--set", "run.metrics=ged,nope"], "unknown metric 'nope'; known:"),
])
def test_bad_input_exits_2_one_line_writes_nothing(toy_env, args, needle):
    out = toy_env / "out"
    argv = ["run", *args, "--out", str(out)]
    if "--preset" not in args:
        argv += ["--preset", str(toy_env / "toy.toml")]
    if "--dataset" not in args:
        argv += ["--dataset", "toyset"]
    before = _files(toy_env)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output
    assert not out.exists() and _files(toy_env) == before


@pytest.mark.slow
def test_run_end_to_end_table_report_skip_force_and_failure(toy_env, monkeypatch):
    out = toy_env / "runs"
    argv = ["run", "--methods", "toy,toy.flat", "--dataset", "toyset", "--preset", str(toy_env / "toy.toml"),
            "--out", str(out)]
    runner = CliRunner()
    res = runner.invoke(app, argv, env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "done toy toyset seed 0" in res.output and "done toy.flat toyset seed 0" in res.output
    table = [ln for ln in res.output.splitlines() if "toy.flat" in ln and "│" in ln]
    assert table and "—" in table[0]  # toy.flat has no diverse output: GED is "—"
    assert (out / "report").is_dir() and any((out / "report").iterdir())
    with ResultsStore(out / "results.sqlite") as st:
        first = sorted(st.runs()["run_id"])
        assert len(first) == 2 and not st.metrics().empty and not st.profile().empty
    res = runner.invoke(app, [*argv, "--no-report"])
    assert res.exit_code == 0 and res.output.count("skip ") == 2
    res = runner.invoke(app, [*argv, "--no-report", "--force", "--quiet", "--methods", "toy"])
    assert res.exit_code == 0, res.output
    with ResultsStore(out / "results.sqlite") as st:
        again = sorted(st.runs()["run_id"])
        assert len(again) == 2 and len(set(again) & set(first)) == 1  # toy replaced, toy.flat kept
    monkeypatch.setenv("MRSEG_TOY_FAIL", "1")
    res = runner.invoke(app, [*argv, "--no-report", "--quiet", "--seeds", "1"])
    assert res.exit_code == 1
    assert "failed: toy toyset seed 1: RuntimeError: toy failure injected" in " ".join(res.output.split())
    with ResultsStore(out / "results.sqlite") as st:
        assert st.runs("failed")["method"].tolist() == ["toy"] and len(st.runs("done")) == 3


def test_a_store_that_is_not_a_store_exits_2(toy_env):
    junk = toy_env / "junk.sqlite"
    junk.write_text("not a database " * 50)
    res = CliRunner().invoke(app, ["run", "--methods", "toy", "--dataset", "toyset", "--preset",
                                   str(toy_env / "toy.toml"), "--out", str(toy_env / "out"), "--store", str(junk)])
    assert res.exit_code == 2 and "junk.sqlite" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (toy_env / "out").exists() and junk.read_text().startswith("not a database")


def test_missing_data_root_of_a_real_dataset_exits_2(toy_env):
    # a dataset whose factory needs files: a missing root is a usage error too
    from mrseg_bench.registry import DATASETS

    def needs_root(root=None):
        raise FileNotFoundError("dataset 'rooted': --data-root is required (folder with data.h5)")

    DATASETS.add("rooted", needs_root)
    try:
        res = CliRunner().invoke(app, ["run", "--methods", "toy", "--dataset", "rooted",
                                       "--out", str(toy_env / "out")])
    finally:
        DATASETS.remove("rooted")
    assert res.exit_code == 2 and "--data-root is required" in res.output
    assert not (toy_env / "out").exists()


def test_help_texts():
    runner = CliRunner()
    for cmd in ("run", "list", "profile", "report", "check", "plan", "run-one", "collect"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, cmd


def test_list_shows_methods_datasets_metrics_presets(toy_env):
    res = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for needle in ("toy.flat", "diverse, personalized", "Toy et al. 2026", "toyset", "smoke", "paper", "ged"):
        assert needle in res.output, needle


def test_profile_command_prints_table(toy_env):
    res = CliRunner().invoke(app, ["profile", "--methods", "toy", "--dataset", "toyset", "--preset",
                                   str(toy_env / "toy.toml")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "toy" in res.output and "flops_per_image" in res.output


def test_report_and_check_delegate(toy_env, monkeypatch):
    calls = []
    fake_report = types.ModuleType("mrseg_bench.reports.report")
    fake_report.write_report = lambda store, out, reference=None, experiment=None, log=None: (
        calls.append(("report", store, out, reference, experiment)) or [out / "t.md"])
    fake_check = types.ModuleType("mrseg_bench.reports.check")
    fake_check.run_check = lambda store, base, tolerance=None, update=False: (
        calls.append(("check", store, base, tolerance, update)) or (tolerance is None, "checked"))
    monkeypatch.setitem(sys.modules, "mrseg_bench.reports.report", fake_report)
    monkeypatch.setitem(sys.modules, "mrseg_bench.reports.check", fake_check)
    store = toy_env / "s.sqlite"
    runner = CliRunner()
    assert runner.invoke(app, ["report", "--store", str(store)]).exit_code == 2  # no such store
    ResultsStore(store).close()
    res = runner.invoke(app, ["report", "--store", str(store), "--out", str(toy_env / "rep")])
    assert res.exit_code == 0 and "t.md" in res.output
    assert calls[-1] == ("report", store, toy_env / "rep", None, None)
    res = runner.invoke(app, ["report", "--store", str(store), "--out", str(toy_env / "rep"),
                              "--reference", "probunet", "--experiment", "smoke"])
    assert res.exit_code == 0 and calls[-1] == ("report", store, toy_env / "rep", "probunet", "smoke")
    fake_report.write_report = lambda store, out, **kw: 1 / 0  # any report failure: exit 1
    res = runner.invoke(app, ["report", "--store", str(store), "--out", str(toy_env / "rep")])
    assert res.exit_code == 1 and "report failed" in res.output
    res = runner.invoke(app, ["check", "--store", str(store), "--baseline", "b.json"])
    assert res.exit_code == 0 and "checked" in res.output
    res = runner.invoke(app, ["check", "--store", str(store), "--baseline", "b.json", "--tolerance", "0.1",
                              "--update"])
    assert res.exit_code == 1 and calls[-1] == ("check", store, Path("b.json"), 0.1, True)


# -- subprocess tests: an entry-point plugin, concurrency, SIGKILL + resume -------------------
def _plugin_site(tmp: Path) -> Path:
    site = tmp / "site"
    dist = site / "mrseg_toy_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mrseg-toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mrseg_bench.plugins]\ntoys = mrseg_toy_plugin:setup\n")
    (site / "mrseg_toy_plugin.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n\n\ndef setup():\n"
        "    import test_engine_toys\n    test_engine_toys.register()\n")
    (tmp / "toy.toml").write_text(PRESET)
    return site


def _cli(tmp: Path, site: Path, *args: str, env_extra: dict | None = None, quiet: bool = True) -> subprocess.Popen:
    # this checkout first (not whatever mrseg_bench the interpreter has installed; the run identity
    # includes the code), then the plugin
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(site)]), "OMP_NUM_THREADS": "1",
           **(env_extra or {})}
    env.pop("MRSEG_TOY_FAIL", None)
    cmd = [sys.executable, "-m", "mrseg_bench.cli", "run", "--methods", "toy", "--dataset", "toyset",
           "--preset", str(tmp / "toy.toml"), *(["--quiet"] if quiet else []), "--no-report", *args]
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_plugin_sigkill_resume_and_two_processes_sharing_a_store(tmp_path, monkeypatch):
    """A third-party method (entry point) runs through ``mrseg-bench run``; a run SIGKILLed
    mid-epoch leaves nothing in the store and, rerun, resumes from its checkpoint to the same
    metrics and weights as a straight run, while a second process writes the same store."""
    from mrseg_bench.executors.grid import run_grid
    from mrseg_bench.run.plan import plan_grid

    site = _plugin_site(tmp_path)
    marker = tmp_path / "hanging"
    # 16 cases -> 10 train (3 batches) + 1 val batch per epoch: call 7 is inside epoch 1 of stage1
    victim = _cli(tmp_path, site, "--out", str(tmp_path / "b"), "--store", str(tmp_path / "b.sqlite"),
                  env_extra={"MRSEG_TOY_HANG_AFTER": "7", "MRSEG_TOY_MARKER": str(marker)})
    # meanwhile, the straight run of the same config in this process, on the subprocesses' one
    # thread (run.num_threads=0 takes OMP_NUM_THREADS): another float summation order would differ
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    toys.register()
    try:
        plan = plan_grid("toy", "toyset", [0], str(tmp_path / "toy.toml"))
        straight = run_grid(plan, tmp_path / "a", tmp_path / "a.sqlite")[0]
    finally:
        toys.unregister()
    assert straight.status == "done", straight.error
    deadline = time.time() + 180
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), victim.communicate()[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    with ResultsStore(tmp_path / "b.sqlite") as st:
        assert st.runs().empty  # the killed run left nothing in the store
    assert len(list((tmp_path / "b").rglob("stage1_last.pt"))) == 1  # epoch 0 was saved
    assert not list((tmp_path / "b").rglob("stage2_last.pt"))
    # the killed worker's claim stays; say it ran on another machine (its pid cannot be checked)
    claim = next((tmp_path / "b").rglob("*.claim"))
    owner = json.loads(claim.read_text())
    claim.write_text(json.dumps({**owner, "host": "elsewhere", "boot_id": "other"}))
    busy = _cli(tmp_path, site, "--out", str(tmp_path / "b"), "--store", str(tmp_path / "b.sqlite"), quiet=False)
    text = busy.communicate(timeout=240)[0]
    assert busy.returncode == 0 and "skip toy toyset seed 0: claimed by elsewhere pid" in " ".join(text.split()), text
    old = time.time() - 5
    os.utime(claim, (old, old))  # no heartbeat for 5 s: stale under a 2 s timeout
    stale = ["--set", "run.claim_stale_s=2", "--set", "run.claim_heartbeat_s=1"]
    # resume seed 0 while another process writes seed 1 to the same store
    procs = [_cli(tmp_path, site, "--seeds", seed, "--out", str(tmp_path / "b"), "--store", str(tmp_path / "b.sqlite"),
                  *stale, quiet=False) for seed in ("0", "1")]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "took over toy toyset seed 0 from a stale claim (claimed by elsewhere" in " ".join(outs[0].split())
    log = [json.loads(x) for x in next((tmp_path / "b").rglob("toy-*_seed0_*/train_log.jsonl")).read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("stage1", 0), ("stage1", 1), ("stage2", 0)]  # resumed
    with ResultsStore(tmp_path / "a.sqlite") as a, ResultsStore(tmp_path / "b.sqlite") as b:
        rb = b.runs()
        assert sorted(rb["seed"]) == [0, 1] and set(rb["status"]) == {"done"} and set(rb["method"]) == {"toy"}
        resumed_id = rb[rb["seed"] == 0]["run_id"].iloc[0]
        assert rb[rb["seed"] == 0]["config_hash"].iloc[0] == plan.specs[0].config_hash
        cols = ["case_id", "metric", "rater", "value"]
        ma = a.metrics().sort_values(cols[:3]).reset_index(drop=True)[cols]
        mb = b.metrics([resumed_id]).sort_values(cols[:3]).reset_index(drop=True)[cols]
        assert len(ma) > 0 and ma.equals(mb)
        counts = b.metrics().groupby("run_id").size()
        assert len(counts) == 2 and counts.nunique() == 1  # no rows lost by either process
        # 12 profile rows for two-stage toy (per-stage train rates, per-phase memory; issue 11.6) + 3 wall times
        # + the run's own training rate from its log
        assert b.profile().groupby("run_id").size().tolist() == [16, 16]  # incl. the run's own train rate
    import torch

    wa = torch.load(next((tmp_path / "a").rglob("stage2_best.pt")), weights_only=True)["model"]
    wb = torch.load(next((tmp_path / "b").rglob("toy-*_seed0_*/checkpoints/stage2_best.pt")), weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_two_run_processes_on_one_out_train_each_run_exactly_once(tmp_path):
    """Started at once on the same --out and store, two identical commands share the grid through
    claims: every run is trained by one of them, none twice, and both exit 0."""
    site = _plugin_site(tmp_path)
    args = ["--methods", "toy,toy.flat", "--seeds", "0,1", "--out", str(tmp_path / "runs")]
    procs = [_cli(tmp_path, site, *args, quiet=False) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    done = [ln.split(" -> ")[0] for o in outs for ln in o.splitlines() if ln.startswith("done ")]
    assert sorted(done) == sorted(f"done {m} toyset seed {s}" for m in ("toy", "toy.flat") for s in (0, 1)), outs
    for log in (tmp_path / "runs").rglob("train_log.jsonl"):
        keys = [(r["stage"], r["epoch"]) for r in map(json.loads, log.read_text().splitlines())]
        assert len(keys) == len(set(keys)), log  # no epoch trained (logged) twice
    with ResultsStore(tmp_path / "runs" / "results.sqlite") as st:
        runs = st.runs()
        assert len(runs) == 4 and set(runs["status"]) == {"done"} and runs["config_hash"].nunique() == 4
    leftovers = [p for p in (tmp_path / "runs").rglob("*") if p.name.endswith((".tmp", ".claim", ".force"))]
    assert not leftovers
