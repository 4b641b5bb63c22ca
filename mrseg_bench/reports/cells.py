"""Formatting of one table cell, shared by the LaTeX and Markdown renderers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .columns import Column
from .tables import Table


@dataclass(frozen=True)
class Cell:
    """``value``: "0.123", ``spread``: "0.004" or "" (one seed), ``missing``: render "—"."""

    value: str = ""
    spread: str = ""
    best: bool = False
    significant: bool = False
    missing: bool = False
    text: bool = False


def fmt_number(x: float, col: Column) -> str:
    return format(x / col.scale, col.fmt)


def table_cells(table: Table) -> list[list[Cell]]:
    """Cells row by row (methods) and column by column (``table.columns``)."""
    best = table.best()
    sig = table.significant()
    rows: list[list[Cell]] = []
    for method in table.methods:
        row: list[Cell] = []
        for col in table.columns:
            if not bool(table.available.at[method, col.key]):
                row.append(Cell(missing=True))
                continue
            if col.text:
                row.append(Cell(value=str(table.text.at[method, col.key]), text=True))
                continue
            mean = float(table.mean.at[method, col.key])
            std = float(table.std.at[method, col.key])
            spread = fmt_number(std, col) if int(table.n.at[method, col.key]) > 1 and math.isfinite(std) else ""
            if spread and std == 0 and col.fmt.endswith(".0f"):  # a whole number that never varies (N)
                spread = ""
            row.append(Cell(value=fmt_number(mean, col), spread=spread,
                            best=bool(best.at[method, col.key]),
                            significant=col.significance and bool(sig.at[method, col.key])))
        rows.append(row)
    return rows


def csv_frame(table: Table):
    """Numbers, not strings: one row per method (and per reference row, flagged in a
    ``reference`` column when there is one); ``<key>_mean``, ``_std``, ``_n``, ``_p``
    per numeric column (empty where unavailable), the raw text for text columns."""
    import pandas as pd

    out = pd.DataFrame({"dataset": table.dataset, "preset": table.preset, "method": table.methods})
    if table.reference_rows:  # rows that are not methods (the dataset's oracle): flagged
        out["reference"] = [m in table.reference_rows for m in table.methods]
    for col in table.columns:
        avail = table.available[col.key].to_numpy()
        if col.text:
            out[col.key] = table.text[col.key].where(table.available[col.key], "").to_numpy()
            continue
        out[f"{col.key}_mean"] = table.mean[col.key].where(avail).to_numpy()
        out[f"{col.key}_std"] = table.std[col.key].where(avail).to_numpy()
        out[f"{col.key}_n"] = table.n[col.key].to_numpy()
        if col.significance:
            out[f"{col.key}_p"] = table.pvalue[col.key].where(avail).to_numpy()
    return out
