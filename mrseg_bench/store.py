"""The results store: one SQLite file (stdlib, WAL mode), default ``runs/results.sqlite``.

Schema (shared with ``mrseg_bench.reports``):

- ``runs``: one row per run (``run_id`` primary key, method, dataset, seed, preset, protocol,
  config JSON and hash, status ``'done'|'failed'``, error, capabilities (comma list), GED
  convention, n_samples, git commit, package version, environment JSON, run dir, ISO UTC start
  and finish times, wall seconds) and its identity: ``experiment`` (the grid's label),
  ``overrides_json`` (method-config fields that differ from the preset's, ``run.``/``dataset.``
  prefixed for run and dataset options), ``data_fingerprint`` and ``code_json``
  (``mrseg_bench.identity``). Stores written before these four columns existed read as
  experiment = preset and overrides = ``{}``; opened to write, they gain the columns.
- ``metrics(run_id, case_id, metric, rater, value)``: per-case rows of ``MetricSuite.score``
  (``rater`` NULL for per-case metrics).
- ``profile(run_id, name, value, unit)``: params, flops_per_image, train_images_per_s, ...

A run is written in ONE transaction (``BEGIN IMMEDIATE``, retried while the database is locked),
so a crash leaves either the whole run or nothing, and several processes may write at once.
Writing a ``done`` run replaces every earlier run with the same config hash (a failed attempt,
or a ``--force`` rerun); writing a ``failed`` run replaces earlier failed runs of that hash only.

Reports and checks read ``select_runs(experiment=...)``: one row per distinct config and seed
(the latest, when the same config ran on several code versions), never merging distinct configs.
Opening never modifies a file that is not a results store (see ``ResultsStore``).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .identity import CODE_KEYS, sha256_json

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
    # run identity (added in schema 2; older stores get them by ALTER TABLE when opened to write)
    "experiment": "TEXT",
    "overrides_json": "TEXT",
    "data_fingerprint": "TEXT",
    "code_json": "TEXT",
}
# columns an older store may lack; readers see experiment = preset and overrides_json = "{}"
ADDED_RUN_COLUMNS = ("experiment", "overrides_json", "data_fingerprint", "code_json")
ALL_EXPERIMENTS = "*"
SQLITE_HEADER = b"SQLite format 3\x00"
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


def _writable(path: Path) -> bool:
    """Whether ``path`` (an existing store) and its folder (WAL and journal files live there) can
    be written; False on a read-only mount."""
    return os.access(path, os.W_OK) and os.access(path.parent if str(path.parent) else Path("."), os.W_OK)


def _connect_readonly(path: Path, timeout: float, read_only_mount: bool = False) -> sqlite3.Connection:
    """Open ``path`` read-only (``mode=ro``). On a read-only mount (``read_only_mount``) with no
    ``-wal`` file beside it, open it ``immutable``: SQLite then needs no shared-memory file, and
    nobody can change the file there. ``mode=ro`` failing (no -shm can be made) falls back to
    ``immutable`` too."""
    uri = path.resolve().as_uri()
    wal = Path(str(path) + "-wal")
    if not (read_only_mount and not wal.exists()):
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
    conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=timeout, isolation_level=None)
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return conn


def _make_parent(path: Path) -> None:
    """Create the store's folder, or ValueError naming the path and the reason."""
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"results store {path}: {p} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"results store {path}: cannot create folder {parent} ({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK):
        raise ValueError(f"results store {path}: folder {parent} is not writable")


def _new_file(folder: Path, prefix: str, suffix: str) -> str:
    """Create a new empty file in ``folder`` with mode 0666 less the umask (``mkstemp`` would
    make it 0600: a group sharing the folder could not read the store); returns its path."""
    for _ in range(100):
        name = str(folder / f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary name")


def _create_atomically(path: Path) -> None:
    """Create an empty store with the schema at ``path`` unless one appears there first: build it
    in a temp file beside it, then hard-link it into place (atomic; never replaces a file), so
    no process ever sees a half-made (0-byte) store."""
    tmp = _new_file(path.parent, f".{path.name}.", ".new")
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("BEGIN")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError:  # no hard links on this file system
            if not path.exists():
                os.replace(tmp, path)
    except OSError as exc:
        raise ValueError(f"results store {path}: cannot create ({exc.strerror or exc})") from None
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            try:
                os.unlink(leftover)
            except OSError:
                pass


def _column_value(value: Any, sql_type: str, what: str) -> Any:
    """``value`` checked for a column of ``sql_type`` (None passes): INTEGER an int within SQLite's
    signed 64 bits, REAL a number, TEXT a string or number. ValueError naming ``what``."""
    if value is None:
        return None
    if sql_type.startswith("INTEGER"):
        if isinstance(value, bool) or not isinstance(value, int) or not -2**63 <= value < 2**63:
            raise ValueError(f"{what} {_short(value)} is not an integer within 64 bits")
        return value
    if sql_type == "REAL":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what} {_short(value)} is not a number")
        return float(value)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"{what} {_short(value)} is not a string")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class ResultsStore:
    """``ResultsStore(path, readonly=False)``: open (or, to write, create) a results store.

    An existing file is checked before anything touches it: a 0-byte file, a file that is not
    SQLite, or an SQLite file without this schema's tables raises ValueError naming the file and
    the file stays byte-for-byte unchanged (no WAL switch, no schema). ``readonly=True`` (reports,
    checks), or a store whose file or folder is not writable (a read-only mount), opens the file
    read-only; writing then raises ValueError. Opened to write, an older store gains the run
    identity columns (``ADDED_RUN_COLUMNS``) by ALTER TABLE. A store that cannot be created (its
    folder is a file, unwritable, read-only) raises ValueError naming the path and the reason.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE, timeout: float = 60.0, readonly: bool = False) -> None:
        self.path = Path(path)
        self.timeout = timeout
        if self.path.is_dir():
            raise ValueError(f"results store {self.path}: is a directory, expected an SQLite file")
        exists = self.path.exists()
        if exists:
            self._check_file()
        elif readonly:
            raise ValueError(f"results store {self.path}: no such file")
        read_only_mount = exists and not _writable(self.path)
        self.readonly = readonly or read_only_mount
        try:
            if self.readonly:
                self._conn = _connect_readonly(self.path, timeout, read_only_mount)
                self._columns = self._check_schema()
            else:
                if not exists:
                    _make_parent(self.path)
                    _create_atomically(self.path)
                    self._check_file()  # another process may have won the race with another file
                self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
                self._retry(lambda: self._conn.execute("PRAGMA journal_mode=WAL").fetchone())
                self._conn.execute("PRAGMA foreign_keys=OFF")
                self._check_or_create()
                self._columns = self._check_schema()
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            raise ValueError(f"results store {self.path}: cannot open ({exc})") from None

    def _check_file(self) -> None:
        """Refuse a file that is not a results store, reading it only (never writing)."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise ValueError(f"results store {self.path}: cannot read ({exc.strerror or exc})") from None
        if not head:
            raise ValueError(f"results store {self.path}: empty file (0 bytes), not a results store")
        if head != SQLITE_HEADER:
            raise ValueError(f"results store {self.path}: not an SQLite file")
        try:
            conn = _connect_readonly(self.path, self.timeout, not _writable(self.path))
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"results store {self.path}: cannot open read-only ({exc})") from None
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = sorted(set(TABLES) - tables)
            if missing:
                raise ValueError(f"results store {self.path}: an SQLite file but not a results store "
                                 f"(missing table(s) {', '.join(missing)}); left untouched")
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"results store {self.path}: not an SQLite results store ({exc})") from None
        finally:
            conn.close()

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
        """Create the schema in a new (empty) database; add missing run identity columns."""
        existing = {
            r[0]
            for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        }
        if not existing:
            self._transaction(lambda c: [c.execute(s) for s in _SCHEMA])
            return
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)").fetchall()}
        add = [c for c in ADDED_RUN_COLUMNS if c not in have]
        if add and not (set(RUN_COLUMNS) - set(ADDED_RUN_COLUMNS)) - have:
            self._transaction(lambda c: [c.execute(f"ALTER TABLE runs ADD COLUMN {col} {RUN_COLUMNS[col]}")
                                         for col in add])

    def _check_schema(self) -> dict[str, list[str]]:
        """The columns each table has; ValueError if a table lacks a column of the original schema."""
        existing = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = sorted(set(TABLES) - existing)
        if missing:
            raise ValueError(
                f"results store {self.path}: not a results store (missing table(s) {', '.join(missing)})"
            )
        out: dict[str, list[str]] = {}
        for table, cols in TABLES.items():
            have = [r[1] for r in self._conn.execute(f"PRAGMA table_info({table})").fetchall()]
            lacking = sorted(set(cols) - set(have) - set(ADDED_RUN_COLUMNS if table == "runs" else ()))
            if lacking:
                raise ValueError(f"results store {self.path}: table {table} lacks column(s) {', '.join(lacking)}")
            out[table] = have
        return out

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
        if self.readonly:
            raise ValueError(f"results store {self.path}: opened read-only (read-only file or folder); cannot write")
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
            row[c] = _column_value(row[c], RUN_COLUMNS[c], f"run.{c}")
        run_id = row["run_id"]
        mrows = [
            (run_id, str(m["case_id"]), str(m["metric"]),
             _column_value(m.get("rater"), "INTEGER", f"metrics[{i}].rater"),
             _column_value(m.get("value"), "REAL", f"metrics[{i}].value"))
            for i, m in enumerate(metric_rows)
        ]
        prows = [(run_id, str(p["name"]), _column_value(p["value"], "REAL", f"profile[{i}].value"),
                  _column_value(p.get("unit"), "TEXT", f"profile[{i}].unit"))
                 for i, p in enumerate(profile_rows)]

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
        have = set(self._columns["runs"])
        sql = f"SELECT {', '.join(c if c in have else 'NULL' for c in RUN_COLUMNS)} FROM runs"
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

    def reusable_run_id(self, reuse_hash: str, method: str, dataset: str, seed: int) -> str | None:
        """The latest done run of (method, dataset, seed) whose config equals the planned one in
        everything but the code identity (``reuse_hash``: ``identity.reuse_hash`` of the planned
        config); None if there is none. Used by ``run --reuse-results``."""
        rows = self._retry(lambda: self._conn.execute(
            "SELECT run_id, config_json FROM runs WHERE status='done' AND method=? AND dataset=? AND seed=? "
            "ORDER BY finished_at DESC", (method, dataset, int(seed))).fetchall())
        for run_id, cfg in rows:
            try:
                config = json.loads(cfg or "null")
            except ValueError:
                continue
            if isinstance(config, dict) and sha256_json({k: v for k, v in config.items()
                                                        if k not in CODE_KEYS}) == reuse_hash:
                return str(run_id)
        return None

    def experiments(self, status: str = "done") -> dict[str, int]:
        """{experiment: number of runs with ``status``}; experiment = preset for older rows."""
        df = _with_identity(self.runs(status=status))
        return {str(k): int(v) for k, v in df["experiment"].value_counts(sort=False).sort_index().items()}

    def select_runs(self, experiment: str | None = None, dataset: str | None = None,
                    method: str | None = None, status: str = "done") -> pd.DataFrame:
        """The runs one report or check uses: the ``runs`` columns plus ``config_key`` and
        ``result_key``, oldest first.

        - ``experiment``: the experiment to use; ``None``: the store's only one, and ValueError
          listing the choices when it holds several; ``"*"`` (``ALL_EXPERIMENTS``): all of them.
        - ``dataset``, ``method``: only these (None: any); ``status``: "done" (default) or "failed".
        - Rows missing the run identity columns read as experiment = preset, overrides_json = "{}".
        - ``result_key``: hash of the run's config without the code identity; of several runs with
          one result_key (the same config rerun on newer code) only the latest finished is kept.
        - ``config_key``: hash of the config without code identity and seed: the runs of one table
          row (one mean over seeds). Distinct configs (other ``--set`` overrides, protocol,
          convention, data, ...) have distinct keys, so they are distinct rows, never merged.
        """
        df = _with_identity(self.runs(status=status))
        if dataset is not None:
            df = df[df["dataset"] == dataset]
        if method is not None:
            df = df[df["method"] == method]
        if experiment is None:
            counts = df["experiment"].value_counts().sort_index()
            if len(counts) > 1:
                choices = ", ".join(f"{k!r} ({v} run{'s' if v != 1 else ''})" for k, v in counts.items())
                raise ValueError(f"results store {self.path}: several experiments, choose one with --experiment: "
                                 f"{choices}")
        elif experiment != ALL_EXPERIMENTS:
            df = df[df["experiment"] == experiment]
        if df.empty:
            return df.assign(config_key=pd.Series(dtype=str), result_key=pd.Series(dtype=str)).reset_index(drop=True)
        # the row's own columns join the config: an old row's config may lack some of them
        ident = df.assign(protocol=df["protocol"].fillna("").replace("", "default"),
                          convention=df["convention"].fillna("").replace("", "standard"))
        cols = ident[["method", "dataset", "experiment", "protocol", "convention", "overrides_json", "seed"]
                     ].astype(str).values.tolist()
        configs = [_load_json(c) for c in df["config_json"]]
        df = df.assign(result_key=[_key(c, CODE_KEYS, r) for c, r in zip(configs, cols, strict=True)],
                       config_key=[_key(c, (*CODE_KEYS, "seed"), r[:-1]) for c, r in zip(configs, cols, strict=True)])
        df = df.sort_values(["finished_at", "run_id"], na_position="first")
        df = df.drop_duplicates("result_key", keep="last")
        return df.sort_values(["started_at", "run_id"], na_position="first").reset_index(drop=True)


def _load_json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _key(config: Any, drop: tuple[str, ...], row: list[str]) -> str:
    """sha256[:16] of ``config`` without the ``drop`` keys plus the row's own identifying columns
    (method, dataset, experiment, protocol, convention, overrides[, seed]). A row without a readable config
    is keyed by those columns alone (the latest such run wins, as before run identity existed)."""
    cfg = {k: v for k, v in config.items() if k not in drop} if isinstance(config, dict) else {}
    return sha256_json([cfg, row])[:16]


def _with_identity(df: pd.DataFrame) -> pd.DataFrame:
    """Fill the run identity columns of rows written before they existed."""
    df = df.copy()
    df["experiment"] = df["experiment"].where(df["experiment"].notna() & (df["experiment"] != ""), df["preset"])
    df["overrides_json"] = df["overrides_json"].where(df["overrides_json"].notna(), "{}")
    return df
