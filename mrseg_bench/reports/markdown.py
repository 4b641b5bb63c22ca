"""Markdown tables (GitHub pipe tables, own small formatter: no ``tabulate`` dependency).

Same cells as the LaTeX tables: ``mean ± std``, ``**best**``, ``†`` for p < alpha against the
method under study, ``—`` for a missing capability; the caption follows the table.
"""

from __future__ import annotations

import re

from .cells import Cell, table_cells
from .tables import Table

_MD_SPECIAL = re.compile(r"([\\`*_|<>\[\]])")


def escape_md(text: str) -> str:
    """Backslash-escape characters Markdown would interpret (``_``, ``*``, ``|``...)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def _cell(c: Cell) -> str:
    if c.missing:
        return "—"
    if c.text:
        return escape_md(c.value)
    body = c.value + (f" ± {c.spread}" if c.spread else "")
    if c.best:
        body = f"**{body}**"
    return body + (" †" if c.significant else "")


def pipe_table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A pipe table; ``align`` entries are "l" or "r"."""
    sep = [":--" if a == "l" else "--:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(table: Table) -> str:
    arrows = {True: " ↑", False: " ↓", None: ""}
    labels = [escape_md(c.label) + arrows[c.higher_is_better] for c in table.columns]
    names = [escape_md(m + table.marks.get(m, "")) for m in table.methods]
    cells = table_cells(table)
    if table.transposed:  # one column per method
        header = ["Quantity"] + names
        rows = [[lab] + [_cell(row[j]) for row in cells] for j, lab in enumerate(labels)]
        align = ["l"] + ["r"] * len(names)
    else:
        header = ["Method"] + labels
        rows = [[name] + [_cell(c) for c in row] for name, row in zip(names, cells, strict=True)]
        align = ["l"] + ["l" if c.text else "r" for c in table.columns]
    notes = "".join(f"- {escape_md(n)}\n" for n in table.notes)
    return (pipe_table(header, rows, align) + "\n\n" + escape_md(table.caption) + "\n"
            + ("\n" + notes if notes else ""))
