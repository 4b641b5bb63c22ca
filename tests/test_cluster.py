"""The grid on real engines: a local Ray cluster and submitit's local executor (the Slurm path).

Marked ``cluster`` (they need the ``ray`` / ``slurm`` extras; tox's ``cluster`` env installs them).
Each runs the CLI in a subprocess, exactly as the README's cluster examples do, and compares the
collected metrics with a ``--executor local`` run of the same specs, value for value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrseg_bench.store import ResultsStore

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
GRID = ["--methods", "dpersona,probunet,fusion.soft", "--preset", "smoke", "--seeds", "0,1"]


def _cli(*args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
           "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    return subprocess.run([sys.executable, "-m", "mrseg_bench.cli", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def _metrics(store: Path):
    cols = ["method", "seed", "case_id", "metric", "rater"]
    with ResultsStore(store, readonly=True) as st:
        runs = st.runs("done")[["run_id", "method", "seed", "config_hash"]]
        m = st.metrics().merge(runs, on="run_id")
    return runs, m.sort_values(cols).reset_index(drop=True)[[*cols, "value"]]


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    res = _cli("run", *GRID, "--out", str(out), "--quiet", "--no-report")
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_ray_grid_equals_the_local_grid(local_grid, tmp_path):
    pytest.importorskip("ray", reason='needs the ray extra: pip install "mrseg-bench[ray]"')
    out = tmp_path / "ray"
    res = _cli("run", *GRID, "--out", str(out), "--executor", "ray", "--ray-num-cpus", "1", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    runs_l, m_l = _metrics(local_grid / "results.sqlite")
    runs_r, m_r = _metrics(out / "results.sqlite")
    assert len(runs_r) == 6 and set(runs_r["config_hash"]) == set(runs_l["config_hash"])
    assert len(m_r) > 0 and m_r.equals(m_l)  # value for value
    assert (out / "report" / "tables.tex").exists()  # the same collect + report at the end
    # a rerun skips every run (done in its folder), on the engine too
    again = _cli("run", *GRID, "--out", str(out), "--executor", "ray", "--quiet", "--no-report")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(_metrics(out / "results.sqlite")[0]) == 6


def test_slurm_path_through_submitit_local(local_grid, tmp_path):
    pytest.importorskip("submitit", reason='needs the slurm extra: pip install "mrseg-bench[slurm]"')
    out = tmp_path / "slurm"
    grid = ["--methods", "fusion.soft", "--preset", "smoke", "--seeds", "0,1"]
    res = _cli("run", *grid, "--out", str(out), "--executor", "slurm", "--slurm-cluster", "local",
               "--slurm-time", "0:10:00", "--quiet", "--no-report")
    assert res.returncode == 0, res.stdout + res.stderr
    runs_s, m_s = _metrics(out / "results.sqlite")
    runs_l, m_l = _metrics(local_grid / "results.sqlite")
    assert len(runs_s) == 2
    m_l = m_l[m_l["method"] == "fusion.soft"].reset_index(drop=True)
    assert len(m_s) > 0 and m_s.equals(m_l)
    assert list((out / ".submitit").iterdir())  # submitit's job folders, under --out


def test_engine_flags_are_validated_before_anything_runs(tmp_path):
    out = tmp_path / "x"
    for args, msg in ((["--executor", "dask"], "choose one of local, ray, slurm"),
                      (["--executor", "slurm", "--slurm-time", "soon"], "--slurm-time"),
                      (["--executor", "ray", "--ray-num-cpus", "0"], "--ray-num-cpus")):
        res = _cli("run", *GRID, "--out", str(out), *args)
        assert res.returncode == 2 and msg in res.stderr, res.stderr
    assert not out.exists()


def test_tune_on_a_local_ray_cluster(tmp_path):
    pytest.importorskip("ray", reason='needs the ray extra: pip install "mrseg-bench[ray]"')
    import csv

    import optuna

    from mrseg_bench.presets import load_preset
    from mrseg_bench.tune.study import open_storage

    out = tmp_path / "ray"
    res = _cli("tune", "--methods", "unet", "--preset", "smoke", "--trials", "2", "--batch", "2", "--out", str(out),
               "--executor", "ray", "--ray-num-cpus", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    folder = out / "tune-smoke" / "tune"
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [(r["method"], r["state"]) for r in rows] == [("unet", "complete")] * 2
    assert all((Path(r["run_dir"]) / "result.json").exists() for r in rows)
    # each Ray task reported its run's per-epoch validation value to the shared journal
    study = optuna.load_study(study_name="unet", storage=open_storage(folder / "journal.log"))
    assert [sorted(t.intermediate_values) for t in study.trials] == [[0], [0]]
    assert load_preset(str(folder / "best.toml")).method["unet"]["lr"] in {t.params["lr"] for t in study.trials}
    assert (folder / "objective.png").stat().st_size > 0
