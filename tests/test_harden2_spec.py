"""Specs and plans: every field that enters the config hash is checked against it, seeds are
bounded, a training split of one case is refused while planning, a spec file is read with a
size limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_engine_toys as toys
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.identity import config_hash
from mrseg_bench.run.overrides import UsageError
from mrseg_bench.run.plan import plan_grid
from mrseg_bench.run.spec import spec_from_json, spec_to_json

PRESET = toys.preset_toml(num_cases=16, epochs=1, n_samples=3, profile_steps=1, latency_repeats=2,
                          qualitative_cases=0)


@pytest.fixture
def spec_json(toy_preset):
    plan = plan_grid("toy", "toyset", [0], toy_preset)
    return json.loads(json.dumps(spec_to_json(plan.specs[0])))


# item 4
@pytest.mark.parametrize(("field", "value", "named"), [
    ("n_samples", 1, "run_config.n_samples"),
    ("max_eval_cases", 1, "run_config.max_eval_cases"),
    ("metrics", "dice", "run_config.metrics"),
    ("grad_clip", 2.5, "run_config.grad_clip"),
    ("protocol", "dpersona", "run_config.protocol"),
])
def test_hand_edited_run_config_is_refused_naming_the_field(spec_json, field, value, named) -> None:
    assert spec_json["run_config"][field] != value
    edited = {**spec_json, "run_config": {**spec_json["run_config"], field: value}}
    with pytest.raises(UsageError, match=rf"spec: {named} is .* but the config its hash covers says"):
        spec_from_json(edited)


def test_hand_edited_precision_and_preset_are_refused(spec_json) -> None:
    other = "bf16" if spec_json["precision"] != "bf16" else "fp32"
    with pytest.raises(UsageError, match=r"spec: precision is"):
        spec_from_json({**spec_json, "precision": other})
    with pytest.raises(UsageError, match=r"spec: preset is 'other'"):
        spec_from_json({**spec_json, "preset": "other"})


def test_fields_outside_the_hash_may_differ(spec_json) -> None:
    edited = {**spec_json, "run_config": {**spec_json["run_config"], "num_workers": 0, "checkpoint_every": 3}}
    assert spec_from_json(edited).run_cfg.checkpoint_every == 3
    assert spec_from_json(spec_json).config_hash == spec_json["config_hash"]


def test_run_one_refuses_an_edited_spec_and_writes_nothing(spec_json, tmp_path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**spec_json, "run_config": {**spec_json["run_config"], "n_samples": 1}}))
    res = CliRunner().invoke(app, ["run-one", "--spec", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    line = " ".join(res.output.split())
    assert f"--spec {path}: spec: run_config.n_samples is 1" in line and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


# item 15
@pytest.mark.parametrize("seeds", ["18446744073709551617", "-1", "0,9223372036854775808"])
def test_seed_out_of_range_refused_by_plan(toy_preset, seeds) -> None:
    res = CliRunner().invoke(app, ["plan", "--methods", "toy", "--dataset", "toyset", "--preset", toy_preset,
                                   "--seeds", seeds, "--json"])
    assert res.exit_code == 2 and "out of range; use integers 0..9223372036854775807" in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_largest_seed_is_planned(toy_preset) -> None:
    assert plan_grid("toy", "toyset", [2**63 - 1], toy_preset).specs[0].seed == 2**63 - 1


# item 20
def test_training_split_of_one_case_refused_while_planning(tmp_path, monkeypatch) -> None:
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("MRSEG_BENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "d"
    rows = ["case,group,split"]
    for i, split in enumerate(["train", "val", "test", "test"]):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / "images" / f"c{i}.png")
        m = np.zeros((16, 16), np.uint8)
        m[4:9, 4:9] = 1
        for r in ("a", "b"):
            (root / "masks" / r).mkdir(parents=True, exist_ok=True)
            Image.fromarray(m).save(root / "masks" / r / f"c{i}.png")
        rows.append(f"c{i},g{i},{split}")
    (root / "cases.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", "--methods", "unet", "--dataset", "folder", "--data-root", str(root),
                                   "--preset", "smoke", "--out", str(out), "--quiet", "--no-report"])
    assert res.exit_code == 2, res.output
    assert "the training split has 1 case(s); at least 2 are needed" in " ".join(res.output.split())
    assert not out.exists()


# item 17
def test_spec_file_is_read_with_a_size_limit(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("mrseg_bench.cli.MAX_SPEC_BYTES", 1 << 16, raising=False)
    res = CliRunner().invoke(app, ["run-one", "--spec", "/dev/zero", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "--spec /dev/zero: larger than" in " ".join(res.output.split())
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * (1 << 16) + "0]")
    res = CliRunner().invoke(app, ["run-one", "--spec", str(big), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and f"--spec {big}: larger than" in " ".join(res.output.split())


# item 10 (the cause is fixed by the run-pipeline change)
@pytest.mark.slow
def test_run_with_experiment_name_writes_its_report(toy_preset, tmp_path) -> None:
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", "--methods", "toy", "--dataset", "toyset", "--preset", toy_preset,
                                   "--experiment", "X", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert list(Path(out).rglob("report.md")), res.output


def test_spec_with_a_huge_seed_is_refused(spec_json) -> None:
    with pytest.raises(UsageError, match=r"spec: seed 1180591620717411303424 is out of range"):
        config = {**spec_json["config"], "seed": 2**70}  # consistent, hash recomputed: only the range is wrong
        spec_from_json({**spec_json, "seed": 2**70, "config": config, "config_hash": config_hash(config),
                        "run_dir": None})
