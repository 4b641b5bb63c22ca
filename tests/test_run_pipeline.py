"""The run pipeline end to end: bugs that hid in the old runner/spec/worker tangle (each test
failed on the code before the ``run`` package), a method added as a plugin, ``--jobs``."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import test_engine_toys as toys
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.registry import METHODS
from mrseg_bench.store import ResultsStore

PRESET = toys.preset_toml(num_cases=16, n_samples=2, profile_steps=1, latency_repeats=2)
# the smoke preset's sizes, plus the one section the plugin method needs
TINY_PRESET = """description = "tiny plugin at smoke sizes"
[run]
num_threads = 1
batch_size = 8
n_samples = 2
val_n_samples = 2
profile_warmup = 1
profile_steps = 1
latency_repeats = 2
qualitative_cases = 2
device = "cpu"
[dataset.synthetic]
num_cases = 16
image_size = 32
[method.tiny]
epochs = 1
width = 3
"""


@pytest.fixture
def tiny():
    """The plugin method of ``tests/plugin_tiny.py``, registered for the test."""
    mod = importlib.import_module("plugin_tiny")
    if mod.NAME not in METHODS:
        METHODS.add(mod.NAME, mod.tiny)
    yield mod
    METHODS.remove(mod.NAME)


def test_run_with_experiment_writes_its_report(toy_preset, tmp_path):
    """``run --experiment X`` reports experiment X (it looked for the preset's, and failed)."""
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", "--methods", "toy", "--dataset", "toyset", "--preset", toy_preset,
                                   "--experiment", "myexp", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "report failed" not in res.output
    assert list((out / "report").glob("*myexp*")), sorted(p.name for p in (out / "report").iterdir())


def _write_folder_run(store: ResultsStore, run_id: str, fingerprint: str, value: float) -> None:
    config = {"method": "fusion.soft", "dataset": "folder", "seed": 0, "experiment": "mine",
              "data_fingerprint": fingerprint, "run": {}}
    run = {"run_id": run_id, "method": "fusion.soft", "dataset": "folder", "seed": 0, "preset": "default",
           "experiment": "mine", "overrides_json": "{}", "protocol": "default", "convention": "standard",
           "config_json": json.dumps(config), "config_hash": f"h-{run_id}", "status": "done",
           "capabilities": "consensus", "n_samples": 1, "data_fingerprint": fingerprint,
           "started_at": f"2026-01-01T0{value:.0f}:00:00Z", "finished_at": f"2026-01-01T0{value:.0f}:00:01Z"}
    rows = [{"case_id": f"c{i}", "metric": "consensus_dice", "rater": None, "value": value / 10} for i in range(3)]
    store.write_run(run, rows, [])


def test_two_folder_datasets_in_one_experiment_stay_two(tmp_path):
    """Two user folders (same name ``folder``, other data) in one experiment: both runs are
    reported, each under its own data label (the latest used to replace the other)."""
    from mrseg_bench.reports.loader import load_results
    from mrseg_bench.reports.report import write_report

    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as st:
        _write_folder_run(st, "a", "sha256:" + "a" * 64, 3)
        _write_folder_run(st, "b", "sha256:" + "b" * 64, 6)
    runs = load_results(path, experiment="mine").runs
    assert sorted(runs["run_id"]) == ["a", "b"]
    assert sorted(runs["dataset"]) == ["folder@aaaaaaaa", "folder@bbbbbbbb"]
    files = write_report(path, tmp_path / "rep", experiment="mine")
    text = " ".join(p.read_text() for p in files if p.suffix in (".md", ".csv"))
    assert "folder@aaaaaaaa" in text and "folder@bbbbbbbb" in text


def test_planning_builds_each_method_once_and_specs_build_none(tiny, tmp_path):
    """plan_grid makes one method object per method (to validate it), whatever the seeds and
    datasets; spec_from_json makes none (it checks the config against the config class)."""
    from mrseg_bench.run.plan import plan_grid
    from mrseg_bench.run.spec import spec_from_json, spec_to_json

    (tmp_path / "p.toml").write_text(TINY_PRESET)
    tiny.Tiny.built = 0
    plan = plan_grid("tiny", "synthetic", [0, 1, 2], str(tmp_path / "p.toml"))
    assert len(plan.specs) == 3 and tiny.Tiny.built == 1
    backs = [spec_from_json(json.loads(json.dumps(spec_to_json(s)))) for s in plan.specs]
    assert tiny.Tiny.built == 1
    assert [b.method_config["width"] for b in backs] == [3, 3, 3]


def test_phiseg_validates_without_building_a_model(monkeypatch):
    from mrseg_bench.baselines import phiseg
    from mrseg_bench.method import create_method

    def no_model(*a, **k):
        raise AssertionError("a PHiSeg model was built")

    monkeypatch.setattr(phiseg.PHiSegModel, "__init__", no_model)
    create_method("phiseg", {"levels": 5, "latent_levels": 3, "n0": 8}).validate()
    with pytest.raises(ValueError, match="latent_levels"):
        create_method("phiseg", {"levels": 3, "latent_levels": 4})


def test_profiled_step_uses_the_training_param_groups(tiny, monkeypatch):
    """The profiler's optimiser is the training's: two groups at lr and head_lr."""
    import torch

    from mrseg_bench.engine.profile import train_throughput
    from mrseg_bench.method import create_method
    from mrseg_bench.types import DatasetInfo, MultiRaterBatch

    seen: list[list[float]] = []
    real = torch.optim.Adam.__init__

    def spy(self, params, *a, **k):
        real(self, params, *a, **k)
        seen.append(sorted(g["lr"] for g in self.param_groups))

    monkeypatch.setattr(torch.optim.Adam, "__init__", spy)
    method = create_method("tiny", {"lr": 0.1, "head_lr": 0.001})
    info = DatasetInfo("t", 1, 2, ("a", "b"), (8, 8), "fixed")
    model = method.build(info)
    batch = MultiRaterBatch(torch.rand(2, 1, 8, 8), (torch.rand(2, 2, 8, 8) > 0.5).to(torch.uint8),
                            torch.ones(2, 2, dtype=torch.bool), ["x", "y"], ["x", "y"])
    train_throughput(method, model, batch, torch.device("cpu"), "fp32", 0, 1)
    assert seen == [[0.001, 0.1]]


def _values(store: Path) -> dict[tuple, float]:
    with ResultsStore(store) as st:
        runs = st.runs()
        m = st.metrics(runs["run_id"].tolist())
    seed = dict(zip(runs["run_id"], runs["seed"], strict=True))
    return {(int(seed[r]), c, k, None if pd_na(q) else int(q)): v
            for r, c, k, q, v in zip(m["run_id"], m["case_id"], m["metric"], m["rater"], m["value"], strict=True)}


def pd_na(x) -> bool:
    import pandas as pd

    return x is None or x is pd.NA or (isinstance(x, float) and x != x)


@pytest.mark.slow
def test_plugin_method_runs_with_jobs_2_like_jobs_1(tiny, tmp_path):
    """A method added as a plugin (its module + one preset section) runs through the CLI; with
    --jobs 2 the two seeds run in two worker processes, both are indexed as they end, and every
    stored value equals the --jobs 1 run's (CPU, one thread, same seeds)."""
    (tmp_path / "p.toml").write_text(TINY_PRESET)
    stores = {}
    for jobs in (1, 2):
        out = tmp_path / f"j{jobs}"
        res = CliRunner().invoke(app, ["run", "--methods", "tiny", "--preset", str(tmp_path / "p.toml"),
                                       "--seeds", "0,1", "--out", str(out), "--quiet", "--no-report",
                                       "--jobs", str(jobs)])
        assert res.exit_code == 0, res.output
        with ResultsStore(out / "results.sqlite") as st:
            assert sorted(st.runs("done")["seed"].tolist()) == [0, 1]
        stores[jobs] = _values(out / "results.sqlite")
    assert stores[1] and stores[1] == stores[2]


def test_local_executor_indexes_each_run_as_it_ends_and_reuses_results(toy_preset, tmp_path, monkeypatch):
    """``run_grid`` (every executor's path, local included): after each run ends its result is
    in the store; ``reuse_results`` skips runs done on other code."""
    from mrseg_bench import identity
    from mrseg_bench.executors.grid import run_grid
    from mrseg_bench.run.plan import plan_grid

    store = tmp_path / "s.sqlite"
    counts = []

    def seen(o):
        with ResultsStore(store) as st:
            counts.append(len(st.runs("done")))

    out = run_grid(plan_grid("toy", "toyset", [0, 1], toy_preset), tmp_path / "o", store, progress=seen)
    assert [o.status for o in out] == ["done", "done"] and counts == [1, 2]
    code = identity.code_identity()
    monkeypatch.setattr(identity, "code_identity", lambda refresh=False: {**code, "source_sha256": "other"})
    plan = plan_grid("toy", "toyset", [0, 1], toy_preset)
    assert plan.specs[0].config_hash != out[0].spec.config_hash
    again = run_grid(plan, tmp_path / "o", store, reuse_results=True)
    assert [(o.status, o.run_id) for o in again] == [("skipped", o.run_id) for o in out]


def test_schedule_rules_agree_between_stage_and_scheduled_configs():
    """One rule for poly power (> 0) and the plateau factor (default 0.5, in (0, 1)): a Stage
    and a scheduled method config accept and refuse the same values (they used to differ)."""
    import torch

    from mrseg_bench.baselines.scheduled import ScheduledConfig, check_schedule, scheduled_stage
    from mrseg_bench.engine.optim import build_scheduler
    from mrseg_bench.method import Stage

    with pytest.raises(ValueError, match="power"):
        Stage("s", 2, 1.0, schedule="poly", schedule_options={"power": 0})
    with pytest.raises(ValueError, match="poly_power"):
        check_schedule(ScheduledConfig(schedule="poly", poly_power=0), "m")
    plain = Stage("s", 2, 1.0, schedule="plateau")
    sched = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), plain)
    assert sched.factor == ScheduledConfig().plateau_factor == 0.5
    assert scheduled_stage(ScheduledConfig(schedule="plateau")).schedule_options["factor"] == 0.5


