"""Runner: planning (overrides, validation, hashes, folders) and the grid end to end on toys."""

from __future__ import annotations

import json
import math

import pytest
import test_engine_toys as toys

from mrseg_bench.executors.grid import run_grid
from mrseg_bench.identity import config_hash, experiment_slug
from mrseg_bench.reports.summary import summarize
from mrseg_bench.run.overrides import UsageError
from mrseg_bench.run.plan import plan_grid
from mrseg_bench.store import ResultsStore

PRESET = toys.preset_toml(num_cases=20, n_samples=3, profile_steps=1, latency_repeats=2)


def test_plan_applies_preset_and_sets(toy_preset):
    plan = plan_grid("toy*", "toyset", [0, 1], toy_preset,
                     ["width=6", "toy.flat.lr=0.5", "run.batch_size=2", "dataset.num_cases=12"])
    assert [(s.method, s.seed) for s in plan.specs] == [("toy", 0), ("toy", 1), ("toy.flat", 0), ("toy.flat", 1)]
    toy, flat = plan.specs[0].method_obj.cfg, plan.specs[2].method_obj.cfg
    assert (toy.epochs, toy.stage2_epochs, toy.width, toy.lr) == (1, 1, 6, 1e-2)
    assert (flat.width, flat.lr) == (6, 0.5)
    assert plan.specs[0].run_cfg.batch_size == 2 and plan.specs[0].run_cfg.n_samples == 3
    assert len(plan.datasets["toyset"]) == 12
    assert plan.specs[0].torch_device.type == "cpu"
    # a user preset is named by its path; the experiment defaults to it
    assert plan.specs[0].preset == toy_preset and plan.specs[0].experiment == toy_preset
    # overrides: what --set changed against the preset (method keys bare, run./dataset. prefixed)
    common = {"run.batch_size": 2, "dataset.num_cases": 12}
    assert plan.specs[0].overrides == {"width": 6, **common}
    assert plan.specs[2].overrides == {"width": 6, "lr": 0.5, **common}
    assert plan_grid("toy", "toyset", [0], toy_preset, ["width=4"]).specs[0].overrides == {}  # 4: the default


def test_config_hash_canonical_and_sensitive(toy_preset):
    a = plan_grid("toy", "toyset", [0, 1], toy_preset).specs
    b = plan_grid("toy", "toyset", [0], toy_preset, ["width=4"]).specs  # 4 is the default: same config
    c = plan_grid("toy", "toyset", [0], toy_preset, ["width=5"]).specs
    assert a[0].config_hash == b[0].config_hash
    assert len({a[0].config_hash, a[1].config_hash, c[0].config_hash}) == 3
    assert config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
    assert len(a[0].config_hash) == 64


@pytest.mark.parametrize("kwargs, match", [
    (dict(methods="nope"), "unknown method 'nope'; known: .*toy"),
    (dict(methods="zz*"), "matches nothing"),
    (dict(datasets="nodata"), "unknown dataset 'nodata'; known: .*toyset"),
    (dict(preset="huge"), "unknown preset 'huge'; valid: ci, default, paper, smoke"),
    (dict(sets=["colour=red"]), "no selected method has this key; valid: .*width"),
    (dict(sets=["width=wide"]), "width='wide' is not a valid int"),
    (dict(sets=["toy.colour=1"]), "unknown key.*colour; valid: .*width"),
    (dict(sets=["other.width=1"]), "'other' is not a selected method"),
    (dict(sets=["run.speed=1"]), "run: unknown key.*speed; valid: .*batch_size"),
    (dict(sets=["run.batch_size=0"]), "batch_size=0"),
    (dict(sets=["dataset.colour=1"]), "unknown option"),
    (dict(sets=["novalue"]), "expected key=value"),
    (dict(data_root="/no/such/folder"), "--data-root /no/such/folder: does not exist"),
    (dict(device="tpu"), "auto\\|cpu\\|cuda"),
    (dict(sets=["run.num_folds=4", "run.fold=7"]), "fold"),
    (dict(sets=["run.test_fraction=1.5"]), "fraction"),
])
def test_plan_rejects_bad_input(toy_preset, kwargs, match):
    args = dict(methods="toy", datasets="toyset", seeds=[0], preset=toy_preset, sets=[])
    args.update(kwargs)
    with pytest.raises(UsageError, match=match):
        plan_grid(**args)


