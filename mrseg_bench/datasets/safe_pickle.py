"""A restricted unpickler for the untrusted pickles the datasets ship as (LIDC, QUBIQ).

Only these globals may be looked up; anything else raises ``UnsafePickleError`` *before* it is
called, so a malicious ``__reduce__`` (``os.system``, ``eval``, ...) never runs:

- numpy array reconstruction: ``numpy[._]core.multiarray._reconstruct`` and ``.scalar``,
  ``numpy[._]core.numeric._frombuffer`` (protocol 5), ``numpy.ndarray``, ``numpy.dtype``;
- plain builtin containers and scalars (dict, list, tuple, set, frozenset, bytes, bytearray, str,
  int, float, complex, bool), ``collections.OrderedDict``, and ``_codecs.encode`` (how protocol
  0-2 pickles store ``bytes``).

The file is streamed through the pure-Python ``pickle._Unpickler`` (no extra in-memory copy of
its bytes), so peak memory is the size of the unpickled objects, not twice the file size; it is
used instead of the C one because its ``BUILD`` opcode can be charged (below).

Allocation cap: every allow-listed callable the pickle calls is charged, *before* it runs, an
upper bound of the memory its result takes beyond the file: ``numpy.ndarray(shape, dtype)`` and
``_reconstruct`` their shape x itemsize, ``numpy...scalar`` its itemsize, ``bytes``/``bytearray``
the bytes they build (``n``, or the length of a buffer/str/iterable argument), ``list``/``tuple``
8 bytes per element and ``set``/``frozenset``/``dict``/``OrderedDict`` 128 (plus 128 per element
when iterating an array or a str builds a new object per element), ``_codecs.encode`` 1 byte per
character (latin-1) or 4 (utf-8; other codecs are refused), ``str`` 4 bytes per decoded byte
(``str`` of anything but bytes or a scalar is refused: its repr can be any size). The charges
are summed over the whole load, so one stored object reused through the memo is charged each
time it is expanded; past ``max_bytes`` (default ``max(64 MiB, 16 x file size)``; override
with the ``max_bytes`` argument or the environment variable ``MRSEG_PICKLE_MAX_BYTES``) the load
fails with ``PickleBombError`` naming the file, before that allocation. Arrays rebuilt from
their stored bytes (``_frombuffer``) share those bytes; an array's ``__setstate__`` (the
``BUILD`` opcode) is charged the size of its raw data, which numpy copies when it is
byte-swapped, unaligned or small.
"""

from __future__ import annotations

import importlib
import io
import math
import pickle
import struct
from pathlib import Path
from typing import Any

from .limits import env_limit

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
_SCALARS = {"int", "float", "complex", "bool"}
_ENCODINGS = {"latin1": 1, "latin-1": 1, "iso-8859-1": 1, "iso8859-1": 1, "l1": 1,
              "utf-8": 4, "utf8": 4}


MIN_MAX_BYTES = 64 * 2**20
FILE_SIZE_FACTOR = 16
MAX_BYTES_ENV = "MRSEG_PICKLE_MAX_BYTES"


class UnsafePickleError(ValueError):
    """A pickle asked for a global outside the allow-list (it was not imported or called)."""


class PickleBombError(UnsafePickleError):
    """A pickle asked to allocate more memory than its size justifies (nothing was allocated)."""


def default_max_bytes(file_size: int) -> int:
    """The allocation budget for a pickle of ``file_size`` bytes (see the module doc)."""
    value = env_limit(MAX_BYTES_ENV, 0, "bytes")
    return max(MIN_MAX_BYTES, FILE_SIZE_FACTOR * int(file_size)) if value is None else value


