"""What ``list`` shows for a dataset that needs a data root to be built: its raters and rater
identity as documented (README "Datasets"), and a clean one-line description from a docstring.

``facts(name)``: (raters, identity) text, or None for a dataset not described here (a plugin:
``list`` then builds it, or shows "—"). ``one_line(doc)``: the docstring's first sentence,
without RST markup (````x```` -> ``x``) and without "(see module docstring)" pointers.
"""

from __future__ import annotations

import re

FACTS: dict[str, tuple[str, str]] = {
    "lidc": ("4", "anonymous"),
    "npc": ("4", "fixed"),
    "riga": ("6", "fixed"),
    "qubiq": ("3-7 (per task)", "fixed"),
    "folder": ("from masks/<rater>/", "dataset.json (default fixed)"),
}


def facts(name: str) -> tuple[str, str] | None:
    return FACTS.get(name)


def one_line(doc: str | None) -> str:
    """The first sentence of ``doc`` (joined across line breaks), plain text."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.sub(r"\s*\((?:see|See) (?:the )?module docstring\)", "", text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r":\w+:`([^`]*)`", r"\1", text)
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return m.group(1) if m else text


def preset_note(dataset: str, options: dict) -> str:
    """Which configuration ``data check`` described: the dataset's own defaults plus ``options``,
    and the options each built-in preset sets for ``dataset`` ("" when no preset sets any)."""
    from .presets import load_preset, preset_names

    sets = []
    for name in preset_names():
        try:
            opts = load_preset(name).dataset_options(dataset)
        except Exception:  # noqa: BLE001 - a broken preset is reported where it is used
            continue
        if opts:
            sets.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())))
    if not sets:
        return ""
    given = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return ("note: this describes the dataset's own defaults" + (f" with {given}" if given else "")
            + ", not a preset's; presets set " + "; ".join(sets)
            + " (pass them with --set to check what a preset trains on)")
