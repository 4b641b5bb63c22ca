"""One registry type for methods, datasets and metrics, timm-style.

Built-ins register with decorators (``@register_method("probunet")``); third-party packages
register the same way from a module named in the entry-point group ``mrseg_bench.plugins``.
Names may be dotted (``fusion.majority``); lookups accept comma lists and fnmatch wildcards.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import logging
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any, Generic, TypeVar

from .paths import check_name

log = logging.getLogger(__name__)

T = TypeVar("T")

PLUGIN_GROUP = "mrseg_bench.plugins"


def did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean 'dpersona'?)`` for the closest known names (difflib), else ""."""
    import difflib

    close = difflib.get_close_matches(str(name), known, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class RegistryError(KeyError):
    """An unknown or duplicate name. ``str()`` is a one-line message naming the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A name -> object map with a decorator, wildcard matching and clear errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")``. A duplicate name raises ``RegistryError``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if not name or not isinstance(name, str):
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        try:  # names become folder and file names (run folders, reports)
            check_name(name, f"{self.kind} name")
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
        if name in self._items:
            raise RegistryError(f"duplicate {self.kind} name {name!r}: already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; unknown names fail listing the known ones."""
        load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                f"known: {', '.join(self.names()) or '(none)'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._items

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching an fnmatch ``pattern``, sorted."""
        load_plugins()
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def resolve(self, spec: str | Iterable[str]) -> list[str]:
        """Expand ``"a,b,fusion.*"`` (or a list) into known names, in order, without repeats.

        A plain name that is unknown, or a wildcard that matches nothing, raises RegistryError.
        """
        parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
        parts = [p for p in parts if p]
        if not parts:
            raise RegistryError(f"no {self.kind} given; known: {', '.join(self.names())}")
        out: list[str] = []
        for part in parts:
            if any(c in part for c in "*?["):
                hits = self.names(part)
                if not hits:
                    raise RegistryError(
                        f"{self.kind} pattern {part!r} matches nothing; known: {', '.join(self.names())}"
                    )
            else:
                self.get(part)
                hits = [part]
            out.extend(h for h in hits if h not in out)
        return out

    def items(self) -> list[tuple[str, T]]:
        load_plugins()
        return sorted(self._items.items())

    def __len__(self) -> int:
        return len(self._items)

    def remove(self, name: str) -> None:
        """Unregister (tests and plugin authors only)."""
        self._items.pop(name, None)


METHODS: Registry[Any] = Registry("method")
DATASETS: Registry[Any] = Registry("dataset")
METRICS: Registry[Any] = Registry("metric")


def register_method(name: str):
    """Register a method factory ``f(cfg=None) -> Method`` under ``name``."""
    return METHODS.register(name)


def register_dataset(name: str):
    """Register a dataset factory ``f(root=None, **options) -> MultiRaterDataset``."""
    return DATASETS.register(name)


def register_metric(name: str):
    """Register a metric spec (see ``mrseg_bench.metrics.suite.MetricSpec``)."""
    return METRICS.register(name)


_BUILTINS = (
    "mrseg_bench.metrics",
    "mrseg_bench.datasets",
    "mrseg_bench.baselines",
    "mrseg_bench.methods",
)
_loaded = False
_loading = False
plugin_errors: dict[str, str] = {}


def load_plugins(force: bool = False) -> dict[str, str]:
    """Import the built-in modules, then every entry point of ``mrseg_bench.plugins``.

    A plugin that fails to import is reported (warning + ``plugin_errors``), never fatal.
    Returns ``plugin_errors`` (entry-point name -> error message).
    """
    global _loaded, _loading
    if (_loaded and not force) or _loading:
        return plugin_errors
    _loading = True
    try:
        for mod in _BUILTINS:
            importlib.import_module(mod)
        for ep in metadata.entry_points(group=PLUGIN_GROUP):
            try:
                loaded = ep.load()
                # an entry point names a module (it registers on import) or a setup function
                if inspect.isfunction(loaded):
                    loaded()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the tool
                msg = f"{type(exc).__name__}: {exc}"
                plugin_errors[ep.name] = msg
                warnings.warn(
                    f"mrseg-bench plugin {ep.name!r} ({ep.value}) failed to load: {msg}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        _loaded = True
    finally:
        _loading = False
    return plugin_errors
