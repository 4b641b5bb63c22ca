"""Report figures (matplotlib, Agg backend; each saved as PNG and PDF) sized for papers.

Widths: ``SINGLE_COLUMN`` (3.5 in) or ``DOUBLE_COLUMN`` (7.1 in), drawn at print size with
fonts of at least ``MIN_FONT`` pt, so a figure included at its width keeps them. Text is never
parsed as math (a ``$`` in a case or method name is drawn as is).

- ``throughput_scatter``: each metric against inference images/s (log x), one panel per
  metric some method has (no empty panels), y from zero (or from the lowest value below zero);
  error bars from ``intervals``.
- ``per_rater_bars``: per-rater Dice (and the mean) of each personalised method, x labelled by
  the dataset's rater names, error bars from ``intervals``; reference rows as dashed lines.
- ``qualitative_grid``: one row per case: the image with each rater's outline, then per method
  its soft map (mean of its samples, else consensus) with a shared colour bar and, for a
  personalised method, the image with its per-rater outputs' outlines (p >= 0.5).

``intervals``: ``aggregate.intervals`` (std over seeds, or a per-case bootstrap with one seed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ..types import Prediction  # noqa: E402
from .columns import higher_is_better, label  # noqa: E402

_MARKERS = "osD^v<>pP*Xh"
SINGLE_COLUMN = 3.5  # inches
DOUBLE_COLUMN = 7.1
MIN_FONT = 7.0
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 8, "text.parse_math": False}


def save_figure(fig: plt.Figure, stem: Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` (300 dpi) and ``<stem>.pdf`` at its own size; close it."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"]  # a '.' in the stem stays
    try:
        fig.savefig(out[0], dpi=300)
        fig.savefig(out[1])
    finally:
        plt.close(fig)
    return out


def _wide(stats: pd.DataFrame, value: str) -> pd.DataFrame:
    """methods x keys of one stats column (all-NaN columns kept)."""
    return stats.groupby(["method", "key"])[value].first().unstack("key")


def _style(methods: list[str]) -> dict[str, tuple[str, str]]:
    colors = plt.get_cmap("tab10").colors
    return {m: (colors[i % len(colors)], _MARKERS[i % len(_MARKERS)]) for i, m in enumerate(methods)}


def _bounds(intervals: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if intervals is None or intervals.empty:
        return pd.DataFrame(), pd.DataFrame()
    return _wide(intervals, "lo"), _wide(intervals, "hi")


def _at(frame: pd.DataFrame, row: str, col: str) -> float:
    try:
        return float(frame.at[row, col])
    except (KeyError, ValueError, TypeError):
        return float("nan")


def _how(intervals: pd.DataFrame | None) -> str:
    if intervals is None or intervals.empty:
        return ""
    kinds = sorted(set(intervals.dropna(subset=["lo"])["how"]))
    return "error bars: " + " / ".join(k.replace("bootstrap over cases", "95% bootstrap over cases (one seed)")
                                       for k in kinds) if kinds else ""


def throughput_scatter(stats: pd.DataFrame, methods: list[str], stem: Path, title: str = "",
                       metrics: tuple[str, ...] | None = None,
                       intervals: pd.DataFrame | None = None) -> list[Path]:
    """``stats``: seed_stats rows (method, key, mean, std, n) holding ``infer_images_per_s``
    and the metrics (default: the ``MetricSpec.summary`` ones). Returns the written paths
    ([] when nothing to plot)."""
    from .summary import summary_label, summary_metrics

    if metrics is None:
        metrics = tuple(summary_metrics())
    wide_mean = _wide(stats, "mean")
    if "infer_images_per_s" not in wide_mean:
        return []
    thr = wide_mean["infer_images_per_s"]
    ok = thr.notna() & np.isfinite(thr) & (thr > 0)
    panels = [m for m in metrics if m in wide_mean and (np.isfinite(wide_mean[m]) & ok).any()]
    if not panels:
        return []
    lo_f, hi_f = _bounds(intervals)
    if intervals is None:  # std over seeds from stats
        lo_f, hi_f = wide_mean - _wide(stats, "std"), wide_mean + _wide(stats, "std")
    style = _style(methods)
    xs = thr[ok]
    xlo, xhi = float(xs.min()) / 1.6, float(xs.max()) * 1.6
    ncols = 2 if len(panels) in (2, 4) else min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    width = SINGLE_COLUMN if ncols == 1 else DOUBLE_COLUMN
    with plt.rc_context(STYLE):
        fig, grid = plt.subplots(nrows, ncols, figsize=(width, 2.1 * nrows + 0.5), squeeze=False,
                                 layout="constrained")
        axes = grid.ravel()
        for ax in axes[len(panels):]:
            fig.delaxes(ax)
        for ax, metric in zip(axes, panels, strict=False):
            ys = []
            for method in methods:
                x, y = _at(wide_mean, method, "infer_images_per_s"), _at(wide_mean, method, metric)
                if not (np.isfinite(x) and x > 0 and np.isfinite(y)):
                    continue
                lo, hi = _at(lo_f, method, metric), _at(hi_f, method, metric)
                yerr = [[y - lo], [hi - y]] if np.isfinite(lo) and np.isfinite(hi) else None
                color, marker = style[method]
                ax.errorbar(x, y, yerr=yerr, fmt=marker, color=color, ms=5, capsize=2, label=method)
                ys += [y] + ([lo, hi] if yerr else [])
            ax.set_xscale("log")
            ax.set_xlim(xlo, xhi)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            top = max(ys) if ys else 1.0
            ax.set_ylim(min(0.0, min(ys, default=0.0) * 1.1), top * 1.1 if top > 0 else 0.1)  # from zero
            arrow = {True: " ↑", False: " ↓", None: ""}[higher_is_better(metric)]
            ax.set_ylabel(summary_label(metric) + arrow)
            ax.grid(True, which="both", alpha=0.3)
        seen: dict[str, object] = {}
        for ax in axes[: len(panels)]:
            h, lab = ax.get_legend_handles_labels()
            seen.update(zip(lab, h, strict=True))
        order = [m for m in methods if m in seen]
        fig.legend([seen[m] for m in order], order, loc="outside upper center", ncol=min(len(order), 4),
                   frameon=False)
        note = _how(intervals)
        fig.supxlabel("; ".join(t for t in ("inference images/s (log scale)", note) if t), fontsize=8)
        if title:
            fig.suptitle(title)
        return save_figure(fig, stem)


def per_rater_bars(stats: pd.DataFrame, methods: list[str], stem: Path, title: str = "",
                   references: pd.DataFrame | None = None, rater_names: list[str] | None = None,
                   intervals: pd.DataFrame | None = None) -> list[Path]:
    """Grouped bars: x = raters (by ``rater_names``, else R1..RR) and their mean, one bar per
    method with per-rater Dice; error bars from ``intervals`` (default: std over seeds).
    ``references`` (rows: reference labels, columns: the same keys;
    ``reports.references.reference_frame``): one dashed line per reference across each group
    of bars (e.g. the synthetic oracle), labelled in the legend."""
    rater_keys = sorted({k for k in stats["key"] if str(k).startswith("per_rater_dice[")},
                        key=lambda k: int(k[len("per_rater_dice["):-1]))
    if not rater_keys:
        return []
    keys = rater_keys + (["per_rater_dice_mean"] if "per_rater_dice_mean" in set(stats["key"]) else [])
    mean = _wide(stats, "mean")
    shown = [m for m in methods if m in mean.index and mean.loc[m, rater_keys].notna().any()]
    if not shown:
        return []
    lo_f, hi_f = _bounds(intervals)
    if intervals is None:
        lo_f, hi_f = mean - _wide(stats, "std"), mean + _wide(stats, "std")
    style = _style(methods)
    width = 0.8 / len(shown)
    x = np.arange(len(keys))
    names = [rater_names[int(k[len("per_rater_dice["):-1])] if rater_names and
             int(k[len("per_rater_dice["):-1]) < len(rater_names) else label(k) for k in rater_keys]
    ticks = names + (["mean"] if len(keys) > len(rater_keys) else [])
    fig_w = SINGLE_COLUMN if len(keys) * len(shown) <= 8 else DOUBLE_COLUMN
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(fig_w, 2.6), layout="constrained")
        for i, method in enumerate(shown):
            m = mean.loc[method].reindex(keys).to_numpy(dtype=float)
            lo = np.array([_at(lo_f, method, k) for k in keys])
            hi = np.array([_at(hi_f, method, k) for k in keys])
            good = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(m)
            yerr = np.vstack([np.where(good, m - lo, 0), np.where(good, hi - m, 0)]) if good.any() else None
            ax.bar(x + (i - (len(shown) - 1) / 2) * width, np.nan_to_num(m), width, yerr=yerr, capsize=2,
                   color=style[method][0], label=method, edgecolor="black", linewidth=0.4,
                   error_kw={"linewidth": 0.8})
        refs = references if references is not None else pd.DataFrame()
        for j, (name, row) in enumerate(refs.iterrows()):
            y = row.reindex(keys).to_numpy(dtype=float)
            for i, v in enumerate(y):
                if np.isfinite(v):  # one segment over the group of bars of each rater / the mean
                    ax.hlines(v, x[i] - 0.45, x[i] + 0.45, colors="black", linestyles=("--", ":", "-.")[j % 3],
                              linewidth=1.0, label=str(name) if i == int(np.argmax(np.isfinite(y))) else None)
        ax.set_xticks(x, ticks, rotation=30 if max(len(t) for t in ticks) > 6 else 0, ha="right"
                      if max(len(t) for t in ticks) > 6 else "center")
        ax.set_ylabel("Dice (output r vs rater r)")
        ax.set_ylim(0, 1.05)
        ax.grid(True, axis="y", alpha=0.3)
        entries = len(shown) + len(refs)
        fig.legend(loc="outside upper center", ncol=min(2 if fig_w == SINGLE_COLUMN else 4, entries), frameon=False)
        note = _how(intervals)
        if title or note:
            ax.set_title("; ".join(t for t in (title, note) if t), fontsize=MIN_FONT)
        return save_figure(fig, stem)


def _image_rgb(img: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """[C,H,W] -> displayable array (min-max scaled); gray for 1 channel, RGB for 3."""
    a = img.detach().float().cpu().numpy()
    a = a[:3] if a.shape[0] >= 3 else a[:1]
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (a[0], "gray") if a.shape[0] == 1 else (np.moveaxis(a, 0, -1), None)


def _outline(ax, mask: np.ndarray, color) -> None:
    """The 0.5 contour of ``mask`` (nothing for an empty or full mask)."""
    if mask.min() < 0.5 <= mask.max():
        ax.contour(mask, levels=[0.5], colors=[color], linewidths=0.9)


def qualitative_grid(images: torch.Tensor, raters: torch.Tensor,
                     predictions: dict[str, Prediction], out_path: str | Path,
                     case_ids: list[str] | None = None, max_cases: int = 4,
                     max_samples: int = 4, rater_names: list[str] | None = None) -> list[Path]:
    """One row per case (the first ``max_cases``): the image with each rater's outline
    (one colour per rater, named in the legend), then per method its soft map (mean of up to
    ``max_samples`` samples, else the consensus; 0..1 with one colour bar) and, for a
    personalised method, the image with the outlines of its per-rater outputs (p >= 0.5) in
    the raters' colours.

    ``images [K,C,H,W]``, ``raters [K,R,H,W]``, each prediction's tensors with K first.
    ``out_path``: file stem (``.png`` / ``.pdf`` added). Returns the written paths.
    """
    k = min(int(images.shape[0]), max_cases)
    if k == 0:
        raise ValueError("qualitative_grid: no cases (images has 0 rows)")
    r = int(raters.shape[1])
    for name, pred in predictions.items():
        for field_name in ("samples", "personalized", "consensus"):
            t = getattr(pred, field_name)
            if t is not None and (t.shape[0] < k or tuple(t.shape[-2:]) != tuple(images.shape[-2:])):
                raise ValueError(f"qualitative_grid: {name}.{field_name} {tuple(t.shape)} does not "
                                 f"match images {tuple(images.shape)}")
    names = list(rater_names) if rater_names and len(rater_names) == r else [f"R{j + 1}" for j in range(r)]
    colors = plt.get_cmap("tab10").colors
    cols: list[tuple[str, str, object]] = [("raters", "image + rater outlines", None)]
    for name, pred in predictions.items():
        if pred.samples is not None:
            cols.append(("soft", f"{name}: mean of samples", pred.samples[:, :max_samples].float().mean(1)))
        elif pred.consensus is not None:
            cols.append(("soft", f"{name}: consensus", pred.consensus))
        if pred.personalized is not None:
            cols.append(("pers", f"{name}: per-rater outputs", pred.personalized))
    ncols = len(cols)
    width = SINGLE_COLUMN if ncols <= 2 else DOUBLE_COLUMN
    cell = min(width / (ncols + 0.3), 1.9)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(k, ncols, figsize=(width, cell * k + 0.7), squeeze=False, layout="constrained")
        soft_im = None
        for case in range(k):
            img, cmap = _image_rgb(images[case])
            cid = case_ids[case] if case_ids and case < len(case_ids) else f"case {case + 1}"
            for c, (kind, col_title, t) in enumerate(cols):
                ax = axes[case, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if kind == "soft":
                    soft_im = ax.imshow(t[case].float().cpu().numpy(), cmap="viridis", vmin=0, vmax=1,
                                        interpolation="nearest")
                else:
                    ax.imshow(img, cmap=cmap or "gray", interpolation="nearest")
                    src = raters[case].float() if kind == "raters" else t[case].float()
                    for j in range(min(r, src.shape[0])):
                        _outline(ax, src[j].cpu().numpy(), colors[j % len(colors)])
                if case == 0:
                    ax.set_title(col_title, fontsize=MIN_FONT)
                if c == 0:
                    ax.set_ylabel(cid, fontsize=MIN_FONT)
        handles = [plt.Line2D([], [], color=colors[j % len(colors)], linewidth=1.2) for j in range(r)]
        fig.legend(handles, names, loc="outside upper center", ncol=min(r, 6), frameon=False,
                   title="rater outlines", title_fontsize=MIN_FONT)
        if soft_im is not None:
            fig.colorbar(soft_im, ax=axes.ravel().tolist(), shrink=0.6, label="foreground probability")
        return save_figure(fig, Path(out_path))
