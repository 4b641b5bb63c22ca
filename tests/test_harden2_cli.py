"""check's baseline loading: wrong types, deep nesting and a folder are usage errors (exit 2, one
line naming the file), never tracebacks with the gate-failed code."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.reports.check import run_check
from mrseg_bench.reports.demo import write_demo_store


@pytest.fixture
def store(tmp_path):
    return write_demo_store(tmp_path / "r.sqlite")


@pytest.fixture
def baseline(store, tmp_path):
    path = tmp_path / "baseline.json"
    run_check(store, path, update=True)
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, ["check", *args])


def _one_line_exit_2(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    line = " ".join(res.output.split())
    assert line.startswith("error: baseline "), line
    for n in needles:
        assert n in line, line


@pytest.mark.parametrize(("key", "value", "why"), [
    ("method", ["a", "b"], "entries[0].method must be a string, not list"),
    ("seed", {"x": 1}, "entries[0].seed must be an integer, not dict"),
    ("metric", 3, "entries[0].metric must be a string, not int"),
    ("overrides", [1], "entries[0].overrides must be an object, not list"),
])
def test_baseline_entry_of_wrong_type_is_exit_2(store, baseline, key, value, why) -> None:
    data = json.loads(baseline.read_text())
    data["entries"][0][key] = value
    baseline.write_text(json.dumps(data))
    _one_line_exit_2(_invoke("--baseline", str(baseline), "--store", str(store)), str(baseline), why)


def test_deeply_nested_baseline_is_exit_2(store, tmp_path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"version": 1, "entries": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _one_line_exit_2(_invoke("--baseline", str(path), "--store", str(store)), str(path), "nested too deeply")


@pytest.mark.parametrize("update", [True, False])
def test_baseline_that_is_a_folder_is_exit_2(store, tmp_path, update) -> None:
    folder = tmp_path / "bdir"
    folder.mkdir()
    args = ["--baseline", str(folder), "--store", str(store)] + (["--update"] if update else [])
    _one_line_exit_2(_invoke(*args), str(folder), "is a folder")
    assert not any(folder.iterdir())


def test_valid_baseline_still_passes(store, baseline) -> None:
    res = _invoke("--baseline", str(baseline), "--store", str(store))
    assert res.exit_code == 0, res.output
