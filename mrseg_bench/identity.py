"""Run identity: what a run's config hash covers besides the configs themselves.

- ``data_fingerprint(dataset)``: ``"sha256:<hex>"`` of the dataset's content. A dataset read from
  disk lists its files (``MultiRaterDataset.files()``); the fingerprint hashes, in sorted order,
  each file's name (relative to the files' common folder), size and sha256. File hashes are
  cached in ``<cache>/fingerprints.json`` keyed by the resolved path, size and mtime (ns), so a
  large dataset is read once, not on every run. A generated dataset (the embedded synthetic set)
  has no files; its fingerprint hashes its generator parameters
  (``MultiRaterDataset.fingerprint_params()``).
- ``code_identity()``: ``{"package_version", "git_commit", "git_dirty", "source_sha256"}``. In a
  git checkout ``git_commit`` is HEAD and ``git_dirty`` says whether the package folder has
  uncommitted changes (both stored with the run); ``source_sha256`` is the sha256 of every
  ``.py``/``.toml`` file of the package, by relative name and content. The config hash takes
  ``hashed_code``: the version and the source hash, so two different uncommitted edits never
  share an identity, and a git checkout and an installed copy of the same code (a wheel, a tox
  env) agree.
- ``experiment_slug(name)``: a file-system-safe form of an experiment name, for run folders and
  report file names: a plain name (letters, digits, ``.``, ``_``, ``-``; not starting with ``.``)
  is kept; a user preset's path (a name ending in ``.toml``, e.g. ``presets/ci.toml`` or
  ``smoke.toml``) and anything else becomes ``<stem>-<sha256(name)[:6]>`` (``ci-1f0a3b``).

"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
_CACHE_FILE = "fingerprints.json"
_CHUNK = 1 << 20
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def canonical_json(x: Any) -> str:
    """Sorted-key compact JSON (the form every hash is taken of)."""
    return json.dumps(x, sort_keys=True, separators=(",", ":"), default=str)


def sha256_json(x: Any) -> str:
    return hashlib.sha256(canonical_json(x).encode()).hexdigest()


CODE_KEYS = ("code", "package_version")  # the config keys of the code identity


def reuse_hash(config: dict[str, Any]) -> str:
    """sha256 of a run's (JSON-able) config without its code identity: two runs with equal
    reuse hashes differ at most in the code they ran (``run --reuse-results`` reuses them)."""
    return sha256_json({k: v for k, v in config.items() if k not in CODE_KEYS})


# -- config hash --------------------------------------------------------------------------------
NOT_HASHED: dict[str, Any] = {"hash": False}  # dataclass field metadata: the field leaves results unchanged


def hashed_fields(cfg: Any) -> dict[str, Any]:
    """``{field: value}`` of config dataclass ``cfg`` without the fields declared
    ``field(metadata=NOT_HASHED)`` (settings such as threads or checkpoint timing that do not
    change a run's results, so a run rerun with other values is the same run)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.metadata.get("hash", True)}


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON data: dataclasses as dicts, dict keys as sorted strings, tuples as
    lists, paths and other objects as ``str``."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in sorted(x.items())}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    return str(x)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, compact) of ``jsonable(config)``."""
    return sha256_json(jsonable(config))


def experiment_slug(name: str) -> str:
    """A file-system-safe name for experiment ``name`` (see module docstring)."""
    if _SAFE.fullmatch(name) and ".." not in name and not name.endswith(".toml"):
        return name
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name.replace("\\", "/")).stem).strip("-") or "experiment"
    return f"{stem[:40]}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


