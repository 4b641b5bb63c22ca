"""Typed overrides for config dataclasses (``--set key=value`` and preset files)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Union


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Convert ``value`` (often a CLI string) to annotation ``tp``; ValueError on mismatch."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: {key}={value!r} does not fit {tp}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ValueError(f"{where}: {key}={value!r} is not one of {list(choices)}")
    if origin in (list, tuple):
        if not isinstance(value, str | list | tuple):
            raise ValueError(f"{where}: {key}={value!r} is not a list")
        if isinstance(value, str):
            if value.strip().startswith("["):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}: {key}={value!r} is not a valid list ({exc.msg} at "
                                     f"character {exc.pos + 1}); write e.g. {key}=[32,16]") from None
                if not isinstance(value, list):
                    raise ValueError(f"{where}: {key}={value!r} is not a list")
            else:
                value = [v for v in value.split(",") if v]
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        conv = [_convert(v, inner, key, where) if inner is not Any and inner is not Ellipsis else v for v in value]
        return tuple(conv) if origin is tuple else conv
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: {key}={value!r} is not a boolean (true/false)")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: {key}={value!r} is not a number")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {key}={value!r} is not a valid {tp.__name__}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ValueError(f"{where}: {key}={value!r} is not an integer")
        return out
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: {key}={value!r} is not a string")
        return value
    return value


def apply_overrides(cfg: Any, overrides: dict[str, Any], where: str = "config") -> Any:
    """Return a copy of dataclass ``cfg`` with ``overrides`` applied, each converted to its field
    type. Unknown keys raise ValueError naming the valid ones."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    values = {k: _convert(v, hints[k], k, where) for k, v in overrides.items()}
    return dataclasses.replace(cfg, **values)
