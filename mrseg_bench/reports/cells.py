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


def csv_name(key: str, rater_names: list[str] | None) -> str:
    """The CSV name of a column key: per-rater keys by rater name (``per_rater_dice[tight]``),
    a per-rater metric's mean over raters as ``<metric>[mean]``."""
    from ..metrics import metric_specs
    from .raters import rater_key_name

    for spec in metric_specs():
        if spec.per_rater and key == f"{spec.name}_mean" and spec.rater_columns:
            return f"{spec.name}[mean]"
    return rater_key_name(key, rater_names)


def csv_frame(table: Table):
    """Numbers, not strings: one row per method (and per reference row, flagged in a
    ``reference`` column when there is one); per numeric column ``<name>.mean``, ``.std``,
    ``.seeds`` (runs with a value) and ``.p`` (``csv_name``; empty where unavailable), the raw
    text for text columns; cost tables add ``device``, ``threads``, ``cpu_count`` and
    ``load_avg_1m`` (the highest load average at the start of the row's runs)."""
    import pandas as pd

    out = pd.DataFrame({"dataset": table.dataset, "experiment": table.preset, "method": table.methods})
    if table.reference_rows:  # rows that are not methods (the dataset's oracle): flagged
        out["reference"] = [m in table.reference_rows for m in table.methods]
    for col in table.columns:
        avail = table.available[col.key].to_numpy()
        name = csv_name(col.key, table.rater_names)
        if col.text:
            out[name] = table.text[col.key].where(table.available[col.key], "").to_numpy()
            continue
        out[f"{name}.mean"] = table.mean[col.key].where(avail).to_numpy()
        out[f"{name}.std"] = table.std[col.key].where(avail).to_numpy()
        out[f"{name}.seeds"] = table.n[col.key].to_numpy()
        if col.significance:
            out[f"{name}.p"] = table.pvalue[col.key].where(avail).to_numpy()
    if table.machine is not None:
        for c in table.machine.columns:
            out[c] = table.machine[c].reindex(table.methods).to_numpy()
    return out
