"""The summary `run` prints after a grid: which runs it averages, and what it says about runs that
another process held (issue 23's study, run as two processes, printed two different tables)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mrseg_bench import cli, run_folder


def _outcome(status, run_id=None, run_dir=None, config_hash="h"):
    return SimpleNamespace(status=status, run_id=run_id, run_dir=run_dir,
                           spec=SimpleNamespace(config_hash=config_hash))


@pytest.fixture
def finished_elsewhere(monkeypatch):
    """run folders 'x/finished' hold a done run of config 'h' (its id 'c'); the others nothing."""
    def done_result(run_dir, config_hash):
        ok = Path(run_dir).name == "finished" and config_hash == "h"
        return {"run": {"run_id": "c"}} if ok else None
    monkeypatch.setattr(run_folder, "done_result", done_result)


def test_finished_ids_include_runs_another_process_finished_meanwhile(finished_elsewhere):
    outcomes = [_outcome("done", "a"), _outcome("skipped", "b"),  # ran here; done before
                _outcome("skipped", None, Path("x/finished")),  # claimed elsewhere, finished since
                _outcome("skipped", None, Path("x/running")),  # claimed elsewhere, still running
                _outcome("skipped", None, Path("x/finished"), config_hash="other"),  # another config
                _outcome("failed", "f"), _outcome("cancelled", None)]
    ids, elsewhere = cli._finished_run_ids(outcomes)
    assert ids == ["a", "b", "c"]
    assert elsewhere == 2


def test_summary_table_has_a_runs_column():
    import pandas as pd
    from rich.console import Console

    from mrseg_bench.reports.summary import summary_table

    frame = pd.DataFrame({"dataset": ["synthetic"], "method": ["dpersona"], "runs": [2], "ged": [0.25]})
    console = Console(width=200, record=True)
    console.print(summary_table(frame))
    text = console.export_text()
    assert "runs = how many" in text
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    assert header.split("┃")[2].strip() == "runs"
    row = next(line for line in text.splitlines() if "dpersona" in line)
    assert [c.strip() for c in row.split("│")[1:4]] == ["dpersona", "2", "0.2500"]