@pytest.mark.slow
def test_grid_end_to_end_skip_force_and_failure(toy_preset, tmp_path, monkeypatch):
    out, store_path = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
    plan = plan_grid("toy,toy.flat", "toyset", [0], toy_preset)
    res = run_grid(plan, out, store_path)
    assert [o.status for o in res] == ["done", "done"]
    spec = plan.specs[0]
    run_dir = out / "toyset" / "toy" / f"{experiment_slug(toy_preset)}_seed0_{spec.config_hash[:8]}"
    assert run_dir.name.startswith("toy-")
    assert res[0].run_dir == run_dir
    for f in ("config.json", "split.json", "train_log.jsonl", "metrics.csv", "result.json",
              "checkpoints/stage1_best.pt", "checkpoints/stage2_best.pt"):
        assert (run_dir / f).is_file(), f
    # `last` is only for resuming: deleted once the run is done (run.keep_last keeps it)
    assert not list(run_dir.glob("checkpoints/*_last.pt")) and not list(out.rglob("*.tmp"))
    assert not list(out.rglob("*.claim"))  # claims are released
    assert json.loads((run_dir / "config.json").read_text())["config_hash"] == spec.config_hash
    split = json.loads((run_dir / "split.json").read_text())
    assert split["test"] and split["train"]
    with ResultsStore(store_path) as st:
        runs = st.runs()
        assert runs["status"].tolist() == ["done", "done"] and runs["method"].tolist() == ["toy", "toy.flat"]
        row = runs.iloc[0]
        assert row["capabilities"] == "diverse,personalized" and row["n_samples"] == 3
        assert row["config_hash"] == spec.config_hash and row["run_dir"] == str(run_dir)
        assert json.loads(row["env_json"])["torch"]
        m = st.metrics([row["run_id"]])
        assert set(m["case_id"]) == set(split_case_ids(plan, split["test"]))
        assert {"ged", "per_rater_dice"} <= set(m["metric"])
        assert len(m) == sum(1 for _ in open(run_dir / "metrics.csv")) - 1
        prof = dict(zip(st.profile([row["run_id"]])["name"], st.profile([row["run_id"]])["value"], strict=True))
        for name in ("params", "flops_per_image", "train_images_per_s", "infer_images_per_s", "latency_p50_ms",
                     "latency_p95_ms", "wall_s_stage1", "wall_s_stage2", "eval_wall_s"):
            assert prof[name] > 0, name
        assert math.isnan(prof["peak_memory_mb"])  # MRSEG_PROFILE_MEMORY=off in the suite (conftest)
        table = summarize(st, runs["run_id"].tolist())
        toy_row = table.set_index("method").loc["toy"]
        assert toy_row["ged"] == pytest.approx(m[m["metric"] == "ged"]["value"].mean())
        assert toy_row[["consensus_dice"]].isna().all()  # not a capability of toy
        first_ids = runs["run_id"].tolist()

    again = run_grid(plan, out, store_path)
    assert [o.status for o in again] == ["skipped", "skipped"] and [o.run_id for o in again] == first_ids

    forced = run_grid(plan_grid("toy", "toyset", [0], toy_preset), out, store_path, force=True)
    assert forced[0].status == "done" and forced[0].run_id != first_ids[0]
    with ResultsStore(store_path) as st:
        assert len(st.runs()) == 2 and forced[0].run_id in set(st.runs()["run_id"])
        assert set(st.metrics()["run_id"]) == {forced[0].run_id, first_ids[1]}

    # a failing run is recorded with its error and the grid goes on
    monkeypatch.setenv("MRSEG_TOY_FAIL", "1")
    plan2 = plan_grid("toy,toy.flat", "toyset", [1], toy_preset)
    res2 = run_grid(plan2, out, store_path)
    assert [o.status for o in res2] == ["failed", "done"]
    assert "RuntimeError: toy failure injected" in res2[0].error
    assert "toy failure injected" in (res2[0].run_dir / "error.txt").read_text()
    with ResultsStore(store_path) as st:
        failed = st.runs("failed")
        assert failed["error"].tolist() == ["RuntimeError: toy failure injected"]
        assert st.metrics([failed["run_id"][0]]).empty
    # fixed: the rerun replaces the failed row by a done one
    monkeypatch.delenv("MRSEG_TOY_FAIL")
    res3 = run_grid(plan2, out, store_path)
    assert [o.status for o in res3] == ["done", "skipped"]
    with ResultsStore(store_path) as st:
        assert st.runs("failed").empty and len(st.runs()) == 4


def split_case_ids(plan, indices):
    ds = plan.datasets["toyset"]
    return [ds.case_ids[i] for i in indices]


def test_run_split_uses_the_protocols_own_seed_unless_given():
    """protocol="dpersona" shuffles with the reference's seed 1337, not the run's seed."""
    from mrseg_bench.datasets.splits import make_split
    from mrseg_bench.engine.run_config import RunConfig
    from mrseg_bench.registry import DATASETS
    from mrseg_bench.run.plan import make_run_split

    ds = DATASETS.get("synthetic")(num_cases=16, image_size=16)
    ref = make_split(ds, protocol="dpersona", seed=1337)
    assert make_run_split(ds, RunConfig(protocol="dpersona")) == ref
    assert make_run_split(ds, RunConfig(protocol="dpersona", split_seed=5)) != ref
    assert make_run_split(ds, RunConfig()) == make_split(ds, seed=0)
