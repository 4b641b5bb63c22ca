"""``mrseg-bench tune``: search spaces, the objective (validation only), the per-epoch pruning
hook, the equal budget, the outputs, and resuming after a SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna  # a dependency of mrseg-bench (tune): never skipped
import pytest
import test_engine_toys as toys
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.presets import load_preset
from mrseg_bench.registry import METHODS
from mrseg_bench.run import plan_grid
from mrseg_bench.tune.objective import Objective, objective_for, select_rule, trial_value
from mrseg_bench.tune.space import Range, effective_space

REPO = Path(__file__).resolve().parents[1]
TUNE = """
[tune.toy]
lr = { low = 1e-3, high = 1e-1, log = true, source = "toy: around its default 1e-2" }

[tune."toy.flat"]
lr = { low = 1e-3, high = 1e-1, log = true }
"""
PRESET = toys.preset_toml(num_cases=16, n_samples=2, profile=False, qualitative_cases=0) + TUNE


def _builtin_methods() -> list[str]:
    return [n for n, e in METHODS.items() if e.factory.__module__.startswith("mrseg_bench.")]


# -- spaces ------------------------------------------------------------------------------------
def test_every_builtin_method_declares_a_space_with_sources():
    names = _builtin_methods()
    assert {"dpersona", "probunet", "pionono", "cm.pixel", "fusion.soft", "mose"} <= set(names)
    for name in names:
        space = effective_space(name, METHODS.get(name).config_cls)  # checks every range
        assert "lr" in space, name
        for field, rng in space.items():
            assert rng.source.strip() and len(rng.source) > 10, (name, field)
    # method-specific knobs where the method has them
    assert {"beta", "kl_weight", "bank_train", "free_bits"} <= set(effective_space("dpersona", METHODS.get("dpersona").config_cls))
    assert {"latent_lr", "kl_weight"} <= set(effective_space("pionono", METHODS.get("pionono").config_cls))
    assert "num_experts" in effective_space("mose", METHODS.get("mose").config_cls)
    assert effective_space("mose", METHODS.get("mose").config_cls)["num_experts"].kind == "int"


def test_a_preset_overrides_the_space(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('description = "x"\n[tune.dpersona]\n'
                    'lr = { low = 2e-5, high = 2e-4, log = true, source = "narrower" }\n'
                    'kl_weight = false\nbank_train = { choices = [50, 100] }\nbeta = { low = 0.2, high = 0.8 }\n')
    preset = load_preset(str(path))
    cls = METHODS.get("dpersona").config_cls
    declared = effective_space("dpersona", cls)
    space = effective_space("dpersona", cls, preset.tune["dpersona"], preset.name)
    assert space["lr"] == Range(2e-5, 2e-4, log=True, kind="float", source="narrower") != declared["lr"]
    assert "kl_weight" in declared and "kl_weight" not in space
    assert space["bank_train"].kind == "choice" and space["bank_train"].choices == (50, 100)
    assert space["beta"].source == f"preset {preset.name}" and not space["beta"].log  # default source
    assert space["free_bits"] == declared["free_bits"]  # untouched


@pytest.mark.parametrize("line, match", [
    ("lr = { low = 1e-3, high = 1e-4 }", "low must be below high"),
    ("lr = { low = 0.0, high = 1e-3, log = true }", "a log range needs low > 0"),
    ("lr = { low = 1e-4 }", "give low and high"),
    ("lr = { low = 1e-4, high = 1e-3, step = 2 }", "unknown key"),
    ("lr = { choices = [] }", "at least one value"),
    ("lr = 0.001", "expected"),
    ("nosuch = { low = 1, high = 2 }", "not a field of DPersonaConfig"),
    ("epochs = { low = 1, high = 5 }", "equal budget"),
    ("bank_train = { low = 1.5, high = 8 }", "integer range needs integer"),
    ("lr = { low = 1e-4, high = 1e-3, choices = [1e-4] }", "either choices or low/high"),
])
def test_bad_space_overrides_are_refused(tmp_path, line, match):
    path = tmp_path / "p.toml"
    path.write_text(f'description = "x"\n[tune.dpersona]\n{line}\n')
    with pytest.raises(ValueError, match=match) as err:
        load_preset(str(path))
    assert "[tune.dpersona]" in str(err.value) and "\n" not in str(err.value)


def test_a_space_for_an_unknown_method_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[tune.nosuch]\nlr = { low = 1e-4, high = 1e-3 }\n')
    with pytest.raises(ValueError, match=r"\[tune.nosuch\] unknown method 'nosuch'"):
        load_preset(str(path))


def test_a_method_without_a_space_is_refused(toy_preset):
    with pytest.raises(ValueError, match="no search space"):
        effective_space("toy", METHODS.get("toy").config_cls)


# -- the objective -----------------------------------------------------------------------------
def test_objective_follows_what_the_method_produces():
    got = {m: objective_for(METHODS.get(m)()) for m in ("dpersona", "probunet", "fusion.soft", "pionono")}
    assert got["dpersona"] == Objective("per_rater_dice_matched", "maximize", "stage2")
    assert got["probunet"] == Objective("ged", "minimize", "train")
    assert got["fusion.soft"].metric == "consensus_dice" and got["fusion.soft"].direction == "maximize"
    assert got["pionono"].metric == "per_rater_dice_matched"  # personalised first


def test_select_rule_makes_the_last_stage_select_on_the_objective(toy_preset):
    toy = METHODS.get("toy")()
    obj = objective_for(toy)
    assert select_rule("toy", toy, obj, "auto") == "auto"  # auto already selects on it
    rule = select_rule("toy", toy, obj, "ged")
    assert rule == "ged,toy:stage2=per_rater_dice_matched"
    from mrseg_bench.engine.select import resolve_selection

    assert [resolve_selection(rule, "toy", toy, s).metric for s in toy.stages()] == ["ged", "per_rater_dice_matched"]


def _write_run(folder: Path, records: list[dict], selection: dict | None, test_value: float) -> None:
    folder.mkdir(parents=True)
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"cut short')
    (folder / "metrics.csv").write_text(f"case_id,metric,rater,value\nc0,ged,,{test_value}\n")
    result = {"schema": 1, "run": {"status": "done"}, "profile": [],
              "metrics": [{"case_id": "c0", "metric": "ged", "rater": None, "value": test_value}]}
    if selection is not None:
        result["selection"] = selection
    (folder / "result.json").write_text(json.dumps(result))


def test_trial_value_reads_validation_values_only(tmp_path):
    obj = Objective("ged", "minimize", "s2")
    log = [{"stage": "s1", "epoch": 0, "val_ged": 0.01},  # another stage: not the trial's value
           {"stage": "s2", "epoch": 0, "val_ged": 0.5}, {"stage": "s2", "epoch": 1, "val_ged": 0.3},
           {"stage": "s2", "epoch": 2, "val_ged": 0.4}, {"stage": "s2", "epoch": 3, "val_loss": 0.1}]
    # the selection record of the last stage, when it selected on the objective
    _write_run(tmp_path / "a", log, {"s2": {"metric": "ged", "mode": "min", "value": 0.3, "epoch": 1}}, 0.001)
    assert trial_value(tmp_path / "a", obj) == 0.3
    # no selection record (or one on another metric): the best val_ged of the last stage's records
    _write_run(tmp_path / "b", log, {"s2": {"metric": "loss", "mode": "min", "value": 0.1, "epoch": 3}}, 0.001)
    assert trial_value(tmp_path / "b", obj) == 0.3
    assert trial_value(tmp_path / "b", Objective("ged", "maximize", "s2")) == 0.5
    _write_run(tmp_path / "c", [{"stage": "s2", "epoch": 0, "val_loss": 1.0}], None, 0.001)
    with pytest.raises(ValueError, match="no validation ged in stage 's2'"):
        trial_value(tmp_path / "c", obj)


# -- the per-epoch hook and pruning --------------------------------------------------------------
def _study_with_a_finished_trial(path: Path, study: str, metric_value: float):
    from mrseg_bench.tune.study import open_storage

    storage = open_storage(path)
    s = optuna.create_study(storage=storage, study_name=study, direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    s.add_trial(optuna.trial.create_trial(params={"lr": 1e-2}, distributions=dist, value=metric_value,
                                          intermediate_values={0: metric_value, 1: metric_value}))
    return s


def test_hook_reports_the_last_stage_and_prunes_below_the_median(tmp_path):
    from mrseg_bench.tune.hook import epoch_hook

    journal = tmp_path / "journal.log"
    s = _study_with_a_finished_trial(journal, "toy", 0.9)
    dist = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    good, bad = s.ask(dist), s.ask(dist)

    def hook(t, pruner=None):
        return epoch_hook({"storage": str(journal), "study": "toy", "number": t.number,
                           "metric": "per_rater_dice_matched", "stage": "stage2",
                           "pruner": pruner or {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0}})

    h = hook(good)
    assert h("stage1", 0, {"val_per_rater_dice_matched": 0.01}) is False  # not the objective's stage
    assert h("stage2", 0, {"val_loss": 0.2}) is False  # no value of the objective
    assert h("stage2", 0, {"val_per_rater_dice_matched": 0.95}) is False  # above the median 0.9
    assert h("stage2", 1, {"val_per_rater_dice_matched": 0.10}) is False  # its best so far (0.95) still is
    assert hook(bad)("stage2", 0, {"val_per_rater_dice_matched": 0.5}) is True  # below the median
    assert hook(bad, {"kind": "none"})("stage2", 1, {"val_per_rater_dice_matched": 0.0}) is False
    trials = optuna.load_study(study_name="toy", storage=s._storage).trials
    assert trials[good.number].intermediate_values == {0: 0.95, 1: 0.10}
    assert trials[bad.number].intermediate_values == {0: 0.5, 1: 0.0}


def test_a_pruned_trial_stops_its_run(toy_preset, tmp_path):
    from mrseg_bench.run.spec import Status
    from mrseg_bench.run.worker import execute

    journal = tmp_path / "journal.log"
    s = _study_with_a_finished_trial(journal, "toy", 1.0)  # no toy reaches Dice 1: pruned at once
    t = s.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)})
    (spec,) = plan_grid("toy", "toyset", [0], toy_preset, sets=["toy.stage2_epochs=3"]).specs
    spec.trial = {"storage": str(journal), "study": "toy", "number": t.number, "metric": "per_rater_dice_matched",
                  "stage": "stage2", "pruner": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0}}
    outcome = execute(spec, tmp_path / "runs")
    assert outcome.status is Status.SKIPPED and outcome.note == "pruned"
    run_dir = spec.run_dir(tmp_path / "runs")
    assert not (run_dir / "result.json").exists()
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in records] == [("stage1", 0), ("stage2", 0)]  # 2 of 3 epochs never ran
    assert list(s.trials[t.number].intermediate_values) == [0]


# -- a whole tune, in this process ----------------------------------------------------------------
@pytest.mark.slow
def test_tune_gives_every_method_the_same_budget_and_writes_its_outputs(toy_preset, tmp_path):
    from mrseg_bench.tune.driver import TuneRequest, run_tune

    out = tmp_path / "runs"
    req = TuneRequest("toy,toy.flat", toy_preset, trials=2, dataset="toyset", out=out, experiment="t1", batch=2)
    res = run_tune(req)
    folder = out / "t1" / "tune"
    assert res.folder == folder and (folder / "journal.log").exists() and (folder / "objective.png").stat().st_size > 0
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [(r["method"], r["state"]) for r in rows] == [("toy", "complete")] * 2 + [("toy.flat", "complete")] * 2
    assert {r["metric"] for r in rows} == {"per_rater_dice_matched", "consensus_dice"}
    # each trial is an ordinary run: its own folder, its values in its identity
    for r in rows:
        cfg = json.loads((Path(r["run_dir"]) / "config.json").read_text())
        assert cfg["method_config"]["lr"] == json.loads(r["params"])["lr"]
        assert cfg["experiment"] == "t1"
        # the value is the validation selection, whatever the test split gave
        result = json.loads((Path(r["run_dir"]) / "result.json").read_text())
        stage = "stage2" if r["method"] == "toy" else "train"
        assert float(r["value"]) == result["selection"][stage]["value"]
        assert result["selection"][stage]["metric"] == r["metric"]
    assert len({r["run_dir"] for r in rows}) == 4
    # the equal budget, stated
    summary = (folder / "summary.md").read_text()
    assert "2 trials per method" in summary and "TPE sampler seed 0" in summary and "MedianPruner" in summary
    assert {s.method: s.epochs for s in res.summaries} == {"toy": {"stage1": 1, "stage2": 1}, "toy.flat": {"train": 1}}
    # the tuned preset loads, plans, and carries each method's best values
    best = load_preset(str(res.preset_path))
    plan = plan_grid("toy,toy.flat", "toyset", [0], str(res.preset_path))
    for s in res.summaries:
        assert best.method[s.method]["lr"] == s.best_params["lr"]
        (spec,) = [p for p in plan.specs if p.method == s.method]
        assert spec.method_config["lr"] == s.best_params["lr"] and spec.method_config["epochs"] == 1
    # asking again with the same budget runs nothing
    again = run_tune(req)
    assert [r.run_dir for r in again.rows] == [r["run_dir"] for r in rows]


def test_cli_refuses_bad_input(toy_preset, tmp_path):
    runner = CliRunner()
    base = ["tune", "--preset", toy_preset, "--dataset", "toyset", "--out", str(tmp_path / "o")]
    for argv, msg in (
        (["--methods", "nosuch", "--trials", "2"], "unknown method 'nosuch'"),
        (["--methods", "toy", "--trials", "0"], "--trials 0: must be at least 1"),
        (["--methods", "toy", "--trials", "1", "--pruner", "hyperband"], "choose median or none"),
        (["--methods", "toy", "--trials", "1", "--batch", "-1"], "--batch -1"),
        (["--methods", "toy", "--trials", "1", "--dataset", "toyset,synthetic"], "one dataset"),
        (["--methods", "toy", "--trials", "1", "--jobs", "0"], "--jobs 0"),
    ):
        res = runner.invoke(app, [*base, *argv])
        assert res.exit_code == 2, res.output
        assert msg in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(toy_preset).read_text() + '\n[tune.dpersona]\nlr = { low = 1.0, high = 0.1 }\n')
    res = runner.invoke(app, ["tune", "--methods", "toy", "--preset", str(bad), "--trials", "1", "--dataset", "toyset",
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "low must be below high" in res.output
    assert not (tmp_path / "o").exists()  # nothing written


# -- SIGKILL and resume -----------------------------------------------------------------------------
WRAPPER = """
import os, sys, time
sys.path.insert(0, {tests!r})
import test_engine_toys as toys
toys.register()
seen = []
step = toys.Toy.training_step
def hanging_step(self, model, batch, stage):
    if not any(s is self for s in seen):
        seen.append(self)
    if os.environ.get("HANG_MARK") and len(seen) == int(os.environ["HANG_ON_RUN"]):
        open(os.environ["HANG_MARK"], "w").write("hanging")
        time.sleep(600)
    return step(self, model, batch, stage)