# -- cache --------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """The user's cache folder for mrseg-bench (see module docstring)."""
    if os.environ.get("MRSEG_BENCH_CACHE"):
        return Path(os.environ["MRSEG_BENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mrseg-bench"


def _load_cache(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temp file in the same folder + rename); errors are ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fingerprints-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)  # type: ignore[possibly-undefined]
        except (OSError, UnboundLocalError):
            pass


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(paths: Iterable[str | Path], cache: Path | None = None) -> dict[Path, tuple[int, str]]:
    """``{resolved path: (size, sha256)}`` for ``paths``; reuses cached digests whose path, size
    and mtime_ns still match. OSError names the file that cannot be read."""
    cache_path = (cache_dir() if cache is None else cache) / _CACHE_FILE
    data = _load_cache(cache_path)
    out: dict[Path, tuple[int, str]] = {}
    changed = False
    for p in paths:
        path = Path(p).resolve()
        st = path.stat()
        key = str(path)
        hit = data.get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            out[path] = (st.st_size, str(hit["sha256"]))
            continue
        digest = _sha256_file(path)
        data[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        out[path] = (st.st_size, digest)
        changed = True
    if changed:
        _save_cache(cache_path, data)
    return out


# -- data ---------------------------------------------------------------------------------------
def data_manifest(dataset: Any, cache: Path | None = None) -> dict[str, Any]:
    """What the data fingerprint hashes: ``{"files": [[name, size, sha256], ...]}`` for a dataset
    read from disk, ``{"params": {...}}`` for a generated one, or ``{"unknown": class name}`` for
    a dataset that declares neither (its content changes then go unnoticed)."""
    files = [Path(f) for f in (dataset.files() if hasattr(dataset, "files") else [])]
    if files:
        digests = file_digests(files, cache)
        resolved = sorted(digests)
        common = Path(os.path.commonpath([str(p) for p in resolved]))
        if len(resolved) == 1:
            common = resolved[0].parent
        rows = [[p.relative_to(common).as_posix(), *digests[p]] for p in resolved]
        return {"files": rows}
    params = dataset.fingerprint_params() if hasattr(dataset, "fingerprint_params") else None
    if params is not None:
        return {"params": _plain(params), "class": type(dataset).__qualname__}
    return {"unknown": f"{type(dataset).__module__}.{type(dataset).__qualname__}"}


def data_fingerprint(dataset: Any, cache: Path | None = None) -> str:
    """``"sha256:<hex>"`` of ``data_manifest(dataset)`` (see module docstring)."""
    return "sha256:" + sha256_json(data_manifest(dataset, cache))


def _plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _plain(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


# -- code ---------------------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def source_sha256(root: Path = PACKAGE_DIR) -> str:
    """sha256 over the package's ``.py`` and ``.toml`` files (relative name + content), sorted."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".toml") and p.is_file()
                       and "__pycache__" not in p.parts):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


_CODE: dict[str, Any] | None = None


HASHED_CODE_KEYS = ("package_version", "source_sha256")


def hashed_code(code: dict[str, Any]) -> dict[str, Any]:
    """The part of a code identity that enters the config hash: the package version and the
    source hash (the git commit and dirty flag are stored with the run, not hashed: an install
    of a commit has no git, and the source hash already changes with every edit)."""
    return {k: code.get(k) for k in HASHED_CODE_KEYS}


def code_identity(refresh: bool = False) -> dict[str, Any]:
    """The identity of the code that runs (see module docstring); computed once per process."""
    global _CODE
    if _CODE is None or refresh:
        # the package must be tracked by that repository (an install inside some other checkout,
        # e.g. a venv in a project folder, is not in git as far as its code is concerned)
        tracked = _git("ls-files", "--", "__init__.py")
        commit = _git("rev-parse", "HEAD") if tracked and tracked.strip() else None
        commit = commit.strip() if commit else None
        dirty: bool | None = None
        if commit:
            status = _git("status", "--porcelain", "--untracked-files=normal", "--", ".")
            dirty = bool(status and status.strip())
        # the source hash always: it is what the run identity hashes (``hashed_code``), so a git
        # checkout and an installed copy of the same code (a wheel, a tox env) agree
        ident: dict[str, Any] = {"package_version": __version__, "git_commit": commit, "git_dirty": dirty,
                                 "source_sha256": source_sha256()}
        _CODE = ident
    return dict(_CODE)
