"""Search spaces: which method-config fields a tune varies, over which range, and why.

A method declares its space beside its config class, as the class attribute ``SEARCH_SPACE``
(a ``ClassVar``, not a config field): ``{field: Range}``. Every range carries ``source``, a
string saying where it comes from (the paper, the reference code, or our reasoning). The
learning rate ``lr`` is in every built-in method's space.

- ``Range(low, high, log=True, kind="float")``: ``suggest_float(low, high, log=log)``;
- ``kind="int"``: ``suggest_int(low, high, log=log)`` (both ends included);
- ``Range(choices=(...), kind="choice")``: ``suggest_categorical``.

A preset overrides a method's space with a ``[tune.<method>]`` section (exact method name), one
key per config field::

    [tune.dpersona]
    lr = { low = 3e-5, high = 3e-4, log = true, source = "around the reference's 1e-4" }
    bank_train = { choices = [50, 100, 200] }
    kl_weight = false          # drop this knob from the space

A table replaces the declared range of its field (or adds one); ``false`` removes it. A range
table's kind follows the field's type (an ``int`` field gives an integer range); ``source``
defaults to ``"preset <name>"``. The number of epochs is the budget, never a knob: a range on
``epochs`` or ``*_epochs`` is refused.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["float", "int", "choice"]
_RANGE_KEYS = {"low", "high", "log", "choices", "source"}


@dataclass(frozen=True)
class Range:
    """One knob's range (see the module docstring)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: Kind = "float"
    choices: tuple[Any, ...] = ()
    source: str = ""

    def check(self, where: str) -> None:
        """ValueError (one line, naming ``where``) when the range cannot be sampled."""
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError(f"{where}: give the range's source (paper, reference code or reasoning)")
        if self.kind == "choice":
            if not self.choices:
                raise ValueError(f"{where}: choices must list at least one value")
            if not all(isinstance(c, str | int | float | bool) for c in self.choices):
                raise ValueError(f"{where}: choices must be numbers, strings or booleans")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"{where}: choices repeat a value")
            return
        if self.kind not in ("float", "int"):
            raise ValueError(f"{where}: kind {self.kind!r} is not float, int or choice")
        nums = (self.low, self.high)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in nums):
            raise ValueError(f"{where}: low and high must be finite numbers, got {self.low!r}, {self.high!r}")
        if self.kind == "int" and not all(float(v).is_integer() for v in nums):
            raise ValueError(f"{where}: an integer range needs integer low and high, got {self.low!r}, {self.high!r}")
        if not self.low < self.high:
            raise ValueError(f"{where}: low must be below high, got low={self.low!r} high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"{where}: a log range needs low > 0, got {self.low!r}")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this range (both ends included)."""
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"[{self.low:g}, {self.high:g}]{' log' if self.log else ''}{' int' if self.kind == 'int' else ''}"


def log_uniform(low: float, high: float, source: str) -> Range:
    return Range(low, high, log=True, source=source)


def uniform(low: float, high: float, source: str) -> Range:
    return Range(low, high, source=source)


def integer(low: int, high: int, source: str, log: bool = False) -> Range:
    return Range(low, high, log=log, kind="int", source=source)


def choice(values, source: str) -> Range:
    return Range(choices=tuple(values), kind="choice", source=source)


def is_budget_field(name: str) -> bool:
    """Epoch counts are the equal budget of a tune, never searched."""
    return name == "epochs" or name.endswith("_epochs")


def _field_kinds(config_cls: type) -> dict[str, Kind]:
    """Each field of ``config_cls``: "int" (an int field), "float" (a float field) or "choice"."""
    hints = typing.get_type_hints(config_cls)
    out: dict[str, Kind] = {}
    for f in dataclasses.fields(config_cls):
        tp = hints.get(f.name)
        args = {a for a in typing.get_args(tp) if a is not type(None)} or {tp}
        out[f.name] = "int" if args == {int} else "float" if args <= {int, float} and float in args else "choice"
    return out


def check_space(space: Mapping[str, Range], config_cls: type, where: str) -> None:
    """ValueError when a range names no field of ``config_cls``, an epoch field, or cannot be
    sampled, or when its kind does not fit the field (a float range on an int field, ...)."""
    kinds = _field_kinds(config_cls)
    for name, rng in space.items():
        at = f"{where}: {name}"
        if name not in kinds:
            raise ValueError(f"{at}: not a field of {config_cls.__name__} (fields: {', '.join(sorted(kinds))})")
        if is_budget_field(name):
            raise ValueError(f"{at}: epochs are the tune's equal budget, not a knob")
        if not isinstance(rng, Range):
            raise ValueError(f"{at}: expected a Range, got {type(rng).__name__}")
        rng.check(at)
        if rng.kind != "choice" and rng.kind != kinds[name]:
            raise ValueError(f"{at}: a {rng.kind} range on a {kinds[name]} field")


def declared_space(config_cls: type) -> dict[str, Range]:
    """The space declared beside ``config_cls`` (``SEARCH_SPACE``); empty when none is."""
    return dict(getattr(config_cls, "SEARCH_SPACE", None) or {})


def parse_override(section: Any, config_cls: type, where: str, preset: str) -> dict[str, Range | None]:
    """A preset's ``[tune.<method>]`` table -> ``{field: Range or None (remove)}`` (module
    docstring); ValueError (one line, naming ``where``) on anything else."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: must be a table of field = {{ low, high, log }} | {{ choices }} | false")
    kinds = _field_kinds(config_cls)
    out: dict[str, Range | None] = {}
    for name, spec in section.items():
        at = f"{where} {name}"
        if name not in kinds:
            raise ValueError(f"{at}: not a field of {config_cls.__name__} (fields: {', '.join(sorted(kinds))})")
        if spec is False:
            out[name] = None
            continue
        if not isinstance(spec, Mapping):
            raise ValueError(f"{at}: expected {{ low = .., high = .., log = .. }}, {{ choices = [..] }} or false")
        bad = sorted(set(spec) - _RANGE_KEYS)
        if bad:
            raise ValueError(f"{at}: unknown key(s) {', '.join(bad)}; valid: {', '.join(sorted(_RANGE_KEYS))}")
        source = spec.get("source", f"preset {preset}")
        if "choices" in spec:
            if set(spec) - {"choices", "source"}:
                raise ValueError(f"{at}: give either choices or low/high, not both")
            if not isinstance(spec["choices"], list):
                raise ValueError(f"{at}: choices must be a list")
            rng = Range(choices=tuple(spec["choices"]), kind="choice", source=source)
        else:
            if "low" not in spec or "high" not in spec:
                raise ValueError(f"{at}: give low and high (or choices)")
            if not isinstance(spec.get("log", False), bool):
                raise ValueError(f"{at}: log must be true or false")
            kind = kinds[name] if kinds[name] != "choice" else "float"
            rng = Range(spec["low"], spec["high"], log=spec.get("log", False), kind=kind, source=source)
        check_space({name: rng}, config_cls, where)
        out[name] = rng
    return out


def effective_space(method: str, config_cls: type, override: Any = None, preset: str = "") -> dict[str, Range]:
    """The space a tune of ``method`` searches: the declared one with the preset's override
    applied; ValueError when it is empty or invalid."""
    space = declared_space(config_cls)
    check_space(space, config_cls, f"method {method!r} SEARCH_SPACE")
    if override is not None:
        for name, rng in parse_override(override, config_cls, f"preset {preset!r}: [tune.{method}]", preset).items():
            if rng is None:
                space.pop(name, None)
            else:
                space[name] = rng
    if not space:
        raise ValueError(f"method {method!r}: no search space (declare SEARCH_SPACE beside its config class "
                         f"or give a [tune.{method}] preset section)")
    return space


def suggest(trial, space: Mapping[str, Range]) -> dict[str, Any]:
    """Draw one value per knob from an optuna ``trial``."""
    out: dict[str, Any] = {}
    for name, r in space.items():
        if r.kind == "choice":
            out[name] = trial.suggest_categorical(name, list(r.choices))
        elif r.kind == "int":
            out[name] = trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
        else:
            out[name] = trial.suggest_float(name, float(r.low), float(r.high), log=r.log)
    return out


def preset_point(space: Mapping[str, Range], method_config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The planned config's own value of every knob in ``space``, and the knobs whose value lies
    outside its range (then there is no preset point: the first list is empty)."""
    outside = [name for name, r in space.items() if not r.contains(method_config.get(name))]
    if outside:
        return {}, outside
    return {name: method_config[name] for name in space}, []
