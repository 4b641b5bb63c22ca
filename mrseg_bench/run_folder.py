"""The run folder is the record of a run.

``<out>/<dataset>/<method>/<preset>_seed<k>_<hash8>/`` holds ``config.json``, ``split.json``,
``train_log.jsonl``, ``checkpoints/``, ``metrics.csv``, ``error.txt`` (failed runs) and, written
atomically (temp file + rename) at the end of every run, done or failed, ``result.json``::

    {"schema": 1, "run": {run row}, "metrics": [metric rows], "profile": [profile rows],
     "selection": {stage: {"metric", "mode", "value", "epoch"}}}   (selection: done runs)

The run row has the results store's ``runs`` columns (identity, config, hash, environment,
status, error, times); ``collect`` rebuilds the store from these files.

Beside the folder lie its claim file ``<name>.claim`` (``mrseg_bench.claims``) and, while a
``--force`` rerun trains, its staging folder ``<name>.force``: the finished run stays untouched
until the rerun succeeds and is swapped in.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

RESULT_SCHEMA = 1
RESULT_FILE = "result.json"
STAGING_SUFFIX = ".force"
CLAIM_SUFFIX = ".claim"
_REPLACED = ".replaced-"
_fsync = os.fsync  # a module attribute, so tests can simulate a full disk


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temp file of this process beside ``path``, fsync, rename. On any error
    (a full disk) the temp file is removed and the error raised; ``path`` is never half written."""
    path = Path(path)
    tmp = _tmp_for(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            _fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _plain(x: Any) -> Any:
    """JSON-safe: non-finite floats become None (strict JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def write_result(run_dir: str | Path, run: dict[str, Any], metrics: list[dict[str, Any]],
                 profile: list[dict[str, Any]], selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``<run_dir>/result.json`` atomically; returns what it holds (as ``read_result`` would).
    ``selection`` (a done run): per stage, what picked its best epoch, ``{"metric", "mode",
    "value", "epoch"}`` (``epoch`` 0-based, as in ``train_log.jsonl``)."""
    body = {"schema": RESULT_SCHEMA, "run": run, "metrics": metrics, "profile": profile}
    if selection is not None:
        body["selection"] = selection
    body = _plain(body)
    atomic_write_text(Path(run_dir) / RESULT_FILE, json.dumps(body, sort_keys=True, allow_nan=False) + "\n")
    return json.loads(json.dumps(body))


def read_result(path: str | Path) -> dict[str, Any]:
    """A result file, checked: ValueError with a one-line message naming the file otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read as a result file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:120]})") from None

    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: not a result file: {why}")

    if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
        raise bad(f"expected an object with schema {RESULT_SCHEMA}")
    run, metrics, profile = data.get("run"), data.get("metrics"), data.get("profile")
    if not isinstance(run, dict) or not isinstance(metrics, list) or not isinstance(profile, list):
        raise bad("needs 'run' (object), 'metrics' and 'profile' (lists)")
    for key in ("run_id", "config_hash", "status", "method", "dataset"):
        if not isinstance(run.get(key), str) or not run[key]:
            raise bad(f"run.{key} is missing")
    if run["status"] not in ("done", "failed"):
        raise bad(f"run.status {run['status']!r} is not done or failed")
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or not {"case_id", "metric", "value"} <= set(m):
            raise bad(f"metrics[{i}] needs case_id, metric and value")
        if m["value"] is not None and not isinstance(m["value"], int | float):
            raise bad(f"metrics[{i}].value is not a number")
    for i, p in enumerate(profile):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or (
                p.get("value") is not None and not isinstance(p.get("value"), int | float)):
            raise bad(f"profile[{i}] needs a name and a numeric value")
    return data


def done_result(run_dir: str | Path, config_hash: str) -> dict[str, Any] | None:
    """The result file of ``run_dir`` when it holds a done run of ``config_hash``, else None."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = read_result(path)
    except ValueError:
        return None
    run = result["run"]
    return result if run["status"] == "done" and run["config_hash"] == config_hash else None


def claim_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + CLAIM_SUFFIX)


def staging_dir(run_dir: str | Path) -> Path:
    """Where a ``--force`` rerun trains (the same name for every attempt: the claim makes it
    exclusive, and an interrupted ``--force`` resumes there)."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + STAGING_SUFFIX)


def restore_replaced(run_dir: str | Path) -> None:
    """Undo a swap cut short between its two renames (run folder gone, old one beside it)."""
    run_dir = Path(run_dir)
    if run_dir.exists() or not run_dir.parent.is_dir():
        return
    olds = sorted(run_dir.parent.glob(f"{run_dir.name}{_REPLACED}*"))
    if olds:
        os.rename(olds[-1], run_dir)


def swap_in(staging: str | Path, run_dir: str | Path) -> None:
    """Replace ``run_dir`` by the finished ``staging`` folder (two renames), then delete the old one."""
    staging, run_dir = Path(staging), Path(run_dir)
    old = None
    if run_dir.exists():
        old = run_dir.with_name(f"{run_dir.name}{_REPLACED}{uuid.uuid4().hex[:8]}")
        os.rename(run_dir, old)
    os.rename(staging, run_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_run_folder(path: Path) -> bool:
    """A folder ``collect`` reads: not staging, not a replaced one, not hidden."""
    name = path.name
    return not (name.startswith(".") or name.endswith(STAGING_SUFFIX) or _REPLACED in name)
