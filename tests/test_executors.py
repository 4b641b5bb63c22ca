"""Executors on their real engines (local Ray cluster, submitit's local executor) with a toy worker.

The end-to-end grid (real runs through ``run_spec``) is in tests/test_cluster.py.
"""

from __future__ import annotations

import json

import pytest

from mrseg_bench.executors import ExecutorOptions, RayOptions, SlurmOptions, execute

TOY = "mrseg_bench.executors.testing:echo_worker"
SPECS = [{"name": "a"}, {"name": "b", "fail": True}, {"name": "c"}]


def _check(outcomes, tmp_path):
    assert [o.spec["name"] for o in outcomes] == ["a", "b", "c"]
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert "boom in b" in outcomes[1].error
    for name in ("a", "c"):
        assert json.loads((tmp_path / f"{name}.json").read_text())["spec"]["name"] == name
    assert not (tmp_path / "b.json").exists()


def test_local_executor_runs_each_spec_and_records_failures(tmp_path):
    seen = []
    outcomes = execute("local", SPECS, tmp_path, ExecutorOptions(worker=TOY), progress=seen.append)
    _check(outcomes, tmp_path)
    assert len(seen) == 3


def test_unknown_executor_and_bad_worker_fail_before_submitting(tmp_path):
    with pytest.raises(ValueError, match="choose one of local, ray, slurm"):
        execute("dask", SPECS, tmp_path, ExecutorOptions(worker=TOY))
    with pytest.raises(ValueError, match="nosuch"):
        execute("local", SPECS, tmp_path, ExecutorOptions(worker="mrseg_bench.executors.testing:nosuch"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.cluster
def test_ray_executor_on_a_local_cluster(tmp_path):
    ray = pytest.importorskip("ray", reason='needs the ray extra: pip install "mrseg-bench[ray]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        seen = []
        outcomes = execute("ray", SPECS, tmp_path, ExecutorOptions(worker=TOY, ray=RayOptions(num_cpus=1)), progress=seen.append)
        _check(outcomes, tmp_path)
        assert len(seen) == 3
        pids = {json.loads((tmp_path / f"{n}.json").read_text())["pid"] for n in ("a", "c")}
        import os

        assert os.getpid() not in pids  # the runs executed in Ray's worker processes
    finally:
        ray.shutdown()


@pytest.mark.cluster
def test_slurm_executor_through_submitit_local(tmp_path):
    pytest.importorskip("submitit", reason='needs the slurm extra: pip install "mrseg-bench[slurm]"')
    opts = ExecutorOptions(worker=TOY, slurm=SlurmOptions(cluster="local", time_min=5))
    outcomes = execute("slurm", SPECS, tmp_path, opts)
    _check(outcomes, tmp_path)
    assert (tmp_path / ".submitit").is_dir()  # submitit's job folders live under out


def test_slurm_executor_without_slurm_says_so(tmp_path):
    submitit = pytest.importorskip("submitit", reason='needs the slurm extra')
    if submitit.AutoExecutor.which() == "slurm":
        pytest.skip("this machine has Slurm")
    with pytest.raises(ValueError, match="no Slurm found"):
        execute("slurm", SPECS, tmp_path, ExecutorOptions(worker=TOY))
