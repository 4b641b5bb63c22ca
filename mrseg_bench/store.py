"""The results store: one SQLite file (stdlib, WAL mode), default ``runs/results.sqlite``.

Schema (shared with ``mrseg_bench.reports``):

- ``runs``: one row per run (``run_id`` primary key, method, dataset, seed, preset, protocol,
  config JSON and hash, status ``'done'|'failed'``, error, capabilities (comma list), GED
  convention, n_samples, git commit, package version, environment JSON, run dir, ISO UTC start
  and finish times, wall seconds).
- ``metrics(run_id, case_id, metric, rater, value)``: per-case rows of ``MetricSuite.score``
  (``rater`` NULL for per-case metrics).
- ``profile(run_id, name, value, unit)``: params, flops_per_image, train_images_per_s, ...

A run is written in ONE transaction (``BEGIN IMMEDIATE``, retried while the database is locked),
so a crash leaves either the whole run or nothing, and several processes may write at once.
Writing a ``done`` run replaces every earlier run with the same config hash (a failed attempt,
or a ``--force`` rerun); writing a ``failed`` run replaces earlier failed runs of that hash only.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

DEFAULT_STORE = Path("runs/results.sqlite")

RUN_COLUMNS: dict[str, str] = {
    "run_id": "TEXT PRIMARY KEY",
    "method": "TEXT",
    "dataset": "TEXT",
    "seed": "INTEGER",
    "preset": "TEXT",
    "protocol": "TEXT",
    "config_json": "TEXT",
    "config_hash": "TEXT",
    "status": "TEXT",
    "error": "TEXT",
    "capabilities": "TEXT",
    "convention": "TEXT",
    "n_samples": "INTEGER",
    "git_commit": "TEXT",
    "package_version": "TEXT",
    "env_json": "TEXT",
    "run_dir": "TEXT",
    "started_at": "TEXT",
    "finished_at": "TEXT",
    "wall_s": "REAL",
}
METRIC_COLUMNS: dict[str, str] = {
    "run_id": "TEXT",
    "case_id": "TEXT",
    "metric": "TEXT",
    "rater": "INTEGER",
    "value": "REAL",
}
PROFILE_COLUMNS: dict[str, str] = {"run_id": "TEXT", "name": "TEXT", "value": "REAL", "unit": "TEXT"}
TABLES = {"runs": RUN_COLUMNS, "metrics": METRIC_COLUMNS, "profile": PROFILE_COLUMNS}
STATUSES = ("done", "failed")

_SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{c} {t}' for c, t in cols.items())})"
    for table, cols in TABLES.items()
] + [
    "CREATE INDEX IF NOT EXISTS runs_hash ON runs(config_hash, status)",
    "CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id)",
    "CREATE INDEX IF NOT EXISTS profile_run ON profile(run_id)",
]


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class ResultsStore:
    """``ResultsStore(path)``: open (or create) a results store.

    Raises ValueError naming the file if it exists but is not an SQLite store of this schema.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        if self.path.exists() and self.path.is_dir():
            raise ValueError(f"results store {self.path}: is a directory, expected an SQLite file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            self._retry(lambda: self._conn.execute("PRAGMA journal_mode=WAL").fetchone())
            self._conn.execute("PRAGMA foreign_keys=OFF")
            self._check_or_create()
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            raise ValueError(f"results store {self.path}: not an SQLite results store ({exc})") from None

    # -- plumbing -----------------------------------------------------------------------------
    def _retry(self, fn, attempts: int = 200):
        """Run ``fn`` retrying while SQLite reports the database locked/busy."""
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or i == attempts - 1:
                    raise
                time.sleep(0.01 + random.random() * 0.05)
        raise AssertionError("unreachable")

    def _transaction(self, body) -> Any:
        """Run ``body(conn)`` inside ``BEGIN IMMEDIATE ... COMMIT``; roll back on any error."""

        def attempt():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                out = body(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return out

        return self._retry(attempt)

    def _check_or_create(self) -> None:
        existing = {
            r[0]
            for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        }
        if not existing:
            self._transaction(lambda c: [c.execute(s) for s in _SCHEMA])
            existing = set(TABLES)
        missing = sorted(set(TABLES) - existing)
        if missing:
            raise ValueError(
                f"results store {self.path}: not a results store (missing table(s) {', '.join(missing)})"
            )
        for table, cols in TABLES.items():
            have = [r[1] for r in self._conn.execute(f"PRAGMA table_info({table})").fetchall()]
            if set(cols) - set(have):
                raise ValueError(
                    f"results store {self.path}: table {table} lacks column(s) "
                    f"{', '.join(sorted(set(cols) - set(have)))}"
                )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def write_run(self, run: dict[str, Any], metric_rows: Sequence[dict[str, Any]] = (),
                  profile_rows: Sequence[dict[str, Any]] = ()) -> str:
        """Write a finished run, its metric rows and profile rows in one transaction.

        ``run`` needs ``run_id``, ``config_hash`` and ``status`` ('done'|'failed'); other
        ``runs`` columns are optional; dict/list values are stored as JSON. Returns the run_id.
        """
        unknown = sorted(set(run) - set(RUN_COLUMNS))
        if unknown:
            raise ValueError(f"write_run: unknown run column(s) {', '.join(unknown)}; valid: {', '.join(RUN_COLUMNS)}")
        for key in ("run_id", "config_hash", "status"):
            if not run.get(key):
                raise ValueError(f"write_run: run[{key!r}] is required")
        if run["status"] not in STATUSES:
            raise ValueError(f"write_run: status must be one of {STATUSES}, got {run['status']!r}")
        row = {c: run.get(c) for c in RUN_COLUMNS}
        for c, v in row.items():
            if isinstance(v, dict | list | tuple):
                row[c] = json.dumps(v, sort_keys=True) if c.endswith("_json") else ",".join(map(str, v))
        run_id = row["run_id"]
        mrows = [
            (run_id, str(m["case_id"]), str(m["metric"]),
             None if m.get("rater") is None else int(m["rater"]),
             None if m.get("value") is None else float(m["value"]))
            for m in metric_rows
        ]
        prows = [(run_id, str(p["name"]), float(p["value"]), p.get("unit")) for p in profile_rows]

        def body(c: sqlite3.Connection) -> None:
            if row["status"] == "done":
                old = c.execute("SELECT run_id FROM runs WHERE config_hash=?", (row["config_hash"],))
            else:
                old = c.execute(
                    "SELECT run_id FROM runs WHERE config_hash=? AND status='failed'", (row["config_hash"],)
                )
            self._delete(c, [r[0] for r in old.fetchall()] + [run_id])
            c.execute(
                f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                tuple(row.values()),
            )
            c.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", mrows)
            c.executemany("INSERT INTO profile VALUES (?, ?, ?, ?)", prows)

        self._transaction(body)
        return run_id

    @staticmethod
    def _delete(c: sqlite3.Connection, run_ids: Iterable[str]) -> None:
        ids = [(r,) for r in run_ids]
        for table in ("metrics", "profile", "runs"):
            c.executemany(f"DELETE FROM {table} WHERE run_id=?", ids)

    def delete_runs(self, run_ids: Iterable[str]) -> None:
        """Remove runs and their rows (one transaction)."""
        ids = list(run_ids)
        self._transaction(lambda c: self._delete(c, ids))

    # -- reading ------------------------------------------------------------------------------
    def done_run_id(self, config_hash: str) -> str | None:
        """The run_id of a finished ('done') run with this config hash, or None."""
        r = self._retry(lambda: self._conn.execute(
            "SELECT run_id FROM runs WHERE config_hash=? AND status='done' "
            "ORDER BY finished_at DESC LIMIT 1", (config_hash,)).fetchone())
        return None if r is None else str(r[0])

    def _frame(self, sql: str, params: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
        rows = self._retry(lambda: self._conn.execute(sql, tuple(params)).fetchall())
        return pd.DataFrame(rows, columns=list(columns))

    def runs(self, status: str | None = None) -> pd.DataFrame:
        """All runs (optionally only ``status``), oldest first."""
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status=?"
            params.append(status)
        return self._frame(sql + " ORDER BY started_at, run_id", params, RUN_COLUMNS)

    def _rows(self, table: str, run_ids: Iterable[str] | None) -> pd.DataFrame:
        cols = list(TABLES[table])
        sql = f"SELECT {', '.join(cols)} FROM {table}"
        params: list[Any] = []
        if run_ids is not None:
            params = list(run_ids)
            if not params:
                return pd.DataFrame(columns=cols)
            sql += f" WHERE run_id IN ({', '.join('?' * len(params))})"
        df = self._frame(sql + " ORDER BY rowid", params, cols)
        if table == "metrics":
            df["rater"] = df["rater"].astype("Int64")
        return df

    def metrics(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Per-case metric rows: run_id, case_id, metric, rater (nullable int), value."""
        return self._rows("metrics", run_ids)

    def profile(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Profile rows: run_id, name, value, unit."""
        return self._rows("profile", run_ids)

    def latest_runs(self, status: str = "done") -> pd.DataFrame:
        """The latest run with ``status`` per (method, dataset, preset, seed)."""
        df = self.runs(status=status)
        if df.empty:
            return df
        df = df.sort_values(["finished_at", "run_id"])
        return df.drop_duplicates(["method", "dataset", "preset", "seed"], keep="last").reset_index(drop=True)
