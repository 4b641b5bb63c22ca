"""Decoded-array cache: a decoded file is kept as a ``.npy`` under the user's cache folder and
memory-mapped on later reads, so epochs (and runs) after the first do not decode it again.

Folder: ``$MRSEG_BENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/mrseg-bench``, else
``~/.cache/mrseg-bench``; arrays live in its ``decoded/`` sub-folder. The key is the file's
fingerprint: sha256 of (resolved path, size, mtime_ns, blake2b of the content) plus the decoder
name, so an edited or replaced file is decoded again. Entries are written atomically (temporary
file + rename); an unreadable entry is decoded again and replaced.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ENV = "MRSEG_BENCH_CACHE"


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


class DecodeCache:
    """``get(path, decode)``: the decoded array of ``path`` (memory-mapped when cached).

    ``enabled=False`` decodes every time and writes nothing. ``decoder`` names the decoding
    (part of the key: two readers of one file never share an entry)."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.dir = (root or cache_root()) / "decoded"
        self.hits = 0
        self.misses = 0
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

    def entry(self, path: Path, decoder: str) -> Path:
        fp = hashlib.sha256(f"{file_fingerprint(path)}\0{decoder}".encode()).hexdigest()
        return self.dir / fp[:2] / f"{fp}.npy"

    def get(self, path: Path, decode: Callable[[Path], np.ndarray], decoder: str) -> np.ndarray:
        if not self.enabled:
            return decode(path)
        entry = self.entry(path, decoder)
        if entry.is_file():
            try:
                arr = np.load(entry, mmap_mode="r", allow_pickle=False)
                self.hits += 1
                return arr
            except (OSError, ValueError):
                pass  # a damaged entry: decode again below
        arr = np.ascontiguousarray(decode(path))
        self.misses += 1
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
                os.replace(tmp, entry)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or full cache only costs speed
        return arr
