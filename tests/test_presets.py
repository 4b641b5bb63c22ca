"""Presets: shipped TOML files load, every key is valid for what it targets, pattern semantics."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from mrseg_bench.config import apply_overrides
from mrseg_bench.engine.run_config import RunConfig
from mrseg_bench.presets import Preset, load_preset, preset_names
from mrseg_bench.registry import DATASETS, METHODS
from mrseg_bench.run.plan import plan_grid


def test_shipped_presets():
    assert preset_names() == ["ci", "default", "paper", "smoke", "study"]
    for name in preset_names():
        p = load_preset(name)
        assert p.name == name and p.description
        apply_overrides(RunConfig(), p.run, where=f"preset {name}")  # every run key is valid


@pytest.mark.parametrize("name", ["smoke", "ci", "default", "paper", "study"])
def test_every_method_key_reaches_a_method(name):
    p = load_preset(name)
    methods = METHODS.names()
    cfgs = {m: METHODS.get(m)().cfg for m in methods}
    for pattern, values in p.method.items():
        if pattern in cfgs:  # exact: strict
            apply_overrides(cfgs[pattern], values, where=f"{name}: [method.{pattern}]")
            continue
        hits = [m for m in methods if __import__("fnmatch").fnmatchcase(m, pattern)]
        assert hits, f"{name}: [method.{pattern!r}] matches no registered method"
        for key in values:
            assert any(key in {f.name for f in dataclasses.fields(cfgs[m])} for m in hits), \
                f"{name}: [method.{pattern!r}] {key} is a field of no matched method"
        for m in hits:
            apply_overrides(cfgs[m], p.method_overrides(m, cfgs[m]), where=m)
    for ds, opts in p.dataset.items():
        params = inspect.signature(DATASETS.get(ds)).parameters
        assert set(opts) <= set(params), (name, ds, set(opts) - set(params))


def test_paper_preset_has_published_hyperparameters():
    plan = plan_grid("dpersona,probunet", "synthetic", [0], "paper", device="cpu")
    d, pu = plan.specs[0].method_obj.cfg, plan.specs[1].method_obj.cfg
    run = plan.specs[0].run_cfg
    assert (run.batch_size, run.n_samples, run.augment) == (12, 10, True)
    assert plan.datasets["synthetic"].info.image_size == (128, 128)
    assert (d.encoder_name, d.lr, d.resolved_stage1_epochs, d.resolved_stage2_epochs) == ("resnet34", 1e-4, 100, 100)
    assert (d.bank_train, d.bank_test, d.beta, d.latent_dim) == (100, 500, 0.5, 6)
    assert tuple(d.decoder_channels) == (256, 128, 64, 32, 16)
    assert (pu.encoder_name, pu.lr, pu.epochs) == ("resnet34", 1e-4, 100)


def test_study_preset_has_enough_test_cases_to_rank_methods():
    # issue 17: 4x the default's cases, so 96 test cases (the default: 24)
    plan = plan_grid("dpersona,probunet", "synthetic", [0, 1, 2], "study", device="cpu")
    split = plan.splits["synthetic"]
    assert len(split.test) == 96 and len(split.train) >= 300
    default = plan_grid("dpersona", "synthetic", [0], "default", device="cpu").splits["synthetic"]
    assert len(default.test) == 24
    assert {s.method_obj.cfg.epochs for s in plan.specs} == {20} and len(plan.specs) == 6


def test_smoke_preset_is_tiny():
    plan = plan_grid("dpersona,probunet,fusion.*,per_rater.*", "synthetic", [0], "smoke", device="cpu")
    assert plan.datasets["synthetic"].info.image_size[0] <= 64
    for spec in plan.specs:
        cfg = spec.method_obj.cfg
        assert cfg.encoder_name == "resnet18" and cfg.epochs <= 2, spec.method
        assert sum(s.epochs for s in spec.method_obj.stages()) <= 2 * len(spec.method_obj.stages())


def test_pattern_sections_are_lenient_exact_sections_strict():
    @dataclasses.dataclass
    class C:
        a: int = 0
        b: int = 0

    p = Preset("t", method={"*": {"a": 1, "zzz": 5}, "fusion.*": {"a": 2}, "fusion.x": {"b": 3}})
    assert p.method_overrides("fusion.x", C()) == {"a": 2, "b": 3}
    assert p.method_overrides("other", C()) == {"a": 1}  # zzz: not a field of C, skipped
    strict = Preset("t", method={"m": {"zzz": 1}})
    with pytest.raises(ValueError, match="unknown key.*zzz; valid: a, b"):
        apply_overrides(C(), strict.method_overrides("m", C()))


def test_load_preset_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid: ci, default, paper, smoke, study"):
        load_preset("nope")
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_preset(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nbatch_size = ")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_preset(str(bad))
    odd = tmp_path / "odd.toml"
    odd.write_text("[training]\nx = 1\n")
    with pytest.raises(ValueError, match="unknown section.*training; valid: dataset, description, method, run"):
        load_preset(str(odd))
    notab = tmp_path / "notab.toml"
    notab.write_text("[method]\ndpersona = 3\n")
    with pytest.raises(ValueError, match=r"\[method.dpersona\] must be a table"):
        load_preset(str(notab))
    ok = tmp_path / "mine.toml"
    ok.write_text('[run]\nbatch_size = 2\n[method."*"]\nepochs = 3\n')
    p = load_preset(str(ok))
    assert p.name == str(ok) and p.run == {"batch_size": 2}  # a user preset is named by its path and p.method == {"*": {"epochs": 3}}
