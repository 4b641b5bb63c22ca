"""Learning curves: per method, training loss, validation loss and the selection metric per
epoch, read from each run folder's ``train_log.jsonl``; seeds overlaid, best epoch marked.

``learning_curves(runs, methods, stem)`` writes ``<stem>_<method>.png/.pdf`` for each method
(a row label of ``runs``) whose run folders hold a log: three panels against the epoch, the
stages one after another (a dotted line where a stage starts); one line per seed; a star on
each stage's best epoch (from ``result.json``'s ``selection``, else the log's best selection
value). The selection panel names each stage's metric and direction. The report draws them as
one of its figures (``reports.report``: a figure that cannot be drawn is a warning).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .figures import plt, save_figure

LOG_FILE = "train_log.jsonl"


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The readable records of ``<run_dir>/train_log.jsonl`` (torn or foreign lines skipped)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("stage"), str) and isinstance(rec.get("epoch"), int):
            out.append(rec)
    return out


def _selection(run_dir: Path) -> dict[str, Any]:
    try:
        sel = json.loads((Path(run_dir) / "result.json").read_text(encoding="utf-8")).get("selection")
    except (OSError, ValueError, AttributeError):
        return {}
    return sel if isinstance(sel, dict) else {}


def _number(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def best_epochs(log: list[dict[str, Any]], selection: dict[str, Any]) -> dict[str, int]:
    """Stage -> best epoch: ``selection[stage]["epoch"]`` when recorded, else the epoch with the
    best ``val_<select>`` of the log (by ``select_mode``)."""
    out: dict[str, int] = {}
    for stage in dict.fromkeys(r["stage"] for r in log):
        rec = selection.get(stage)
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
            out[stage] = rec["epoch"]
            continue
        rows = [r for r in log if r["stage"] == stage and isinstance(r.get("select"), str)
                and math.isfinite(_number(r.get(f"val_{r['select']}")))]
        if rows:
            sign = -1.0 if rows[0].get("select_mode") == "min" else 1.0
            out[stage] = max(rows, key=lambda r: sign * _number(r[f"val_{r['select']}"]))["epoch"]
    return out


def _frame(log: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per epoch with x (epochs of earlier stages + epoch) and the three values."""
    rows, offset, stages = [], 0, list(dict.fromkeys(r["stage"] for r in log))
    for stage in stages:
        recs = sorted((r for r in log if r["stage"] == stage), key=lambda r: r["epoch"])
        for r in recs:
            sel = r.get("select")
            rows.append({"stage": stage, "epoch": r["epoch"], "x": offset + r["epoch"],
                         "train_loss": _number(r.get("train_loss")), "val_loss": _number(r.get("val_loss")),
                         "select": sel if isinstance(sel, str) else None,
                         "select_mode": r.get("select_mode"),
                         "val_select": _number(r.get(f"val_{sel}")) if isinstance(sel, str) else math.nan})
        offset += (max(r["epoch"] for r in recs) + 1) if recs else 0
    return pd.DataFrame(rows)


def _method_figure(method: str, runs: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    curves = []
    for seed, run_dir in zip(runs["seed"], runs["run_dir"], strict=True):
        log = read_log(Path(str(run_dir or "")))
        if log:
            curves.append((seed, _frame(log), best_epochs(log, _selection(Path(str(run_dir))))))
    if not curves:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    colors = plt.get_cmap("tab10").colors
    panels = (("train_loss", "training loss"), ("val_loss", "validation loss"), ("val_select", "selection metric"))
    starts: dict[str, float] = {}
    names: dict[str, str] = {}
    for i, (seed, df, best) in enumerate(sorted(curves, key=lambda c: c[0])):
        color = colors[i % len(colors)]
        for stage, part in df.groupby("stage", sort=False):
            starts[stage] = min(starts.get(stage, math.inf), float(part["x"].min()))
            sel = part["select"].dropna()
            if len(sel):
                mode = part["select_mode"].dropna()
                names[stage] = f"{sel.iloc[0]} ({'max' if len(mode) and mode.iloc[0] == 'max' else 'min'})"
            for ax, (key, _) in zip(axes, panels, strict=True):
                ok = part[part[key].notna()]
                ax.plot(ok["x"], ok[key], color=color, lw=1.2, alpha=0.8,
                        label=f"seed {seed}" if ax is axes[0] and stage == df["stage"].iloc[0] else None)
                at = ok[ok["epoch"] == best.get(stage, -1)]
                ax.plot(at["x"], at[key], marker="*", ms=11, color=color, ls="none")
    for ax, (_, name) in zip(axes, panels, strict=True):
        for x in starts.values():
            if x > 0:
                ax.axvline(x - 0.5, color="0.6", ls=":", lw=1)
        ax.set_xlabel("epoch (stages in order)")
        ax.set_title(name)
    axes[2].set_title("selection: " + "; ".join(f"{s} {n}" for s, n in names.items()) if names else "selection metric",
                      fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: {method} (star: best epoch of each stage)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def learning_curves(runs: pd.DataFrame, methods: list[str], stem: Path, title: str = "") -> list[Path]:
    """Figures ``<stem>_<method>.png/.pdf`` for each of ``methods`` (``runs["row"]`` labels)."""
    out: list[Path] = []
    for method in methods:
        mine = runs[runs["row"] == method].sort_values("seed")
        out += _method_figure(method, mine, Path(f"{stem}_{_safe(method)}"), title)
    return out
