"""Executors on their real engines (local Ray cluster, submitit's local executor) with a toy worker.

The end-to-end grid (real runs through ``run_spec``) is in tests/test_cluster.py.
"""

from __future__ import annotations

import json

import pytest

from mrseg_bench.executors import ExecutorOptions, LocalOptions, RayOptions, SlurmOptions, execute

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


def test_gpus_per_run_must_be_a_fraction_or_whole():
    from mrseg_bench.executors.ray_executor import check_gpu_share, gpu_share_ok

    assert all(gpu_share_ok(x) for x in (0, 0.25, 0.5, 1, 2, 4.0))
    assert not any(gpu_share_ok(x) for x in (-0.5, 1.5, 2.25))
    with pytest.raises(ValueError, match="--gpus-per-run 1.5: give a fraction"):
        check_gpu_share(1.5)


def test_cli_refuses_a_gpu_share_ray_cannot_take(tmp_path):
    from typer.testing import CliRunner

    from mrseg_bench.cli import app

    res = CliRunner().invoke(app, ["run", "--methods", "fusion.soft", "--executor", "ray", "--gpus-per-run", "1.5",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--gpus-per-run" in res.output and "fraction" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.cluster
def test_half_a_gpu_per_run_packs_two_runs_on_one_gpu(tmp_path):
    """A local Ray cluster with one fake GPU: at 0.5 GPU per run both runs execute at once (each
    in its own worker process, both told CUDA_VISIBLE_DEVICES=0); at 1 GPU per run one waits."""
    ray = pytest.importorskip("ray", reason='needs the ray extra: pip install "mrseg-bench[ray]"')
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        def intervals(share, out):
            out.mkdir()
            specs = [{"name": "a", "sleep": 5}, {"name": "b", "sleep": 5}]
            outcomes = execute("ray", specs, out, ExecutorOptions(worker=TOY, ray=RayOptions(num_cpus=1, num_gpus=share)))
            assert [o.status for o in outcomes] == ["done", "done"]
            return [json.loads((out / f"{n}.json").read_text()) for n in ("a", "b")]

        packed = intervals(0.5, tmp_path / "half")
        assert max(r["started"] for r in packed) < min(r["finished"] for r in packed)  # overlapped
        assert [r["cuda_visible_devices"] for r in packed] == ["0", "0"]
        assert len({r["pid"] for r in packed}) == 2  # own processes: own max_memory_allocated
        whole = intervals(1.0, tmp_path / "whole")
        first, second = sorted(whole, key=lambda r: r["started"])
        assert second["started"] >= first["finished"] - 0.05  # one GPU, one run at a time
    finally:
        ray.shutdown()


def _visible_devices_seen(out):
    return sorted(json.loads(p.read_text())["cuda_visible_devices"] for p in out.glob("*.json"))


@pytest.mark.parametrize(("one_gpu", "expected"), [(None, ["0", "1"]), (1, ["1", "1"])])
def test_jobs_place_their_worker_processes_on_the_gpus(tmp_path, monkeypatch, one_gpu, expected):
    """--jobs 2 with 2 (faked) GPUs: one worker process per GPU, or both on --one-gpu."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    specs = [{"name": n, "sleep": 1.0} for n in ("a", "b")]  # both running at once: one per process
    opts = ExecutorOptions(worker=TOY, local=LocalOptions(jobs=2, gpus=2, one_gpu=one_gpu))
    outcomes = execute("local", specs, tmp_path, opts)
    assert [o.status for o in outcomes] == ["done", "done"]
    assert _visible_devices_seen(tmp_path) == expected


def test_gpu_slots_follow_the_parent_list_and_leave_other_devices_alone(monkeypatch):
    from mrseg_bench.executors.local import gpu_slots

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert gpu_slots([{"device": "cuda"}], 3, 2) == ["4", "6", "4"]
    assert gpu_slots([{"device": "cuda"}], 2, 2, one_gpu=1) == ["6", "6"]
    assert gpu_slots([{"device": "cpu"}], 2, 2) == [None, None]
    assert gpu_slots([{"device": "cuda:1"}], 2, 2) == [None, None]  # an explicit GPU is the user's word
    assert gpu_slots([{"device": "cuda"}], 2, 0) == [None, None]
    with pytest.raises(ValueError, match="GPU 2: only 2 visible"):
        gpu_slots([{}], 2, 2, one_gpu=2)
