"""Presets: TOML data files shipped in the package (``smoke``, ``default``, ``paper``).

A preset has ``description``, a ``[run]`` section (``RunConfig`` fields), ``[dataset.<name>]``
option sections, ``[method.<pattern>]`` config overrides, and ``[tune.<method>]`` search-space
overrides for ``mrseg-bench tune`` (``mrseg_bench.tune.space``; ignored by ``run``). A method
section's name may be an fnmatch pattern (``"fusion.*"``, ``"*"``): a pattern section applies
each key only to methods whose config has that field; an exact-name section is strict (unknown
keys are errors). Sections are applied from the least to the most specific (patterns in file order, then the exact name), and
``--set`` overrides all of them.

A built-in preset is named by its name (``smoke``); a user's file by its path as given, normalised
(``presets/ci.toml``, ``smoke.toml``): it never takes a built-in's name, so its runs never shadow
the built-in's in reports and checks.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tomllib  # Python >= 3.11 (requires-python)
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

_SECTIONS = {"description", "run", "dataset", "method", "tune"}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str = ""
    run: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    method: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> search-space override

    def dataset_options(self, dataset: str) -> dict[str, Any]:
        """Options of ``[dataset.<dataset>]`` (empty if the preset has none)."""
        return dict(self.dataset.get(dataset, {}))

    def method_overrides(self, method: str, cfg: Any) -> dict[str, Any]:
        """The overrides for ``method`` whose config dataclass instance is ``cfg``."""
        fields = {f.name for f in dataclasses.fields(cfg)}
        out: dict[str, Any] = {}
        for pattern, values in self.method.items():
            if pattern != method and fnmatch.fnmatchcase(method, pattern):
                out.update({k: v for k, v in values.items() if k in fields})
        if method in self.method:
            out.update(self.method[method])  # strict: apply_overrides rejects unknown keys
        return out


def preset_names() -> list[str]:
    """The presets shipped in the package."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> Preset:
    """A shipped preset by name, or a ``.toml`` file path. ValueError names the valid choices."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} does not exist")
        # a user preset is named by its path (never its stem), so it cannot shadow a built-in
        text, pname = path.read_text(encoding="utf-8"), os.path.normpath(name)
    else:
        if name not in preset_names():
            raise ValueError(f"unknown preset {name!r}; valid: {', '.join(preset_names())} or a .toml file")
        text, pname = resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8"), name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"preset {name!r}: invalid TOML ({exc})") from None
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        raise ValueError(f"preset {name!r}: unknown section(s) {', '.join(unknown)}; valid: {', '.join(sorted(_SECTIONS))}")
    for sec in ("dataset", "method", "tune"):
        for key, val in data.get(sec, {}).items():
            if not isinstance(val, dict):
                raise ValueError(f"preset {name!r}: [{sec}.{key}] must be a table, got {type(val).__name__}")
    preset = Preset(pname, str(data.get("description", "")), dict(data.get("run", {})),
                    {k: dict(v) for k, v in data.get("dataset", {}).items()},
                    {k: dict(v) for k, v in data.get("method", {}).items()},
                    {k: dict(v) for k, v in data.get("tune", {}).items()})
    check_preset(preset, name)
    return preset


def check_preset(preset: Preset, source: str) -> None:
    """ValueError naming the section for anything the preset cannot mean: a ``[run]`` key that
    is not a RunConfig field; a ``[dataset.X]`` for an unknown dataset or with an option its
    factory does not take; a ``[method.X]`` for an unknown method (a pattern matching none); a
    method-section key that no method the section matches has in its config."""
    from ..engine.run_config import RunConfig
    from ..registry import DATASETS, METHODS, check_dataset_options

    def fail(section: str, what: str) -> ValueError:
        return ValueError(f"preset {source!r}: [{section}] {what}")

    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    bad = sorted(set(preset.run) - run_fields)
    if bad:
        raise fail("run", f"unknown key(s) {', '.join(bad)}; valid: {', '.join(sorted(run_fields))}")
    for ds, opts in preset.dataset.items():
        if ds not in DATASETS:
            raise fail(f"dataset.{ds}", f"unknown dataset {ds!r}; known: {', '.join(DATASETS.names())}")
        try:
            check_dataset_options(ds, opts)
        except ValueError as exc:
            raise fail(f"dataset.{ds}", str(exc).split(": ", 1)[1]) from None
    for method, section in preset.tune.items():
        if method not in METHODS:
            raise fail(f"tune.{method}", f"unknown method {method!r} (exact names only); known: {', '.join(METHODS.names())}")
        from ..tune.space import parse_override

        parse_override(section, METHODS.get(method).config_cls, f"preset {source!r}: [tune.{method}]", preset.name)
    for pattern, values in preset.method.items():
        section = f'method."{pattern}"' if any(c in pattern for c in "*?[") else f"method.{pattern}"
        hits = METHODS.names(pattern)
        if not hits:
            raise fail(section, f"matches no method; known: {', '.join(METHODS.names())}")
        fields: set[str] = set()
        for m in hits:
            fields |= {f.name for f in dataclasses.fields(METHODS.get(m).config_cls)}
        bad = sorted(set(values) - fields)
        if bad:
            raise fail(section, f"unknown key(s) {', '.join(bad)}: no method it matches "
                                f"({', '.join(hits)}) has them")
