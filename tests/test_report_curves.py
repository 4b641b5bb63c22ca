"""Learning curves (reports/curves.py): best epoch from result.json or the log, torn lines
skipped, one figure per method in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mrseg_bench.reports.curves import _frame, best_epochs, learning_curves, read_log
from mrseg_bench.reports.demo import write_demo_store
from mrseg_bench.reports.report import write_report


def _log(stage1: list[float], stage2: list[float] | None = None, metric: str = "dice_match",
         mode: str = "max") -> list[dict]:
    out = [{"stage": "stage1", "epoch": e, "train_loss": 1.0 - 0.1 * e, "val_loss": 0.9 - 0.05 * e,
            "select": metric, "select_mode": mode, f"val_{metric}": v} for e, v in enumerate(stage1)]
    out += [{"stage": "stage2", "epoch": e, "train_loss": 0.5, "val_loss": v, "select": "loss",
             "select_mode": "min"} for e, v in enumerate(stage2 or [])]
    return out


def _write(run_dir: Path, log: list[dict], selection: dict | None = None, torn: bool = False) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in log)
    if torn:
        text += '{"stage": "stage1", "epo'
    (run_dir / "train_log.jsonl").write_text(text)
    if selection is not None:
        (run_dir / "result.json").write_text(json.dumps({"selection": selection}))


def test_best_epochs_from_the_log_and_from_result_json(tmp_path):
    log = _log([0.2, 0.6, 0.5], [0.30, 0.25, 0.27])
    assert best_epochs(log, {}) == {"stage1": 1, "stage2": 1}  # max dice_match, min loss
    assert best_epochs(_log([0.3, 0.1, 0.2], metric="ged", mode="min"), {}) == {"stage1": 1}
    # the recorded selection wins (e.g. a later epoch tied)
    assert best_epochs(log, {"stage1": {"epoch": 2}}) == {"stage1": 2, "stage2": 1}
    _write(tmp_path / "r", log, torn=True)
    assert len(read_log(tmp_path / "r")) == 6  # the torn last line is skipped
    assert read_log(tmp_path / "missing") == []
    frame = _frame(log)
    assert frame["x"].tolist() == [0, 1, 2, 3, 4, 5]  # stage 2 continues after stage 1's epochs
    assert frame["val_select"].tolist()[:3] == [0.2, 0.6, 0.5]


def test_learning_curves_one_figure_per_method_with_a_log(tmp_path):
    runs = pd.DataFrame({"row": ["a", "a", "b", "c"], "seed": [0, 1, 0, 0],
                         "run_dir": [str(tmp_path / "a0"), str(tmp_path / "a1"), str(tmp_path / "b0"), ""]})
    _write(tmp_path / "a0", _log([0.2, 0.6], [0.3, 0.2]), {"stage1": {"epoch": 1}})
    _write(tmp_path / "a1", _log([0.3, 0.5], [0.3, 0.35]))
    _write(tmp_path / "b0", _log([0.1, 0.4, 0.2], metric="ged", mode="min"))
    paths = learning_curves(runs, ["a", "b", "c"], tmp_path / "out" / "g_curves", title="t")
    assert sorted(p.name for p in paths) == ["g_curves_a.pdf", "g_curves_a.png", "g_curves_b.pdf", "g_curves_b.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.slow
def test_report_links_the_curves(tmp_path):
    store = write_demo_store(tmp_path / "results.sqlite", methods=("dpersona", "probunet"), run_dir=tmp_path / "runs")
    for method in ("dpersona", "probunet"):
        for seed in (0, 1):
            _write(tmp_path / "runs" / f"{method}-synthetic-smoke-s{seed}", _log([0.2 + 0.1 * seed, 0.5]))
    paths = write_report(store, tmp_path / "out")
    names = {p.name for p in paths}
    assert {"synthetic_smoke_curves_dpersona.png", "synthetic_smoke_curves_probunet.pdf"} <= names
    md = (tmp_path / "out" / "report.md").read_text()
    assert "### Learning curves" in md and "(synthetic_smoke_curves_probunet.png)" in md
