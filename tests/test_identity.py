"""Run identity: data fingerprints (and their cache), code identity, experiments, --reuse-results."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import test_engine_toys as toys
from test_datasets_lidc import _cases, _write
from test_datasets_qubiq import _box, _case, _nii

from mrseg_bench import identity
from mrseg_bench.executors.grid import run_grid
from mrseg_bench.registry import DATASETS
from mrseg_bench.run.overrides import UsageError
from mrseg_bench.run.plan import plan_grid
from mrseg_bench.store import ResultsStore

PRESET = toys.preset_toml("lidc", description="toy preset on lidc", image_size=16, profile=False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own fingerprint cache (never the user's)."""
    monkeypatch.setenv("MRSEG_BENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def toy_lidc(tmp_path):
    preset = tmp_path / "toy.toml"
    preset.write_text(PRESET)
    data = tmp_path / "lidc"
    data.mkdir()
    _write(data / "data_lidc.pickle", _cases(n=16))
    with toys.registered():
        yield str(preset), data


def _qubiq(root: Path, rows: int = 3) -> Path:
    for i in range(3):
        _case(root / "brain-growth" / "Training" / f"case{i:02d}", np.random.default_rng(i).random((12, 12)),
              {(1, 1): _box(12, rows + i), (1, 2): _box(12, rows)})
    return root


# -- data fingerprint ---------------------------------------------------------------------------
def test_fingerprint_follows_file_content_names_and_sizes(tmp_path):
    qubiq = DATASETS.get("qubiq")
    a = _qubiq(tmp_path / "a")
    ds = qubiq(a, image_size=None)
    assert len(ds.files()) == 9 and all(p.is_file() for p in ds.files())  # 3 images + 6 rater masks
    manifest = identity.data_manifest(ds)["files"]
    assert [r[0] for r in manifest][:3] == ["case00/image.nii.gz", "case00/task01_seg01.nii.gz",
                                            "case00/task01_seg02.nii.gz"]
    fp = identity.data_fingerprint(ds)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert identity.data_fingerprint(qubiq(b, image_size=None)) == fp  # a copy: same data, same fingerprint
    _nii(b / "brain-growth" / "Training" / "case01" / "task01_seg01.nii.gz", _box(12, 7))  # one rater's mask
    assert identity.data_fingerprint(qubiq(b, image_size=None)) != fp
    c = tmp_path / "c"
    shutil.copytree(a, c)
    (c / "brain-growth" / "Training" / "case02").rename(c / "brain-growth" / "Training" / "case09")
    assert identity.data_fingerprint(qubiq(c, image_size=None)) != fp  # same bytes, other names


def test_fingerprint_of_pickle_and_synthetic(tmp_path):
    lidc, syn = DATASETS.get("lidc"), DATASETS.get("synthetic")
    f = _write(tmp_path / "data_lidc.pickle", _cases())
    fp = identity.data_fingerprint(lidc(tmp_path, image_size=16))
    assert fp == identity.data_fingerprint(lidc(f, image_size=32))  # the file, not the options
    _write(f, _cases(seed=1))
    assert identity.data_fingerprint(lidc(f, image_size=16)) != fp
    # the synthetic set has no files: its generator parameters are the fingerprint
    base = identity.data_fingerprint(syn(num_cases=8, image_size=16))
    assert base == identity.data_fingerprint(syn(num_cases=8, image_size=16, cache=False))
    for other in (dict(num_cases=9), dict(seed=1), dict(num_raters=3), dict(image_size=32)):
        assert identity.data_fingerprint(syn(**{"num_cases": 8, "image_size": 16, **other})) != base, other


def test_file_hashes_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "big.bin"
    f.write_bytes(b"x" * 1000)
    reads = []
    real = identity._sha256_file
    monkeypatch.setattr(identity, "_sha256_file", lambda p: reads.append(p) or real(p))
    first = identity.file_digests([f])
    assert identity.file_digests([f]) == first and len(reads) == 1  # second call: from the cache
    cached = json.loads((tmp_path / "cache" / "fingerprints.json").read_text())
    assert cached[str(f.resolve())]["sha256"] == first[f.resolve()][1]
    st = f.stat()
    f.write_bytes(b"y" * 1000)  # same size, new content; set a new mtime explicitly
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert identity.file_digests([f]) != first and len(reads) == 2
    (tmp_path / "cache" / "fingerprints.json").write_text("{not json")  # a broken cache is ignored
    assert identity.file_digests([f])[f.resolve()][0] == 1000 and len(reads) == 3


def test_code_identity_and_source_hash(tmp_path):
    code = identity.code_identity()
    assert set(code) == {"package_version", "git_commit", "git_dirty", "source_sha256"}
    assert code["git_commit"] is None or len(code["git_commit"]) == 40
    if code["git_commit"] is None or code["git_dirty"]:
        assert len(code["source_sha256"]) == 64
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.toml").write_text("y = 2\n")
    h = identity.source_sha256(pkg)
    (pkg / "notes.txt").write_text("ignored")
    assert identity.source_sha256(pkg) == h
    (pkg / "sub" / "b.toml").write_text("y = 3\n")
    assert identity.source_sha256(pkg) != h


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", "..", "x..y", "/abs", "tab\there", "nul\x00"])
def test_bad_experiment_names_are_usage_errors(toy_lidc, name):
    preset, data = toy_lidc
    with pytest.raises(UsageError, match="--experiment"):
        plan_grid("toy", "lidc", [0], preset, data_root=data, experiment=name)


def test_experiment_labels_the_grid_and_its_folders(toy_lidc, tmp_path):
    preset, data = toy_lidc
    default = plan_grid("toy", "lidc", [0], preset, data_root=data).specs[0]
    named = plan_grid("toy", "lidc", [0], preset, data_root=data, experiment="beta-sweep").specs[0]
    assert default.experiment == preset and named.experiment == "beta-sweep"
    assert named.run_dir(tmp_path).parent == tmp_path / "lidc" / "toy"
    assert named.run_dir(tmp_path).name == f"beta-sweep_seed0_{named.config_hash[:8]}"
    assert named.config_hash != default.config_hash and named.config["experiment"] == "beta-sweep"
    # the built-in presets' names are theirs: another grid may not take them
    with pytest.raises(UsageError, match="'smoke' is the name of a built-in preset"):
        plan_grid("toy", "lidc", [0], preset, data_root=data, experiment="smoke")
    # every part of the identity is in the hashed config
    for key in ("method_config", "dataset_options", "data_fingerprint", "run", "device_type", "precision",
                "protocol", "convention", "code", "experiment", "preset", "seed"):
        assert key in default.config, key
    assert default.config["code"] == identity.hashed_code(identity.code_identity())  # version + source hash
    assert default.code == identity.code_identity()  # the whole identity is stored with the run
    conv = plan_grid("toy", "lidc", [0], preset, ["run.convention=dpersona"], data_root=data).specs[0]
    assert conv.config_hash != default.config_hash and conv.overrides == {"run.convention": "dpersona"}


def test_synthetic_generator_version_and_knobs_are_in_the_run_identity(tmp_path):
    preset = tmp_path / "toy.toml"
    preset.write_text(toys.preset_toml("synthetic", description="toy synthetic", num_cases=12, image_size=32,
                                       profile=False))
    with toys.registered():
        specs = {name: plan_grid("toy", "synthetic", [0], str(preset), sets).specs[0] for name, sets in (
            ("v1", []), ("v2", ["dataset.version=2"]), ("v2 faint", ["dataset.version=2", "dataset.contrast=0.5"]),
            ("v2 again", ["dataset.version=2"]))}
        with pytest.raises(UsageError, match="contrast apply to version 2 only"):
            plan_grid("toy", "synthetic", [0], str(preset), ["dataset.contrast=0.5"])
    v1, v2, faint = specs["v1"], specs["v2"], specs["v2 faint"]
    assert len({v1.data_fingerprint, v2.data_fingerprint, faint.data_fingerprint}) == 3
    assert len({v1.config_hash, v2.config_hash, faint.config_hash}) == 3
    assert specs["v2 again"].config_hash == v2.config_hash  # the same options: the same run
    assert v2.overrides == {"dataset.version": 2}
    assert v2.config["dataset_options"]["version"] == 2 and faint.config["dataset_options"]["contrast"] == 0.5


def test_experiment_slug():
    assert identity.experiment_slug("smoke") == "smoke"
    assert identity.experiment_slug("beta-sweep_2.v1") == "beta-sweep_2.v1"
    assert identity.experiment_slug("smoke.toml").startswith("smoke-")  # a preset path, never "smoke"
    slug = identity.experiment_slug("presets/ci.toml")
    assert slug.startswith("ci-") and len(slug) == 9 and slug != identity.experiment_slug("other/ci.toml")
    assert "/" not in identity.experiment_slug("../../etc/passwd") and ".." not in identity.experiment_slug("..")


# -- reruns ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rerun_on_modified_data_copy_is_not_skipped(toy_lidc, tmp_path):
    preset, data = toy_lidc
    out, store = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
    first = run_grid(plan_grid("toy", "lidc", [0], preset, data_root=data), out, store)
    assert [o.status for o in first] == ["done"]
    copy = tmp_path / "lidc_copy"
    shutil.copytree(data, copy)
    # an unmodified copy is the same data: skipped
    assert [o.status for o in run_grid(plan_grid("toy", "lidc", [0], preset, data_root=copy), out, store)] == [
        "skipped"]
    cases = _cases(n=16)
    cases["slice03"]["masks"][1][5, 5] = 1  # one pixel of one rater's mask
    _write(copy / "data_lidc.pickle", cases)
    plan = plan_grid("toy", "lidc", [0], preset, data_root=copy)
    assert plan.specs[0].config_hash != first[0].spec.config_hash
    second = run_grid(plan, out, store)
    assert [o.status for o in second] == ["done"] and second[0].run_dir != first[0].run_dir
    with ResultsStore(store) as st:
        runs = st.runs().set_index("run_id")
        fps = runs["data_fingerprint"].tolist()
        assert len(runs) == 2 and len(set(fps)) == 2 and all(f.startswith("sha256:") for f in fps)
        assert set(runs["experiment"]) == {preset}
        code = json.loads(runs.loc[second[0].run_id, "code_json"])
        assert code == identity.code_identity()
        cfg = json.loads(runs.loc[second[0].run_id, "config_json"])
        assert cfg["data_fingerprint"] == plan.specs[0].data_fingerprint and cfg["code"] == identity.hashed_code(code)


@pytest.mark.slow
def test_changed_code_reruns_unless_reuse_results(toy_lidc, tmp_path, monkeypatch):
    preset, data = toy_lidc
    out, store = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
    first = run_grid(plan_grid("toy", "lidc", [0], preset, data_root=data), out, store)
    assert [o.status for o in first] == ["done"]
    old = identity.code_identity()
    new = {**old, "git_commit": "f" * 40, "git_dirty": False, "source_sha256": None}
    monkeypatch.setattr(identity, "code_identity", lambda refresh=False: dict(new))
    plan = plan_grid("toy", "lidc", [0], preset, data_root=data)
    assert plan.specs[0].config_hash != first[0].spec.config_hash
    assert plan.specs[0].reuse_hash == first[0].spec.reuse_hash
    reused = run_grid(plan, out, store, reuse_results=True)
    assert [(o.status, o.run_id) for o in reused] == [("skipped", first[0].run_id)]
    # --reuse-results ignores the code only: another setting is still a new run
    other = plan_grid("toy", "lidc", [0], preset, ["width=5"], data_root=data)
    other_run = run_grid(other, out, store, reuse_results=True)
    assert [o.status for o in other_run] == ["done"]
    again = run_grid(plan, out, store)  # without --reuse-results the new code trains again
    assert [o.status for o in again] == ["done"] and again[0].run_id != first[0].run_id
    with ResultsStore(store) as st:
        sel = st.select_runs()
        # the rerun on new code replaces the old code's row of that config in the selection
        assert sorted(sel["run_id"]) == sorted([again[0].run_id, other_run[0].run_id])
        assert json.loads(sel.set_index("run_id").loc[again[0].run_id, "code_json"])["git_commit"] == "f" * 40
        labels = dict(zip(sel["run_id"], sel["overrides_json"], strict=True))
        assert labels == {again[0].run_id: "{}", other_run[0].run_id: '{"width": 5}'}


USER_SMOKE = """
description = "a user's own smoke.toml: must never pass for the built-in smoke preset"
[run]
batch_size = 4
n_samples = 2
val_n_samples = 2
profile = false
device = "cpu"
[dataset.toyset]
num_cases = 12
[method."toy*"]
epochs = 2
stage2_epochs = 1
"""


@pytest.mark.slow
def test_user_smoke_toml_never_replaces_builtin_smoke_results(tmp_path, monkeypatch):
    """Issue 12.8: a user preset file named smoke.toml took the built-in preset's name."""
    from mrseg_bench.reports.check import current_values

    toys.register()
    try:
        monkeypatch.chdir(tmp_path)
        Path("smoke.toml").write_text(USER_SMOKE)
        out, store = tmp_path / "runs", tmp_path / "runs" / "results.sqlite"
        builtin = plan_grid("toy", "toyset", [0], "smoke",
                            ["dataset.num_cases=12", "run.profile=false", "run.device=cpu"])
        user = plan_grid("toy", "toyset", [0], "smoke.toml")
        assert (builtin.specs[0].experiment, user.specs[0].experiment) == ("smoke", "smoke.toml")
        assert user.specs[0].preset == "smoke.toml" and builtin.specs[0].preset == "smoke"
        a = run_grid(builtin, out, store)[0]
        b = run_grid(user, out, store)[0]
        assert (a.status, b.status) == ("done", "done")
        assert a.run_dir.name.startswith("smoke_seed0_") and b.run_dir.name.startswith("smoke-")
        assert a.run_dir != b.run_dir and (a.run_dir / "metrics.csv").is_file()
        with ResultsStore(store, readonly=True) as st:
            with pytest.raises(ValueError, match=r"several experiments.*'smoke' \(1 run\), 'smoke.toml' \(1 run\)"):
                st.select_runs()
            assert st.select_runs("smoke")["run_id"].tolist() == [a.run_id]
            assert st.select_runs("smoke.toml")["run_id"].tolist() == [b.run_id]
            ged_a = st.metrics([a.run_id]).query("metric == 'ged'")["value"].mean()
        # the regression gate's "smoke" values are the built-in run's, not the user's
        entries, _ = current_values(store)
        smoke = [e for e in entries if e["preset"] == "smoke" and e["metric"] == "ged"]
        assert [e["value"] for e in smoke] == [pytest.approx(ged_a)]
    finally:
        toys.unregister()
