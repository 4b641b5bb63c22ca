"""The report is built whole in a staging folder beside ``--out``, then swapped in.

``staging_for(out)``: ``<parent>/.<name>.staging-<pid>`` (same file system, so renames are
atomic); stale ones of dead processes (a report killed by SIGTERM) are removed first.
``swap_in(staging, out)``: ``out`` absent, empty or a previous report (it holds ``MARKER``):
renamed aside, the staging folder renamed to ``out``, the old one deleted, so a reader sees the
old report or the new one, never a mix. Any other existing folder (the user's own files): each
new file is moved in with ``os.replace``, which replaces a file or a symlink planted at that
name and never writes through it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MARKER = ".mrseg-report"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def staging_for(out: Path) -> Path:
    """A fresh staging folder for ``out`` (see module doc)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f".{out.name}.staging-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    return stage


def _replaceable(out: Path) -> bool:
    if out.is_symlink() or not out.is_dir():
        return False
    return (out / MARKER).is_file() or not any(out.iterdir())


def swap_in(stage: Path, out: Path) -> None:
    """Put the finished report of ``stage`` at ``out`` (see module doc)."""
    (stage / MARKER).write_text("written by mrseg-bench report; the folder is replaced whole on the next report\n",
                                encoding="utf-8")
    if not out.exists() and not out.is_symlink():
        os.rename(stage, out)
        return
    if _replaceable(out):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        os.rename(stage, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    for path in sorted(stage.iterdir()):
        os.replace(path, out / path.name)
    shutil.rmtree(stage, ignore_errors=True)
