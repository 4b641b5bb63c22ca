"""collect and the store against bad result files, and the store file's mode."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.collect import collect
from mrseg_bench.run_folder import write_result
from mrseg_bench.store import ResultsStore


def _good(out: Path, name: str, seed: int = 0) -> Path:
    run = {"run_id": f"{name}-id", "config_hash": f"hash-{name}", "status": "done", "method": "m",
           "dataset": "d", "seed": seed, "finished_at": f"2026-01-0{seed + 1}T00:00:00Z"}
    metrics = [{"case_id": "c1", "metric": "dice", "rater": 0, "value": 0.5}]
    profile = [{"name": "params", "value": 10.0, "unit": "count"}]
    (out / "d" / "m" / name).mkdir(parents=True)
    write_result(out / "d" / "m" / name, run, metrics, profile)
    return out / "d" / "m" / name / "result.json"


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


BAD = {
    "rater_text": lambda d: d["metrics"][0].update(rater="abc"),
    "unit_list": lambda d: d["profile"][0].update(unit=["s"]),
    "seed_2_70": lambda d: d["run"].update(seed=2**70),
    "value_bool_rater": lambda d: d["metrics"][0].update(rater=True),
}


# item 5
@pytest.mark.parametrize("kind", sorted(BAD))
def test_one_bad_result_is_skipped_named_and_the_rest_indexed(tmp_path, kind) -> None:
    out = tmp_path / "runs"
    _good(out, "a_seed0", 0)
    bad = _good(out, "b_seed1", 1)
    _good(out, "c_seed2", 2)
    _edit(bad, BAD[kind])
    rep = collect(out, tmp_path / "s.sqlite")
    assert rep.done == 2 and len(rep.errors) == 1 and str(bad) in rep.errors[0]
    with ResultsStore(tmp_path / "s.sqlite", readonly=True) as st:
        assert sorted(st.runs()["run_id"]) == ["a_seed0-id", "c_seed2-id"]
        assert len(st.metrics()) == 2  # nothing of the bad run was half-written


def test_deeply_nested_result_is_skipped_in_one_line(tmp_path) -> None:
    out = tmp_path / "runs"
    _good(out, "a_seed0", 0)
    deep = out / "d" / "m" / "deep" / "result.json"
    deep.parent.mkdir(parents=True)
    deep.write_text('{"schema": 1, "run": ' + "[" * 200_000 + "]" * 200_000 + "}")
    res = CliRunner().invoke(app, ["collect", "--out", str(out), "--store", str(tmp_path / "s.sqlite")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    skipped = [ln for ln in res.output.splitlines() if ln.startswith("skipped:")]
    assert len(skipped) == 1 and str(deep) in skipped[0] and "RecursionError" in skipped[0]
    assert "collected 1 run(s)" in res.output


# item 21
@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_store_file_mode_follows_the_umask(tmp_path, umask) -> None:
    old = os.umask(umask)
    try:
        with ResultsStore(tmp_path / "r.sqlite"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "r.sqlite").stat().st_mode)
    assert mode == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".new")]
