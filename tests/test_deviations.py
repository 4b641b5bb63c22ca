"""docs/deviations.md is true against the presets: every comparison-preset value that differs
from the paper preset's has a row, and every row's value and paper value are the presets'."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import sys
import tomllib
from pathlib import Path

import pytest

from mrseg_bench.config import apply_overrides
from mrseg_bench.engine.run_config import RunConfig
from mrseg_bench.identity import hashed_fields
from mrseg_bench.identity import jsonable as _jsonable
from mrseg_bench.presets import load_preset, preset_names
from mrseg_bench.registry import METHODS

DOC = Path(__file__).resolve().parents[1] / "docs" / "deviations.md"
EXEMPT = {"paper", "smoke", "ci"}  # the reference itself, and the test-sized presets
Key = tuple[str, str, str]  # (preset, method or "run", key)

_NOT_HASHED = set(dataclasses.asdict(RunConfig())) - set(hashed_fields(RunConfig()))  # settings that leave results unchanged


@functools.cache
def defaults() -> dict[str, object]:
    """The default config of every built-in method (plugins and test toys left out)."""
    out = {}
    for m in METHODS.names():
        method = METHODS.get(m)()
        if type(method).__module__.startswith("mrseg_bench."):
            out[m] = method.cfg
    return out


def _value(cell: str):
    cell = cell.strip().strip("`")
    if cell == "none":
        return None
    return _jsonable(tomllib.loads(f"v = {cell}")["v"])


def parse_table(text: str) -> list[dict]:
    """Rows of the deviations table: presets, methods, key, value, paper, reason."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        rec = dict(zip(header, cells, strict=True))
        rows.append({"presets": [p.strip() for p in rec["presets"].split(",")],
                     "methods": [m.strip() for m in rec["methods"].split(",")], "key": rec["key"].strip("` "),
                     "value": _value(rec["value"]), "paper": _value(rec["paper"]), "reason": rec["reason"]})
    return rows


@functools.cache
def effective(preset_name: str) -> dict[str, dict]:
    """method (or "run") -> its whole config under the preset (JSON values)."""
    preset = load_preset(preset_name)
    out = {m: _jsonable(dataclasses.asdict(apply_overrides(cfg, preset.method_overrides(m, cfg))))
           for m, cfg in defaults().items()}
    out["run"] = _jsonable(dataclasses.asdict(apply_overrides(RunConfig(), preset.run)))
    return out


@functools.cache
def compared_keys(preset_name: str) -> dict[str, set[str]]:
    """method (or "run") -> the keys the preset or the paper preset sets (run: those that change results)."""
    preset, paper = load_preset(preset_name), load_preset("paper")
    out = {m: set(preset.method_overrides(m, cfg)) | set(paper.method_overrides(m, cfg)) for m, cfg in defaults().items()}
    out["run"] = (set(preset.run) | set(paper.run)) - _NOT_HASHED
    return out


def expand(patterns: list[str], key: str) -> list[str]:
    if patterns == ["run"]:
        return ["run"]
    return [m for m, cfg in defaults().items()
            if any(fnmatch.fnmatchcase(m, p) for p in patterns) and key in {f.name for f in dataclasses.fields(cfg)}]


def departures(preset_name: str) -> dict[Key, tuple]:
    """(preset, method, key) -> (preset value, paper value) where they differ."""
    mine, paper = effective(preset_name), effective("paper")
    return {(preset_name, m, k): (mine[m][k], paper[m][k]) for m, keys in compared_keys(preset_name).items()
            for k in keys if mine[m][k] != paper[m][k]}


def test_table_parses_and_every_row_is_true():
    rows = parse_table(DOC.read_text(encoding="utf-8"))
    assert len(rows) > 20 and all(r["reason"] for r in rows)
    paper = effective("paper")
    for r in rows:
        methods = expand(r["methods"], r["key"])
        assert methods, f"row {r['methods']} {r['key']}: names no method with that key"
        for p in r["presets"]:
            mine = effective(p)
            for m in methods:
                where = f"docs/deviations.md row ({p}, {m}, {r['key']})"
                assert r["key"] in compared_keys(p)[m], f"{where}: neither preset sets this key"
                assert mine[m][r["key"]] == r["value"], f"{where}: the preset holds {mine[m][r['key']]!r}"
                assert paper[m][r["key"]] == r["paper"], f"{where}: the paper preset holds {paper[m][r['key']]!r}"


def test_every_departure_has_a_row():
    rows = parse_table(DOC.read_text(encoding="utf-8"))
    covered = {(p, m, r["key"]) for r in rows for p in r["presets"] for m in expand(r["methods"], r["key"])}
    compared = sorted(set(preset_names()) - EXEMPT)
    assert {"default", "study"} <= set(compared)
    missing = [f"{k} = {v!r} (paper {pv!r})" for p in compared for k, (v, pv) in departures(p).items()
               if k not in covered]
    assert not missing, "not in docs/deviations.md: " + "; ".join(missing)


def test_a_changed_preset_value_is_caught(monkeypatch):
    real = load_preset

    def edited(name):
        p = real(name)
        if name != "study":
            return p
        return dataclasses.replace(p, method={**p.method, "pionono": {**p.method.get("pionono", {}),
                                                                      "recon_raters": "all"}})

    monkeypatch.setattr(sys.modules[__name__], "load_preset", edited)
    effective.cache_clear()
    compared_keys.cache_clear()
    try:
        assert departures("study")[("study", "pionono", "recon_raters")] == ("all", "one")
        with pytest.raises(AssertionError, match="pionono"):
            test_every_departure_has_a_row()
    finally:
        effective.cache_clear()
        compared_keys.cache_clear()