def test_executors_are_a_registry_and_run_grid_uses_the_one_named(toy_preset, tmp_path):
    """An executor registered like a method is the one ``run_grid`` submits to; unknown names
    list the registered ones."""
    from mrseg_bench.executors import EXECUTORS, register_executor
    from mrseg_bench.executors.grid import run_grid
    from mrseg_bench.executors.local import run_local
    from mrseg_bench.run.plan import plan_grid

    calls = []

    @register_executor("spy")
    def spy(specs, out, options, progress):
        calls.append([s["seed"] for s in specs])
        return run_local(specs, out, options, progress)

    try:
        assert {"local", "ray", "slurm", "spy"} <= set(EXECUTORS.names())
        out = run_grid(plan_grid("toy", "toyset", [0, 1], toy_preset), tmp_path / "o", tmp_path / "s.sqlite",
                       executor="spy")
        assert calls == [[0, 1]] and [o.status for o in out] == ["done", "done"]
        with pytest.raises(ValueError, match="choose one of local, ray, slurm, spy"):
            run_grid(plan_grid("toy", "toyset", [2], toy_preset), tmp_path / "o", tmp_path / "s.sqlite",
                     executor="nope")
    finally:
        EXECUTORS.remove("spy")


def test_thread_budget_splits_the_cores():
    from mrseg_bench.engine.threads import thread_budget

    assert [thread_budget(2, 1), thread_budget(2, 2), thread_budget(16, 3), thread_budget(1, 4),
            thread_budget(None, 1), thread_budget(8, 0)] == [2, 1, 5, 1, 1, 8]