toys.Toy.training_step = hanging_step
from mrseg_bench.cli import main
main(sys.argv[1:])
"""


def _tune_cmd(preset: str, out: Path) -> list[str]:
    return [sys.executable, "-c", WRAPPER.format(tests=str(REPO / "tests")), "tune", "--methods", "toy", "--preset",
            preset, "--dataset", "toyset", "--trials", "3", "--out", str(out), "--experiment", "k"]


@pytest.mark.slow
def test_a_killed_tune_resumes_without_repeating_a_finished_trial(toy_preset, tmp_path):
    out, mark = tmp_path / "runs", tmp_path / "hanging"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "HANG_MARK": str(mark), "HANG_ON_RUN": "3"}
    proc = subprocess.Popen(_tune_cmd(toy_preset, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 300
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mark.exists(), proc.communicate(timeout=5)[0] if proc.poll() is not None else "no hang"
    os.kill(proc.pid, signal.SIGKILL)  # trials 0 and 1 told, trial 2 running
    proc.wait(timeout=30)
    runs = out / "toyset" / "toy"

    def folders() -> list[Path]:
        return [p for p in runs.iterdir() if p.is_dir()]

    finished = {p.name: (p / "result.json").read_text() for p in folders() if (p / "result.json").exists()}
    logs = {p.name: (p / "train_log.jsonl").read_text() for p in folders() if p.name in finished}
    assert len(finished) == 2 and len(folders()) == 3

    env.pop("HANG_MARK")
    res = subprocess.run(_tune_cmd(toy_preset, out), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "trial(s) 2 were left running by a stopped tune; asking them again" in res.stderr
    # no finished trial ran again: their folders, results and logs are untouched
    for name, text in finished.items():
        assert (runs / name / "result.json").read_text() == text
        assert (runs / name / "train_log.jsonl").read_text() == logs[name]
    assert len(folders()) == 3  # the re-asked trial resumed trial 2's run folder
    rows = list(csv.DictReader((out / "k" / "tune" / "trials.csv").open()))
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "complete"), ("1", "complete"), ("2", "fail"),
                                                          ("3", "complete")]
    assert rows[3]["params"] == rows[2]["params"] and rows[3]["run_dir"] == rows[2]["run_dir"]
    assert len({r["run_dir"] for r in rows}) == 3


def test_outcomes_are_told_and_counted_against_the_budget(tmp_path):
    from mrseg_bench.run.spec import Outcome, Status
    from mrseg_bench.tune import study as studies
    from mrseg_bench.tune.driver import _Method, _tell

    s = optuna.create_study(storage=studies.open_storage(tmp_path / "journal.log"), study_name="m", direction="minimize")
    m = _Method("m", None, {}, Objective("ged", "minimize", "s2"), s)
    dist = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    run = tmp_path / "run"
    _write_run(run, [{"stage": "s2", "epoch": 0, "val_ged": 0.4}], None, 0.0)
    states = []
    for status, note, folder in ((Status.DONE, None, run), (Status.SKIPPED, "done", run),
                                 (Status.SKIPPED, "pruned", run), (Status.FAILED, None, run),
                                 (Status.SKIPPED, "claimed by another worker", run),
                                 (Status.DONE, None, tmp_path / "empty"), (Status.CANCELLED, None, None)):
        t = s.ask(dist)
        states.append(_tell(m, t, Outcome(None, status, error="boom" if status is Status.FAILED else None,
                                          run_dir=folder, note=note), print))
    assert states == ["complete", "complete", "pruned", "fail", "fail", "fail", "cancelled"]
    trials = s.get_trials()
    assert [t.value for t in trials[:2]] == [0.4, 0.4]  # the validation value, not the test one (0.0)
    assert trials[3].user_attrs["error"] == "boom" and "no validation ged" in trials[5].user_attrs["error"]
    assert trials[6].user_attrs[studies.ORPHANED] and studies.used(s) == 6  # a cancelled trial does not count
    again = s.ask(dist)  # and is asked again with its values
    assert again.params == trials[6].params and again.user_attrs["resumes"] == 6


def test_orphans_are_failed_and_asked_again(tmp_path):
    from mrseg_bench.tune import study as studies

    s = optuna.create_study(storage=studies.open_storage(tmp_path / "journal.log"), study_name="m")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    done, left = s.ask(dist), s.ask(dist)
    s.tell(done, 1.0)
    assert studies.recover_orphans(s) == [left.number]
    assert studies.used(s) == 1 and s.get_trials()[left.number].state.name == "FAIL"
    assert s.ask(dist).params == left.params


# -- the preset trial -----------------------------------------------------------------------------
def test_range_contains_and_the_preset_point():
    from mrseg_bench.tune.space import integer, log_uniform, preset_point

    lr = log_uniform(1e-5, 1e-3, "s")
    assert lr.contains(1e-3) and lr.contains(1e-5) and lr.contains(3e-4)  # both ends included
    assert not lr.contains(1.1e-3) and not lr.contains(float("nan")) and not lr.contains(True)
    bank = integer(25, 200, "s", log=True)
    assert bank.contains(50) and not bank.contains(50.5) and not bank.contains(201)
    mode = Range(choices=("one", "all"), kind="choice", source="s")
    assert mode.contains("one") and not mode.contains("some")
    assert not Range(choices=(1, 2), kind="choice", source="s").contains(True)  # True == 1, but not a choice
    space = {"lr": lr, "bank_train": bank}
    assert preset_point(space, {"lr": 1e-3, "bank_train": 50, "beta": 0.5}) == ({"lr": 1e-3, "bank_train": 50}, [])
    assert preset_point(space, {"lr": 1e-2, "bank_train": 50}) == ({}, ["lr"])


def test_the_first_trial_is_the_presets_own_values_and_is_never_pruned(toy_preset, tmp_path, monkeypatch):
    from mrseg_bench.tune import driver
    from mrseg_bench.tune import study as studies

    asked_specs = []

    def fake_batch(req, plan, asked, store, log):  # no training: every trial scores its lr
        for m, t, spec in asked:
            asked_specs.append((m.name, t.number, spec))
            m.study.tell(t, float(spec.method_config["lr"]))

    monkeypatch.setattr(driver, "_run_batch", fake_batch)
    out = tmp_path / "runs"
    req = driver.TuneRequest("toy,toy.flat", toy_preset, trials=3, dataset="toyset", out=out, experiment="p")
    lines = []
    res = driver.run_tune(req, log=lines.append)
    planned = {s.method: s.method_config["lr"] for s in plan_grid("toy,toy.flat", "toyset", [0], toy_preset).specs}
    for method in ("toy", "toy.flat"):
        mine = sorted((n, s) for m, n, s in asked_specs if m == method)
        assert len(mine) == 3  # the preset trial counts against the same budget
        (n0, s0), rest = mine[0], mine[1:]
        assert n0 == 0 and s0.method_config["lr"] == planned[method]
        assert s0.trial["pruner"] == {"kind": "none"}
        assert all(s.trial["pruner"]["kind"] == "median" for _, s in rest)
        assert any(line.startswith(f"{method}: its next trial is the preset's own values") for line in lines)
    rows = list(csv.DictReader((out / "p" / "tune" / "trials.csv").open()))
    assert [(r["method"], r["trial"], r["preset"]) for r in rows if r["preset"]] == [("toy", "0", "1"), ("toy.flat", "0", "1")]
    for s in res.summaries:  # toy maximises: the best is the largest lr asked, at least the preset's
        assert s.preset_trial == 0 and s.preset_value == planned[s.method]
        assert s.best_value >= s.preset_value
    summary = (out / "p" / "tune" / "summary.md").read_text()
    assert "the preset's own values as one trial where they lie in the space (never pruned)" in summary and f"{planned['toy']:.4f} (0)" in summary
    # a larger budget later does not ask the preset's values again
    req.trials = 4
    driver.run_tune(req)
    assert sum(1 for m, n, s in asked_specs if s.trial["pruner"] == {"kind": "none"}) == 2
    # the journal keeps which trial held the preset's values
    journal = studies.open_storage(out / "p" / "tune" / "journal.log")
    first = optuna.load_study(study_name="toy", storage=journal).get_trials()[0]
    assert first.user_attrs[studies.PRESET_VALUES]


def test_a_preset_value_outside_the_space_gives_no_preset_trial(toy_preset, tmp_path, monkeypatch):
    from mrseg_bench.tune import driver

    monkeypatch.setattr(driver, "_run_batch", lambda req, plan, asked, store, log: [
        m.study.tell(t, 0.5) for m, t, _ in asked])
    lines = []
    req = driver.TuneRequest("toy", toy_preset, trials=2, dataset="toyset", out=tmp_path / "runs", experiment="q",
                             sets=["lr=0.5"])  # the space is [1e-3, 1e-1]
    res = driver.run_tune(req, log=lines.append)
    assert "toy: no preset trial: the preset's lr lies outside the search space" in lines
    assert all(not r.preset for r in res.rows) and res.summaries[0].preset_trial is None


def test_an_orphaned_preset_trial_is_asked_again_as_the_preset_trial(tmp_path):
    from mrseg_bench.tune import study as studies

    s = optuna.create_study(storage=studies.open_storage(tmp_path / "journal.log"), study_name="m")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    assert studies.enqueue_preset_trial(s, {"lr": 1e-2})
    assert not studies.enqueue_preset_trial(s, {"lr": 1e-2})  # waiting: not twice
    left = s.ask(dist)
    assert left.params == {"lr": 1e-2} and left.user_attrs[studies.PRESET_VALUES]
    assert studies.recover_orphans(s) == [left.number]
    again = s.ask(dist)
    assert again.params == {"lr": 1e-2} and again.user_attrs[studies.PRESET_VALUES] and again.user_attrs["resumes"] == 0
    assert not studies.enqueue_preset_trial(s, {"lr": 1e-2})
