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


class MethodEntry:
    """A registered method: ``factory(cfg=None) -> Method`` and its config dataclass
    ``config_cls``, so a method's default config (``config_cls()``) and its field names need no
    method object. ``config_cls`` is given at registration or read from the annotation of the
    factory's first parameter (``cfg: X | None = None``); a factory with neither is asked once,
    for ``factory().cfg``'s class. Calling the entry calls the factory."""

    def __init__(self, factory: Callable[..., Any], config_cls: type | None = None) -> None:
        self.factory = factory
        self._config_cls = config_cls or _annotated_config(factory)

    @property
    def config_cls(self) -> type:
        if self._config_cls is None:
            self._config_cls = type(self.factory().cfg)
        return self._config_cls

    def __call__(self, cfg: Any = None) -> Any:
        return self.factory(cfg)

    def default_config(self) -> Any:
        return self.config_cls()


def _annotated_config(factory: Callable[..., Any]) -> type | None:
    """The config dataclass annotated on ``factory``'s first parameter (``cfg: X | None``), or None."""
    import dataclasses
    import types
    import typing

    try:
        params = list(inspect.signature(factory).parameters)
        hint = typing.get_type_hints(factory).get(params[0]) if params else None
    except (TypeError, ValueError, NameError):
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), None)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


class MethodRegistry(Registry[MethodEntry]):
    """Methods: each name maps to a ``MethodEntry`` (factory, config class)."""

    def add(self, name: str, obj: Any, config_cls: type | None = None) -> None:
        if not isinstance(obj, MethodEntry):
            obj = MethodEntry(obj, config_cls)
        super().add(name, obj)


METHODS: MethodRegistry = MethodRegistry("method")
DATASETS: Registry[Any] = Registry("dataset")
METRICS: Registry[Any] = Registry("metric")


def register_method(name: str, config: type | None = None):
    """Decorator: register method factory ``f(cfg=None) -> Method`` under ``name`` with its
    config dataclass ``config`` (default: the annotation of ``f``'s first parameter). Returns
    ``f`` unchanged."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        METHODS.add(name, factory, config)
        return factory

    return deco


def register_dataset(name: str):
    """Register a dataset factory ``f(root=None, **options) -> MultiRaterDataset``."""
    return DATASETS.register(name)


def register_metric(name: str):
    """Register a metric spec (see ``mrseg_bench.metrics.suite.MetricSpec``)."""
    return METRICS.register(name)


def dataset_option_names(factory: Callable[..., Any]) -> list[str] | None:
    """The options dataset ``factory`` takes (its parameters but ``root``; a decorated factory:
    the wrapped function's); None when it takes any keyword (``**options``)."""
    target = factory
    while True:
        try:
            params = inspect.signature(target, follow_wrapped=False).parameters
        except (TypeError, ValueError):
            return None
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return [n for n in params if n != "root"]
        target = getattr(target, "__wrapped__", None)
        if target is None:
            return None


def check_dataset_options(dataset: str, options: Any, factory: Callable[..., Any] | None = None,
                          error: type[Exception] = ValueError) -> None:
    """The one dataset-option check: ``error`` naming the valid options when ``options`` has a
    key that dataset ``dataset``'s factory (looked up unless given) does not take."""
    valid = dataset_option_names(factory if factory is not None else DATASETS.get(dataset))
    unknown = [] if valid is None else sorted(set(options) - set(valid))
    if unknown:
        raise error(f"dataset {dataset!r}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid or [])}")


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
