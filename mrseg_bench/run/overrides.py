"""User overrides of a grid: ``--set`` routing and dataset options.

- ``parse_sets(["a=1", "dpersona.b=2"])`` -> ``[("a", "1"), ("dpersona.b", "2")]``.
- ``route_sets(pairs, methods, fields)`` sends each pair to the run config (``run.KEY``), the
  dataset options (``dataset.KEY``) or the methods: ``METHOD.KEY`` (fnmatch patterns allowed) or
  a bare ``KEY`` that goes to every selected method whose config has it.
- ``canonical_options(dataset, opts)``: every option of the dataset with its value, converted to
  the annotated type, so ``"12"`` from ``--set`` and ``12`` from a preset are one config.

Unknown keys raise ``UsageError`` (one line naming the valid choices); the dataset-option check is
``registry.check_dataset_options``, the one used by presets and the dataset factories too.
"""

from __future__ import annotations

import fnmatch
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

from ..config import _convert
from ..identity import jsonable
from ..registry import DATASETS, check_dataset_options


class UsageError(ValueError):
    """Bad user input found while planning or reading a spec (nothing has been written)."""


def parse_sets(sets: Sequence[str]) -> list[tuple[str, str]]:
    """``["a=1", "dpersona.b=2"]`` -> ``[("a","1"), ("dpersona.b","2")]``; UsageError if no '='."""
    out = []
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {s!r}: expected key=value, method.key=value, dataset.key=value or run.key=value")
        out.append((key.strip(), value.strip()))
    return out


def route_sets(pairs: Sequence[tuple[str, str]], methods: list[str], fields: dict[str, set[str]]
               ) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
    """Split ``--set`` pairs into (run, dataset, per-method) overrides; ``fields``: each
    method's config field names."""
    run_o: dict[str, str] = {}
    ds_o: dict[str, str] = {}
    meth_o: dict[str, dict[str, str]] = {m: {} for m in methods}
    for key, value in pairs:
        scope, dot, sub = key.rpartition(".")
        if not dot:
            hits = [m for m in methods if key in fields[m]]
            if not hits:
                valid = sorted(set().union(*fields.values()))
                raise UsageError(f"--set {key}: no selected method has this key; valid: {', '.join(valid)}")
            for m in hits:
                meth_o[m][key] = value
        elif scope == "run":
            run_o[sub] = value
        elif scope == "dataset":
            ds_o[sub] = value
        else:
            hits = [m for m in methods if fnmatch.fnmatchcase(m, scope)]
            if not hits:
                raise UsageError(f"--set {key}: {scope!r} is not a selected method; selected: {', '.join(methods)}"
                                 " (or use run.KEY / dataset.KEY)")
            for m in hits:
                meth_o[m][sub] = value
    return run_o, ds_o, meth_o


def check_options(dataset: str, opts: dict[str, Any], factory: Callable | None = None) -> None:
    """UsageError naming the valid options if ``opts`` has a key dataset ``dataset`` does not take."""
    check_dataset_options(dataset, opts, factory, error=UsageError)


def canonical_options(dataset: str, opts: dict[str, Any], factory: Callable | None = None) -> dict[str, Any]:
    """Every option of ``dataset``'s factory with its value: the defaults, overridden by ``opts``
    converted to the annotated types. Options the factory does not annotate are kept as given."""
    target = inspect.unwrap(factory if factory is not None else DATASETS.get(dataset))
    try:
        params = inspect.signature(target).parameters
        hints = typing.get_type_hints(target)
    except (TypeError, ValueError, NameError):
        return dict(opts)
    out = {n: p.default for n, p in params.items()
           if n != "root" and p.default is not inspect.Parameter.empty
           and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    for k, v in opts.items():
        out[k] = _convert(v, hints[k], k, "dataset") if k in hints else v
    return out


def differences(now: dict[str, Any], base: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{prefix + key: now[key]}`` for the keys whose value differs from ``base``'s (JSON-able)."""
    now, base = jsonable(now), jsonable(base)
    return {f"{prefix}{k}": v for k, v in now.items() if k not in base or base[k] != v}
