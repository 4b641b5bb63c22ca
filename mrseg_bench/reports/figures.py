"""Report figures (matplotlib, Agg backend; each saved as PNG and PDF).

- ``throughput_scatter``: each metric (mean ± std over seeds) against inference images/s
  (log x), one panel per metric that some method has, one marker per method.
- ``per_rater_bars``: per-rater Dice (and mean) of each personalised method, error bars = std
  over seeds.
- ``qualitative_grid``: image, each rater's mask, then per method its samples, personalised
  outputs and consensus, for a few test cases.
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


def save_figure(fig: plt.Figure, stem: Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` (150 dpi) and ``<stem>.pdf``; close it."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=150, bbox_inches="tight")
    fig.savefig(out[1], bbox_inches="tight")
    plt.close(fig)
    return out


def _wide(stats: pd.DataFrame, value: str) -> pd.DataFrame:
    """methods x keys of one stats column (all-NaN columns kept)."""
    return stats.groupby(["method", "key"])[value].first().unstack("key")


def _style(methods: list[str]) -> dict[str, tuple[str, str]]:
    colors = plt.get_cmap("tab10").colors
    return {m: (colors[i % len(colors)], _MARKERS[i % len(_MARKERS)]) for i, m in enumerate(methods)}


def throughput_scatter(stats: pd.DataFrame, methods: list[str], stem: Path, title: str = "",
                       metrics: tuple[str, ...] | None = None) -> list[Path]:
    """``stats``: seed_stats rows (method, key, mean, std, n) holding ``infer_images_per_s``
    and the metrics (default: the ``MetricSpec.summary`` ones). Returns the written paths
    ([] when nothing to plot)."""
    from .summary import summary_label, summary_metrics

    if metrics is None:
        metrics = tuple(summary_metrics())
    wide_mean, wide_std = _wide(stats, "mean"), _wide(stats, "std")
    if "infer_images_per_s" not in wide_mean:
        return []
    thr = wide_mean["infer_images_per_s"]
    panels = [m for m in metrics if m in wide_mean and (wide_mean[m].notna() & thr.notna()).any()]
    if not panels:
        return []
    style = _style(methods)
    xs = thr[thr.notna() & (thr > 0)]
    lo, hi = float(xs.min()) / 1.6, float(xs.max()) * 1.6
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    axes = axes[: len(panels)]
    for ax, metric in zip(axes, panels, strict=True):
        for method in methods:
            if method not in wide_mean.index:
                continue
            x, y = thr.get(method, np.nan), wide_mean.at[method, metric]
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            xe = wide_std.at[method, "infer_images_per_s"] if "infer_images_per_s" in wide_std else np.nan
            ye = wide_std.at[method, metric]
            color, marker = style[method]
            ax.errorbar(x, y, xerr=None if not np.isfinite(xe) else xe,
                        yerr=None if not np.isfinite(ye) else ye, fmt=marker, color=color,
                        ms=8, capsize=3, label=method)
            ax.annotate(method, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        direction = {True: " (higher is better)", False: " (lower is better)", None: ""}
        ax.set_ylabel(summary_label(metric) + direction[higher_is_better(metric)])
        ax.set_xlabel("inference images/s (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.margins(y=0.25)
    seen: dict[str, object] = {}
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        seen.update(zip(lab, h, strict=True))
    order = [m for m in methods if m in seen]
    fig.tight_layout(rect=(0, 0, 1, 0.9 if nrows == 1 else 0.94))
    fig.legend([seen[m] for m in order], order, loc="upper center", ncol=min(len(order), 5),
               bbox_to_anchor=(0.5, 0.95 if nrows == 1 else 0.975), frameon=False)
    if title:
        fig.suptitle(title, y=1.0)
    return save_figure(fig, stem)


def per_rater_bars(stats: pd.DataFrame, methods: list[str], stem: Path, title: str = "",
                   references: pd.DataFrame | None = None) -> list[Path]:
    """Grouped bars: x = raters (R1..RR) and their mean, one bar per method with per-rater
    Dice; error bars = std over seeds (none with one seed). ``references`` (rows: reference
    labels, columns: the same keys; ``reports.references.reference_frame``): one dashed line
    per reference across each group of bars (e.g. the synthetic oracle), labelled in the legend."""
    rater_keys = sorted({k for k in stats["key"] if str(k).startswith("per_rater_dice[")},
                        key=lambda k: int(k[len("per_rater_dice["):-1]))
    if not rater_keys:
        return []
    keys = rater_keys + (["per_rater_dice_mean"] if "per_rater_dice_mean" in set(stats["key"]) else [])
    mean, std = _wide(stats, "mean"), _wide(stats, "std")
    shown = [m for m in methods if m in mean.index and mean.loc[m, rater_keys].notna().any()]
    if not shown:
        return []
    style = _style(methods)
    width = 0.8 / len(shown)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(keys) * max(1, len(shown)) ** 0.5 + 2), 3.6))
    for i, method in enumerate(shown):
        m = mean.loc[method].reindex(keys).to_numpy(dtype=float)
        s = std.loc[method].reindex(keys).to_numpy(dtype=float)
        yerr = np.where(np.isfinite(s), s, 0.0) if np.isfinite(s).any() else None  # one seed: none
        bars = ax.bar(x + (i - (len(shown) - 1) / 2) * width, np.nan_to_num(m), width,
                      yerr=yerr, capsize=3, color=style[method][0],
                      label=method, edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "" for v in m],
                     fontsize=6, padding=2)
    refs = references if references is not None else pd.DataFrame()
    for j, (name, row) in enumerate(refs.iterrows()):
        y = row.reindex(keys).to_numpy(dtype=float)
        for i, v in enumerate(y):
            if np.isfinite(v):  # one segment over the group of bars of each rater / the mean
                ax.hlines(v, x[i] - 0.45, x[i] + 0.45, colors="black", linestyles=("--", ":", "-.")[j % 3],
                          linewidth=1.2, label=str(name) if i == int(np.argmax(np.isfinite(y))) else None)
    ax.set_xticks(x, [label(k) for k in keys])
    ax.set_ylabel("Dice (output r vs rater r)")
    ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, stem)


def _image_rgb(img: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """[C,H,W] -> displayable array (min-max scaled); gray for 1 channel, RGB for 3."""
    a = img.detach().float().cpu().numpy()
    a = a[:3] if a.shape[0] >= 3 else a[:1]
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (a[0], "gray") if a.shape[0] == 1 else (np.moveaxis(a, 0, -1), None)


def qualitative_grid(images: torch.Tensor, raters: torch.Tensor,
                     predictions: dict[str, Prediction], out_path: str | Path,
                     case_ids: list[str] | None = None, max_cases: int = 3,
                     max_samples: int = 4) -> list[Path]:
    """A grid for the first ``max_cases`` cases: per case one row with the image and each
    rater's mask, then one row per method with up to ``max_samples`` samples, its personalised
    outputs (one per rater) and its consensus (probabilities, 0..1 colour scale).

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
    method_rows = []
    for name, pred in predictions.items():
        cells = []
        if pred.samples is not None:
            cells += [(f"sample {i + 1}", pred.samples[:, i]) for i in range(min(max_samples, pred.samples.shape[1]))]
        if pred.personalized is not None:
            cells += [(f"pers. R{j + 1}", pred.personalized[:, j]) for j in range(pred.personalized.shape[1])]
        if pred.consensus is not None:
            cells.append(("consensus", pred.consensus))
        if cells:
            method_rows.append((name, cells))
    ncols = max([1 + r] + [len(c) for _, c in method_rows])
    nrows = k * (1 + len(method_rows))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols + 0.8, 1.55 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")

    def show(ax, arr, title, cmap="viridis", ylabel=None):
        ax.axis("on")
        ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7, pad=2)
        if ylabel:
            ax.set_ylabel(ylabel, fontsize=7, rotation=0, ha="right", va="center", labelpad=4)

    for case in range(k):
        row = case * (1 + len(method_rows))
        cid = case_ids[case] if case_ids and case < len(case_ids) else f"case {case + 1}"
        img, cmap = _image_rgb(images[case])
        show(axes[row, 0], img, "image", cmap=cmap or "gray", ylabel=cid)
        for j in range(r):
            show(axes[row, 1 + j], raters[case, j].float().cpu().numpy(), f"rater {j + 1}", cmap="gray")
        for m, (name, cells) in enumerate(method_rows):
            for c, (title, t) in enumerate(cells):
                show(axes[row + 1 + m, c], t[case].float().cpu().numpy(), title,
                     ylabel=name if c == 0 else None)
    fig.suptitle("rater masks: white = foreground; method outputs: probability, "
                 "dark 0 to yellow 1", fontsize=8)
    # leave the top strip (about 0.35 inch) to the title so it never overlaps the first row
    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.2, rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return save_figure(fig, Path(out_path))
