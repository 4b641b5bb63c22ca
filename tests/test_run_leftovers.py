"""After a run: ``run.keep_best=false`` deletes the ``best`` checkpoints (same config hash as
keeping them), and the run records what the report needs (rater names, threads, load)."""

from __future__ import annotations

import json

import test_engine_toys as toys

from mrseg_bench.executors.grid import run_grid
from mrseg_bench.run.plan import plan_grid

PRESET = toys.preset_toml(num_cases=20, n_samples=3, profile_steps=1, latency_repeats=2)


def test_keep_best_false_deletes_best_checkpoints_and_env_has_facts(toy_preset, tmp_path):
    keep = plan_grid("toy", "toyset", [0], toy_preset).specs[0]
    plan = plan_grid("toy", "toyset", [0], toy_preset, ["run.keep_best=false"])
    assert plan.specs[0].config_hash == keep.config_hash  # a housekeeping choice, not a new config
    res = run_grid(plan, tmp_path / "runs", tmp_path / "runs" / "results.sqlite")
    assert [o.status for o in res] == ["done"]
    run_dir = res[0].run_dir
    assert (run_dir / "result.json").is_file() and not list(run_dir.glob("checkpoints/*.pt"))
    env = json.loads((run_dir / "result.json").read_text())["run"]["env_json"]
    env = json.loads(env) if isinstance(env, str) else env
    assert env["rater_names"] and env["rater_identity"] in ("fixed", "anonymous")
    assert isinstance(env["threads"], int) and "load_avg_1m" in env
