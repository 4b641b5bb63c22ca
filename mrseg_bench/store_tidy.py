"""``tidy_wal(path)``: leave no ``-wal`` / ``-shm`` file beside a results store when no one else
has it open.

SQLite deletes them when the last connection closes, unless that connection is read-only (the
report reads the store read-only and so leaves them). ``tidy_wal`` opens the store read-write
once, checkpoints the WAL into the main file (``PRAGMA wal_checkpoint(TRUNCATE)``) and closes:
as the last connection it removes both files. With other connections open (a grid still
writing) it changes nothing they can see. Failures (read-only folder, locked, not a store) are
ignored: the files are harmless, only untidy.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def tidy_wal(path: str | Path) -> None:
    """Checkpoint and close (see module doc); never raises."""
    path = Path(path)
    if not path.is_file() or not (Path(f"{path}-wal").exists() or Path(f"{path}-shm").exists()):
        return
    try:
        con = sqlite3.connect(path, timeout=2.0)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            con.close()
    except (sqlite3.Error, OSError):
        pass
