"""Names that become paths: refuse the ones that could leave their folder.

A method, dataset, preset or experiment name ends up in a file or folder name (run folders,
report files). Names come from plugins, preset files and results stores, none of them trusted,
so every such name passes ``check_name`` and every path built from names passes ``safe_join``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is safe as one path component, else raise ValueError naming
    ``what``: empty, ``/`` or ``\\``, ``..``, an absolute or drive path, control characters."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} {value!r}: must be a non-empty string")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} {value!r}: contains control characters")
    if "/" in value or "\\" in value:
        raise ValueError(f"{what} {value!r}: must not contain '/' or '\\'")
    if ".." in value:
        raise ValueError(f"{what} {value!r}: must not contain '..'")
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or PureWindowsPath(value).drive:
        raise ValueError(f"{what} {value!r}: must not be an absolute path")
    return value


def safe_join(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts...``; ValueError when the (resolved) result is not inside ``root``."""
    base = Path(root).resolve()
    path = Path(root).joinpath(*parts)
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"path {path} leaves {root}; refused")
    return path


def check_run_names(runs, source: str) -> None:
    """``check_name`` on every method and dataset of a runs frame (read from the store
    ``source``); the ValueError names the store. A preset or experiment may be a user preset's
    path (it reaches file names only through ``identity.experiment_slug``), so for those only
    control characters are refused."""
    for column in ("method", "dataset", "preset", "experiment"):
        if column not in getattr(runs, "columns", ()):
            continue
        for value in runs[column].dropna().unique():
            try:
                if column in ("preset", "experiment"):
                    if any(ord(c) < 32 or ord(c) == 127 for c in str(value)):
                        raise ValueError(f"{column} {str(value)!r}: control characters are not allowed")
                    continue
                check_name(str(value), column)
            except ValueError as exc:
                raise ValueError(f"results store {source}: {exc}") from None