def _as_shape(shape: Any) -> tuple[int, ...] | None:
    """``shape`` as a tuple of non-negative ints, or None when it is not one."""
    import numpy

    if isinstance(shape, int | numpy.integer) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple | list) or not all(
            isinstance(d, int | numpy.integer) and not isinstance(d, bool) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _length(obj: Any, source: str, name: str) -> int:
    """``len(obj)``; UnsafePickleError when ``name`` would iterate an object of unknown size."""
    try:
        return len(obj)
    except TypeError:
        raise UnsafePickleError(f"{source}: refused {name}() of {type(obj).__name__} (no size to "
                                "bound it by); nothing was built") from None


def _describe(args: tuple) -> str:
    """A short description of call arguments: their types and sizes, never their values."""
    parts = []
    for a in args[:3]:
        try:
            parts.append(f"{type(a).__name__}[{len(a)}]")
        except TypeError:
            parts.append(type(a).__name__)
    return "(" + ", ".join(parts) + ")"


def _numpy_core(submodule: str) -> Any:
    """``numpy._core.<sub>`` (numpy >= 2) or ``numpy.core.<sub>`` (numpy 1.x), warning-free."""
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{submodule}")


class RestrictedUnpickler(pickle._Unpickler):
    """``pickle._Unpickler`` whose ``find_class`` only resolves allow-listed globals and whose
    calls and array ``BUILD``s are charged against ``max_bytes`` before they allocate."""

    dispatch = dict(pickle._Unpickler.dispatch)

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

    def _guarded_builtin(self, name: str, func: Any):
        """``func`` (an allow-listed builtin) charged ``_build_cost`` before it is called."""
        def build(*args: Any, **kwargs: Any) -> Any:
            self._charge(self._build_cost(name, args, kwargs), f"{name}() of {_describe(args)}")
            return func(*args, **kwargs)

        return build

    def _build_cost(self, name: str, args: tuple, kwargs: dict) -> int:
        """Upper bound of the bytes ``name(*args, **kwargs)`` allocates (see the module doc)."""
        first = args[0] if args else None
        if name in _SCALARS:
            if isinstance(first, str | bytes | bytearray):
                return 64 + 4 * len(first)
            return 64
        if name in ("bytes", "bytearray"):
            if first is None:
                return 64
            if isinstance(first, int) and not isinstance(first, bool):
                return 64 + max(int(first), 0)
            if isinstance(first, str):
                return 64 + 4 * len(first)
            try:
                return 64 + memoryview(first).nbytes
            except TypeError:
                return 64 + _length(first, self.source, name)
        if name == "str":
            if first is None or isinstance(first, str):
                return 64
            if isinstance(first, bytes | bytearray) and len(args) + len(kwargs) > 1:
                return 64 + 4 * len(first)
            if isinstance(first, int | float | complex | bool) and len(args) == 1:
                return 256
            raise UnsafePickleError(f"{self.source}: refused str() of {_describe(args)} (its size "
                                    "is not bounded by the file); nothing was built")
        if name == "encode":
            enc = (args[1] if len(args) > 1 else kwargs.get("encoding", "utf-8"))
            norm = str(enc).lower().replace("_", "-")
            if not isinstance(first, str) or norm not in _ENCODINGS:
                raise UnsafePickleError(f"{self.source}: refused _codecs.encode of {_describe(args)} "
                                        "(only str to latin-1 or utf-8); nothing was built")
            return 64 + _ENCODINGS[norm] * len(first)
        # containers: list, tuple, set, frozenset, dict, OrderedDict
        if first is None:
            return 64
        import numpy

        per_item = 8 if name in ("list", "tuple") else 128
        if isinstance(first, numpy.ndarray | str):
            per_item += 128  # a new scalar, view or 1-char str per element
        return 64 + per_item * _length(first, self.source, name)

    def _guarded_scalar(self, dtype: Any, *args: Any) -> Any:
        import numpy

        if isinstance(dtype, numpy.dtype) and not dtype.hasobject:
            self._charge(dtype.itemsize, f"a numpy scalar of dtype {dtype}")
        return _numpy_core("multiarray").scalar(dtype, *args)

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray",
                      "numpy.core.numeric", "numpy._core.numeric"):
            sub = module.rsplit(".", 1)[1]
            if (sub, name) == ("multiarray", "_reconstruct"):
                return self._guarded_reconstruct
            if (sub, name) == ("multiarray", "scalar"):
                return self._guarded_scalar
            if (sub, name) in _NUMPY_ALLOWED:
                return getattr(_numpy_core(sub), name)
        elif module == "numpy" and name == "ndarray":
            return self._guarded_ndarray
        elif module == "numpy" and name == "dtype":
            import numpy

            return numpy.dtype
        elif module in ("builtins", "__builtin__") and name in _BUILTINS_ALLOWED:
            import builtins

            return self._guarded_builtin(name, getattr(builtins, name))
        elif (module, name) in _OTHER_ALLOWED:
            return self._guarded_builtin(name, getattr(importlib.import_module(module), name))
        raise UnsafePickleError(
            f"{self.source}: refused to load global {module}.{name} (only numpy arrays, dtypes "
            "and builtin containers are allowed in dataset pickles); nothing was executed"
        )

    def load_build(self) -> None:
        """``BUILD``: an ndarray's ``__setstate__`` is charged the size of its raw data first."""
        import numpy

        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, numpy.ndarray) and isinstance(state, tuple) and state:
            raw = state[-1]
            try:
                nbytes = memoryview(raw).nbytes
            except TypeError:
                nbytes = 8 * _length(raw, self.source, "ndarray.__setstate__")
            self._charge(nbytes, "the data of an array (copied by __setstate__)")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

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
            IndexError, KeyError, MemoryError, OverflowError, struct.error) as exc:
        raise ValueError(f"{source}: not a readable dataset pickle ({type(exc).__name__}: {exc})") from exc
