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
"""

from __future__ import annotations

import importlib
import io
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


class UnsafePickleError(ValueError):
    """A pickle asked for a global outside the allow-list (it was not imported or called)."""


def _numpy_core(submodule: str) -> Any:
    """``numpy._core.<sub>`` (numpy >= 2) or ``numpy.core.<sub>`` (numpy 1.x), warning-free."""
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{submodule}")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only resolves allow-listed globals."""

    def __init__(self, file: Any, *, source: str = "<pickle>") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray",
                      "numpy.core.numeric", "numpy._core.numeric"):
            sub = module.rsplit(".", 1)[1]
            if (sub, name) in _NUMPY_ALLOWED:
                return getattr(_numpy_core(sub), name)
        elif module == "numpy" and name in ("ndarray", "dtype"):
            import numpy

            return getattr(numpy, name)
        elif module in ("builtins", "__builtin__") and name in _BUILTINS_ALLOWED:
            import builtins

            return getattr(builtins, name)
        elif (module, name) in _OTHER_ALLOWED:
            return getattr(importlib.import_module(module), name)
        raise UnsafePickleError(
            f"{self.source}: refused to load global {module}.{name} (only numpy arrays, dtypes "
            "and builtin containers are allowed in dataset pickles); nothing was executed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused persistent id {pid!r}")


def safe_load(path: str | Path) -> Any:
    """Unpickle ``path`` with ``RestrictedUnpickler``.

    FileNotFoundError if missing; ``UnsafePickleError`` (a ValueError) for a refused global;
    ValueError naming the file if it is truncated or not a pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle file {path} does not exist")
    with open(path, "rb") as fh:
        return _load_stream(io.BufferedReader(fh, buffer_size=1 << 20), str(path))


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """``safe_load`` for bytes already in memory."""
    return _load_stream(io.BytesIO(data), source)


def _load_stream(stream: Any, source: str) -> Any:
    try:
        return RestrictedUnpickler(stream, source=source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
            IndexError, KeyError) as exc:
        raise ValueError(f"{source}: not a readable dataset pickle ({type(exc).__name__}: {exc})") from exc
