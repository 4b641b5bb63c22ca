"""A restricted unpickler for the untrusted pickles the datasets ship as (LIDC, QUBIQ).

Only these globals may be looked up; anything else raises ``UnsafePickleError`` *before* it is
called, so a malicious ``__reduce__`` (``os.system``, ``eval``, ...) never runs:

- numpy array reconstruction: ``numpy[._]core.multiarray._reconstruct`` and ``.scalar``,
  ``numpy[._]core.numeric._frombuffer`` (protocol 5), ``numpy.ndarray``, ``numpy.dtype``;
- plain builtin containers and scalars (dict, list, tuple, set, frozenset, bytes, bytearray, str,
  int, float, complex, bool), ``collections.OrderedDict``, and ``_codecs.encode`` (how protocol
  0-2 pickles store ``bytes``).

The file is streamed through ``pickle.Unpickler`` (no extra in-memory copy of its bytes), so
peak memory is the size of the unpickled objects, not twice the file size.

Allocation cap: the only allow-listed callables that allocate memory not present in the file
are ``numpy.ndarray(shape, dtype)`` and ``bytes(n)``/``bytearray(n)``. Their sizes are computed
*before* anything is allocated and summed; past ``max_bytes`` (default
``max(64 MiB, 16 x file size)``; override with the ``max_bytes`` argument or the environment
variable ``MRSEG_PICKLE_MAX_BYTES``) the load fails with ``PickleBombError`` naming the file.
Arrays rebuilt from their stored bytes (``_reconstruct`` + ``__setstate__``, ``_frombuffer``)
are bounded by the file itself.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

_NUMPY_ALLOWED = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}
_BUILTINS_ALLOWED = {
    "dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float",
    "complex", "bool",
}
_OTHER_ALLOWED = {("collections", "OrderedDict"), ("_codecs", "encode")}


MIN_MAX_BYTES = 64 * 2**20
FILE_SIZE_FACTOR = 16
MAX_BYTES_ENV = "MRSEG_PICKLE_MAX_BYTES"


class UnsafePickleError(ValueError):
    """A pickle asked for a global outside the allow-list (it was not imported or called)."""


class PickleBombError(UnsafePickleError):
    """A pickle asked to allocate more memory than its size justifies (nothing was allocated)."""


def default_max_bytes(file_size: int) -> int:
    """The allocation budget for a pickle of ``file_size`` bytes (see the module doc)."""
    env = os.environ.get(MAX_BYTES_ENV, "").strip()
    if env:
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_BYTES_ENV}={env!r}: expected a number of bytes") from None
        if value < 0:
            raise ValueError(f"{MAX_BYTES_ENV}={env!r}: must be >= 0")
        return value
    return max(MIN_MAX_BYTES, FILE_SIZE_FACTOR * int(file_size))


def _as_shape(shape: Any) -> tuple[int, ...] | None:
    """``shape`` as a tuple of non-negative ints, or None when it is not one."""
    import numpy

    if isinstance(shape, int | numpy.integer) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple | list) or not all(
            isinstance(d, int | numpy.integer) and not isinstance(d, bool) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _numpy_core(submodule: str) -> Any:
    """``numpy._core.<sub>`` (numpy >= 2) or ``numpy.core.<sub>`` (numpy 1.x), warning-free."""
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{submodule}")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only resolves allow-listed globals."""

    def __init__(self, file: Any, *, source: str = "<pickle>", max_bytes: int | None = None) -> None:
        super().__init__(file)
        self.source = source
        self.max_bytes = default_max_bytes(0) if max_bytes is None else int(max_bytes)
        self.allocated = 0

    def _charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` against the budget; PickleBombError past it (before allocating)."""
        if nbytes > self.max_bytes - self.allocated:
            raise PickleBombError(
                f"{self.source}: refused to build {what} of {nbytes:,} bytes ({self.allocated:,} already "
                f"built; limit {self.max_bytes:,} bytes, derived from the file size; raise it with "
                f"{MAX_BYTES_ENV}); nothing was allocated")
        self.allocated += nbytes

    def _guarded_ndarray(self, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> Any:
        import numpy

        dims = _as_shape(shape)
        if dims is None or any(d < 0 for d in dims):
            raise UnsafePickleError(f"{self.source}: numpy.ndarray with shape {shape!r} refused")
        itemsize = numpy.dtype(dtype).itemsize
        self._charge(itemsize * math.prod(dims), f"an array of shape {dims} and dtype {numpy.dtype(dtype)}")
        return numpy.ndarray(dims, dtype, *args, **kwargs)

    def _guarded_reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> Any:
        """``numpy...multiarray._reconstruct`` for plain ndarrays (``subtype`` is what the
        pickle's ``numpy.ndarray`` global resolved to), its allocation charged first."""
        import numpy

        if subtype != self._guarded_ndarray:
            raise UnsafePickleError(f"{self.source}: _reconstruct of {subtype!r} refused (only numpy.ndarray)")
        dims = _as_shape(shape)
        if dims is None or any(d < 0 for d in dims):
            raise UnsafePickleError(f"{self.source}: numpy array with shape {shape!r} refused")
        dt = numpy.dtype(dtype)
        self._charge(dt.itemsize * math.prod(dims), f"an array of shape {dims} and dtype {dt}")
        return _numpy_core("multiarray")._reconstruct(numpy.ndarray, dims, dtype)

    def _guarded_bytes(self, cls: type):
        def build(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], int) and not isinstance(args[0], bool):
                self._charge(max(int(args[0]), 0), f"{cls.__name__}(n)")
            return cls(*args, **kwargs)

        return build

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray",
                      "numpy.core.numeric", "numpy._core.numeric"):
            sub = module.rsplit(".", 1)[1]
            if (sub, name) == ("multiarray", "_reconstruct"):
                return self._guarded_reconstruct
            if (sub, name) in _NUMPY_ALLOWED:
                return getattr(_numpy_core(sub), name)
        elif module == "numpy" and name == "ndarray":
            return self._guarded_ndarray
        elif module == "numpy" and name == "dtype":
            import numpy

            return numpy.dtype
        elif module in ("builtins", "__builtin__") and name in _BUILTINS_ALLOWED:
            import builtins

            if name in ("bytes", "bytearray"):
                return self._guarded_bytes(getattr(builtins, name))
            return getattr(builtins, name)
        elif (module, name) in _OTHER_ALLOWED:
            return getattr(importlib.import_module(module), name)
        raise UnsafePickleError(
            f"{self.source}: refused to load global {module}.{name} (only numpy arrays, dtypes "
            "and builtin containers are allowed in dataset pickles); nothing was executed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused persistent id {pid!r}")


def safe_load(path: str | Path, max_bytes: int | None = None) -> Any:
    """Unpickle ``path`` with ``RestrictedUnpickler``.

    FileNotFoundError if missing; ``UnsafePickleError`` (a ValueError) for a refused global;
    ``PickleBombError`` (an UnsafePickleError) for an allocation past ``max_bytes`` (default
    ``default_max_bytes(file size)``); ValueError naming the file if it is truncated or not a pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle file {path} does not exist")
    limit = default_max_bytes(path.stat().st_size) if max_bytes is None else max_bytes
    with open(path, "rb") as fh:
        return _load_stream(io.BufferedReader(fh, buffer_size=1 << 20), str(path), limit)


def safe_loads(data: bytes, source: str = "<bytes>", max_bytes: int | None = None) -> Any:
    """``safe_load`` for bytes already in memory."""
    limit = default_max_bytes(len(data)) if max_bytes is None else max_bytes
    return _load_stream(io.BytesIO(data), source, limit)


def _load_stream(stream: Any, source: str, max_bytes: int) -> Any:
    try:
        return RestrictedUnpickler(stream, source=source, max_bytes=max_bytes).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
            IndexError, KeyError, MemoryError, OverflowError) as exc:
        raise ValueError(f"{source}: not a readable dataset pickle ({type(exc).__name__}: {exc})") from exc
