"""Decoded-array cache: a decoded file is kept as a ``.npy`` under the user's cache folder and
memory-mapped on later reads, so epochs (and runs) after the first do not decode it again.

Folder: ``$MRSEG_BENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/mrseg-bench``, else
``~/.cache/mrseg-bench``; arrays live in its ``decoded/`` sub-folder. The key is the file's
fingerprint: sha256 of (resolved path, size, mtime_ns, blake2b of the content) plus the decoder
name, so an edited or replaced file is decoded again. Entries are written atomically (temporary
file + rename) as ``<key>.<checksum>.npy``, the checksum a blake2b of the entry's own bytes; it
is verified on the first read of an entry in a process (``mapped``), so an entry damaged in place
(bytes overwritten, another array swapped in) is never used: it is reported, naming the cache
file, through ``logging`` and ``DecodeCache.repaired``, deleted, decoded again and rewritten. An
unreadable entry is handled the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ENV = "MRSEG_BENCH_CACHE"
log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The cache folder (see the module docstring); not created here."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mrseg-bench"


def file_fingerprint(path: Path) -> str:
    """sha256 hex of (resolved path, size, mtime_ns, blake2b(content))."""
    st = path.stat()
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    key = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{h.hexdigest()}"
    return hashlib.sha256(key.encode()).hexdigest()


def content_checksum(path: Path) -> str:
    """blake2b (16 bytes, hex) of the bytes of ``path``."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DecodeCache:
    """``get(path, decode)``: the decoded array of ``path`` (memory-mapped when cached).

    ``enabled=False`` decodes every time and writes nothing. ``decoder`` names the decoding
    (part of the key: two readers of one file never share an entry)."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.dir = (root or cache_root()) / "decoded"
        self.hits = 0
        self.misses = 0
        self.repaired: list[str] = []  # one line per damaged entry found (and replaced)
        self._mapped: dict[tuple[Path, str], np.ndarray] = {}

    def mapped(self, path: Path, decode: Callable[[Path], np.ndarray], decoder: str) -> np.ndarray:
        """Like ``get``, but an array this object already returned for ``(path, decoder)`` is
        returned again without touching the file (the dataset was checked when it was built);
        with the cache off, the file is decoded again."""
        key = (path, decoder)
        arr = self._mapped.get(key)
        if arr is None:
            arr = self.get(path, decode, decoder)
            if self.enabled:
                self._mapped[key] = arr
        return arr

    def key(self, path: Path, decoder: str) -> str:
        return hashlib.sha256(f"{file_fingerprint(path)}\0{decoder}".encode()).hexdigest()

    def entry(self, path: Path, decoder: str) -> Path | None:
        """The cache file of ``(path, decoder)`` (``<key>.<checksum>.npy``), or None."""
        key = self.key(path, decoder)
        found = sorted((self.dir / key[:2]).glob(f"{key}.*.npy"))
        return found[0] if found else None

    def _verified(self, entry: Path, source: Path) -> np.ndarray | None:
        """The memory-mapped array of ``entry`` when its bytes match the checksum in its name;
        otherwise the entry is reported (naming it) and deleted, and None is returned."""
        want = entry.name.split(".")[1] if entry.name.count(".") == 2 else ""
        try:
            ok = content_checksum(entry) == want
            arr = np.load(entry, mmap_mode="r", allow_pickle=False) if ok else None
        except (OSError, ValueError):
            ok, arr = False, None
        if arr is None:
            msg = (f"{entry}: damaged cache entry of {source} ({'checksum mismatch' if not ok else 'unreadable'}); "
                   "deleted, the source is decoded again")
            self.repaired.append(msg)
            log.warning(msg)
            entry.unlink(missing_ok=True)
        return arr

    def get(self, path: Path, decode: Callable[[Path], np.ndarray], decoder: str) -> np.ndarray:
        if not self.enabled:
            return decode(path)
        entry = self.entry(path, decoder)
        if entry is not None:
            arr = self._verified(entry, path)
            if arr is not None:
                self.hits += 1
                return arr
        arr = np.ascontiguousarray(decode(path))
        self.misses += 1
        key = self.key(path, decoder)
        parent = self.dir / key[:2]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
                os.replace(tmp, parent / f"{key}.{content_checksum(Path(tmp))}.npy")
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or full cache only costs speed
        return arr
