"""Rater names in reports: the dataset's ``DatasetInfo.rater_names``, recorded with each run
(``env_json["rater_names"]``, see ``engine/run_env.py``).

``group_rater_names(runs)``: the names all runs of a table group agree on (None when no run
recorded them or runs disagree: reports then write R1, R2, ...). ``short_names(names)``: table
headers: the names themselves when each fits ``SHORT`` characters, else unique abbreviations
(with a legend, ``rater_legend``). ``rater_key_name(key, names)``: the CSV column of a per-rater
key, ``per_rater_dice[0]`` -> ``per_rater_dice[tight]``.
"""

from __future__ import annotations

import json
import re

import pandas as pd

SHORT = 8


def _names(env_json) -> tuple[str, ...] | None:
    try:
        env = json.loads(env_json) if isinstance(env_json, str) else env_json
    except (TypeError, ValueError):
        return None
    names = env.get("rater_names") if isinstance(env, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return None
    return tuple(names)


def group_rater_names(runs: pd.DataFrame) -> list[str] | None:
    """Names every run that recorded them agrees on (see module doc)."""
    if "env_json" not in runs:
        return None
    found = {n for n in (_names(e) for e in runs["env_json"]) if n is not None}
    return list(next(iter(found))) if len(found) == 1 else None


def default_names(count: int) -> list[str]:
    return [f"R{k + 1}" for k in range(count)]


def short_names(names: list[str]) -> list[str]:
    """Header labels: the names when all fit ``SHORT`` characters; else each cut to the
    shortest unique prefix of at least 3 characters (at most ``SHORT``, ending in '.')."""
    if all(len(n) <= SHORT for n in names):
        return list(names)
    out = []
    for n in names:
        if len(n) <= SHORT:
            out.append(n)
            continue
        k = 3
        while k < SHORT - 1 and any(o != n and o.startswith(n[:k]) for o in names):
            k += 1
        out.append(n[:k] + ".")
    return out if len(set(out)) == len(out) else default_names(len(names))


def rater_legend(names: list[str] | None, count: int) -> str:
    """A note mapping headers to raters, or "" when the headers are the names themselves."""
    if names is None:
        return f"R1-R{count}: the dataset's raters in its order (names not recorded with the runs)."
    short = short_names(names)
    if short == list(names):
        return ""
    return "Raters: " + ", ".join(f"{s} = {n}" for s, n in zip(short, names, strict=True) if s != n) + "."


def rater_key_name(key: str, names: list[str] | None) -> str:
    """``metric[k]`` -> ``metric[<name k>]`` (unchanged without names or for other keys)."""
    m = re.fullmatch(r"(.+)\[(\d+)\]", key)
    if not m or names is None or int(m.group(2)) >= len(names):
        return key
    return f"{m.group(1)}[{names[int(m.group(2))]}]"
