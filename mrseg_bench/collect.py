"""The results store as an index of the run folders.

``collect(out, store_path)`` reads every ``result.json`` under ``out`` (``run_folder``) and writes
each into the store (``ResultsStore.write_run``: one transaction per run, replacing the rows of
the same run id, and older runs of the same config hash as the store's rules say). Running it
again changes nothing, so a lost or corrupt store costs nothing: delete it and collect again.
Rows of the store that no folder holds are left alone. A result file that cannot be read or
indexed (bad JSON, a value the store's columns refuse) is skipped and named in
``CollectReport.errors`` (one line each); the others are indexed.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .run_folder import RESULT_FILE, is_run_folder, read_result
from .store import RUN_COLUMNS, ResultsStore


@dataclass
class CollectReport:
    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # one line per unreadable result file

    @property
    def runs(self) -> int:
        return self.done + self.failed


def index_result(store: ResultsStore, result: dict[str, Any]) -> str:
    """Write one result (``read_result``'s dict) into ``store``; returns the run id. Run-row
    keys the store does not know (a newer writer) are kept in the file and left out here."""
    run = {k: v for k, v in result["run"].items() if k in RUN_COLUMNS}
    profile = [{**p, "value": math.nan if p.get("value") is None else p["value"]} for p in result["profile"]]
    return store.write_run(run, result["metrics"], profile)


def result_files(out: str | Path) -> list[Path]:
    """Every run folder's result file under ``out`` (staging and replaced folders left out)."""
    return sorted(p for p in Path(out).rglob(RESULT_FILE)
                  if all(is_run_folder(Path(part)) for part in p.relative_to(out).parent.parts))


def collect(out: str | Path, store_path: str | Path) -> CollectReport:
    """Index every run folder under ``out`` into the store at ``store_path`` (idempotent).
    Results are written oldest first, so the newest run of a config hash wins."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"--out {out}: no such folder")
    report = CollectReport()
    results = []
    for path in result_files(out):
        try:
            results.append((path, read_result(path)))
        except ValueError as exc:
            report.errors.append(str(exc))
    results.sort(key=lambda pr: (str(pr[1]["run"].get("finished_at") or ""), str(pr[1]["run"]["run_id"])))
    with ResultsStore(store_path) as store:
        for path, res in results:
            try:
                index_result(store, res)
            except (ValueError, TypeError, OverflowError, KeyError, sqlite3.InterfaceError) as exc:
                report.errors.append(f"{path}: not indexed: {' '.join(str(exc).split())[:200]}")
                continue
            if res["run"]["status"] == "done":
                report.done += 1
            else:
                report.failed += 1
    return report
