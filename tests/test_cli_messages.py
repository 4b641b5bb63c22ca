"""Error messages finish their sentence: the whole expected layout, every folder problem up to
a limit then "... and K more", "--data-root ... is required" instead of ``None:``, and "did you
mean" for a mistyped method name."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.datasets.folder import MAX_LISTED


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_missing_data_root_prints_the_whole_layout(tmp_path):
    res = _invoke("run", "--methods", "dpersona", "--dataset", "lidc", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    text = res.output
    assert "expected layout:" in text and "data_lidc.hdf5" in text and "pass the file itself as root" in text
    assert not (tmp_path / "o").exists()


def test_folder_problems_are_listed_up_to_a_limit(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    raters = [f"r{k:02d}" for k in range(MAX_LISTED + 3)]
    (root / "dataset.json").write_text(json.dumps({"raters": raters}))
    res = _invoke("run", "--methods", "dpersona", "--dataset", "folder", "--data-root", str(root),
                  "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    listed = [line for line in res.output.splitlines()[1:] if "does not exist" in line or "no image files" in line]
    assert len(listed) == MAX_LISTED
    assert f"... and {MAX_LISTED + 4 - MAX_LISTED} more" in res.output  # 13 raters + "no image files"


def test_data_check_without_a_root_says_it_is_required(tmp_path):
    res = _invoke("data", "check", "--dataset", "folder")
    assert res.exit_code == 2
    assert "--data-root: is required for dataset 'folder'" in res.output and "None" not in res.output


def test_unknown_method_suggests_the_close_name(tmp_path):
    res = _invoke("run", "--methods", "dpersonna", "--preset", "smoke", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "unknown method 'dpersonna' (did you mean 'dpersona'?)" in res.output
    res = _invoke("run", "--methods", "zzzz", "--preset", "smoke", "--out", str(tmp_path / "o"))
    assert "did you mean" not in res.output and "unknown method 'zzzz'" in res.output


def test_grid_total_line():
    from types import SimpleNamespace

    from mrseg_bench.progress import duration, grid_total

    assert [duration(s) for s in (4.4, 185, 3725)] == ["4s", "3m 05s", "1h 02m"]
    runs = [SimpleNamespace(status=s) for s in ("done", "done", "skipped")]
    assert grid_total(runs, 185) == "grid: 3 run(s) in 3m 05s (2 done, 1 skipped)"


def test_run_leaves_no_wal_files(tmp_path):
    from report_stores import write_run

    store = tmp_path / "s.sqlite"
    write_run(store, "dpersona", 0)
    res = _invoke("report", "--store", str(store), "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s.sqlite")) == ["s.sqlite"]


def test_list_shows_dataset_facts_and_clean_descriptions():
    res = _invoke("list")
    assert res.exit_code == 0
    lidc = next(line for line in res.output.splitlines() if "│ lidc" in line)
    assert "anonymous" in lidc and "4" in lidc
    assert "``" not in res.output and "module docstring" not in res.output


def test_data_check_synthetic_says_which_configuration_it_describes():
    from mrseg_bench.dataset_facts import preset_note

    note = preset_note("synthetic", {})
    assert note.startswith("note: this describes the dataset's own defaults, not a preset's")
    assert "default: image_size=64, num_cases=120" in note
    assert preset_note("no-such-dataset", {}) == ""
