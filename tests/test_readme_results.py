"""scripts/readme_results.py: the README's results table from a store, and its --check mode."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from report_stores import write_run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme_results.py"


def _module():
    spec = importlib.util.spec_from_file_location("readme_results", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_from_a_store_and_check(tmp_path):
    mod = _module()
    store = tmp_path / "s.sqlite"
    for method in ("probunet", "dpersona"):
        write_run(store, method, 0)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{mod.START}\nold table\n{mod.END}\nafter\n", encoding="utf-8")
    assert mod.main(["--store", str(store), "--readme", str(readme), "--check"]) == 1
    assert mod.main(["--store", str(store), "--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method | N | GED ↓") and [r.split(" | ")[0] for r in rows[1:]] == \
        ["| dpersona", "| probunet"]  # the reference method first
    assert rows[2].split(" | ")[5] == "—"  # probunet has no per-rater heads
    assert "seed(s) 0, 4 test cases" in text and text.startswith("intro\n") and text.endswith("after\n")
    assert mod.main(["--store", str(store), "--readme", str(readme), "--check"]) == 0


def test_readme_without_markers_is_an_error(tmp_path):
    mod = _module()
    store = tmp_path / "s.sqlite"
    write_run(store, "dpersona", 0)
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n", encoding="utf-8")
    assert mod.main(["--store", str(store), "--readme", str(readme)]) == 2


def test_the_repository_readme_has_the_block():
    mod = _module()
    text = (SCRIPT.parents[1] / "README.md").read_text(encoding="utf-8")
    assert text.count(mod.START) == 1 and text.count(mod.END) == 1
    with pytest.raises(ValueError):
        mod.replace_block("x", "y")
