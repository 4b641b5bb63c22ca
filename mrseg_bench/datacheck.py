"""``mrseg-bench data check``: validate any dataset, summarise it and draw a preview.

``check_dataset(name, root, options)`` reads every case and returns a ``CheckResult``:

- ``problems``: every problem found, each naming its file (or case) and the reason. The folder
  dataset reports its own (unreadable file, size mismatch, non-binary mask without ``label``,
  rater folder with no files, case with no valid rater, duplicate case ids, case missing from
  cases.csv, group split across a fixed split, ...); every dataset is also checked for duplicate
  case ids, cases with no valid rater, samples that fail to load or break the data contract, and a
  predefined split that puts one group on two sides.
- ``summary``: cases, groups, raters, annotations per rater, missing annotations, image sizes,
  foreground fraction per rater, and inter-rater agreement (``agreement``).

Agreement, over cases where the raters involved are valid (metrics from ``mrseg_bench.metrics``):
- ``pairwise_dice[j][k]``: mean Dice(Y_j, Y_k); ``mean_pairwise_dice``: mean over pairs j != k.
- ``rater_disagreement``: mean over cases of the mean pairwise 1 - IoU between distinct raters
  (the E[d(Y,Y')] term of GED).
- ``ged_vs_others[j]``: GED^2 between {Y_j} and the other valid raters of the case,
  2 E d(Y_j, Y_k) - E d(Y_k, Y_l) (k, l over the others, all pairs incl. k = l; d = 1 - IoU).
- ``dice_vs_majority[j]``: Dice(Y_j, majority of the others), majority = more than half of the
  other valid raters mark the pixel; needs >= 1 other rater.
- ``identity``: a permutation test of whether raters differ systematically in their masks' size
  (statistic: variance over raters of each rater's mean log-area deviation from the case mean;
  raters permuted within cases, 200 times). Systematic differences are what a fixed rater
  identity makes possible; none found means the masks cannot tell fixed from anonymous raters.

A generated dataset that knows its hidden objects (the synthetic set: ``data_summary()``) adds
``generated``: its generator version and knobs, the per-rater reference Dice (oracle,
attainable, shared mask) and the style / ambiguity split of rater disagreement, over every case.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datasets.folder import FolderDataError, Problem

BATCH = 64


@dataclass
class CheckResult:
    dataset: str
    root: str | None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _build(name: str, root: Path | None, options: dict[str, Any], result: CheckResult):
    from .registry import DATASETS, load_plugins

    load_plugins()
    factory = DATASETS.get(name)
    if name == "folder":
        from .datasets.folder import scan_folder

        wrapped = getattr(factory, "__wrapped__", factory)
        import typing

        from .config import _convert

        hints = typing.get_type_hints(wrapped)
        unknown = sorted(set(options) - set(hints) - {"root"})
        if unknown:
            raise ValueError(f"dataset 'folder': unknown option(s) {', '.join(unknown)}")
        conv = {k: _convert(v, hints[k], k, "dataset 'folder'") for k, v in options.items()}
        if root is None:
            result.problems.append(Problem("--data-root", "is required for dataset 'folder' (the folder "
                                           "holding images/ and masks/<rater>/)"))
            return None
        if not Path(root).is_dir():
            result.problems.append(Problem(str(root), "data root is not a folder"))
            return None
        if "normalize" in conv:
            conv["normalize"] = conv["normalize"] or None
        ds, problems, notes = scan_folder(root, **conv)
        result.problems += problems
        result.notes += notes
        return ds
    try:
        return factory(root=root, **options)
    except FolderDataError as exc:
        result.problems += exc.problems
    except (ValueError, FileNotFoundError, OSError, TypeError, KeyError) as exc:
        result.problems.append(Problem(str(root or name), str(exc).splitlines()[0]))
    return None


def check_dataset(name: str, root: str | Path | None = None, options: dict[str, Any] | None = None,
                  out: str | Path | None = None, preview_cases: int = 4) -> CheckResult:
    """Check dataset ``name`` (module docstring); with ``out``, write ``summary.json`` and
    ``preview.png`` there (only when the dataset loads). ValueError naming ``out`` when it cannot
    be written (checked first); a preview that cannot be drawn is a note, not a failure."""
    root_path = Path(root).expanduser() if root is not None else None
    result = CheckResult(name, str(root_path) if root_path else None)
    if out is not None:
        _writable_dir(Path(out))  # before reading every file: fail fast, create nothing
    ds = _build(name, root_path, dict(options or {}), result)
    if ds is None:
        return result
    stats = _Stats(ds.info.num_raters)
    shown: list[Any] = []
    want = _preview_indices(len(ds), preview_cases)
    for start in range(0, len(ds), BATCH):
        samples = []
        for i in range(start, min(start + BATCH, len(ds))):
            try:
                s = ds[i]
            except Exception as exc:  # noqa: BLE001 - every failing case is listed
                result.problems.append(Problem(f"case {ds.case_ids[i]!r}", f"{type(exc).__name__}: {exc}"))
                continue
            samples.append(s)
            if i in want:
                shown.append(s)
        if samples:
            stats.add(samples)
    _dataset_problems(ds, stats, result)
    result.summary = stats.summary(ds)
    if callable(getattr(ds, "data_summary", None)):
        result.summary["generated"] = ds.data_summary()
    result.notes += inverted_warning(result.summary)
    if out is not None:
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.json").write_text(json.dumps(result.summary, indent=1, default=str), encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{out}: cannot write summary.json there ({exc.strerror or exc}); "
                             "choose a writable --out folder") from None
        result.files.append(out / "summary.json")
        if shown:
            try:
                result.files.append(preview_figure(
                    shown, ds.info.rater_names, np.asarray(result.summary["agreement"]["pairwise_dice"], dtype=float),
                    out / "preview.png", title=f"{name}: {len(ds)} cases"))
            except (OSError, ValueError, RuntimeError) as exc:
                first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                result.notes.append(f"{out / 'preview.png'}: preview not drawn ({first.strip()})")
    return result


def _writable_dir(out: Path) -> None:
    """Check ``out`` (or, while it does not exist, its nearest existing parent) is a folder a file
    can be written in, creating nothing; ValueError naming ``out`` otherwise."""
    import tempfile

    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, f"{probe} is not a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ValueError(f"{out}: cannot write the check's output there ({exc.strerror or exc}); "
                         "choose a writable --out folder") from None


def inverted_warning(summary: dict[str, Any]) -> list[str]:
    """A warning when every annotating rater's mean foreground fraction is above 0.5 (masks
    drawn as the background, e.g. a black object on white read with ``label: any``)."""
    fr = [v for v in summary.get("foreground_fraction", {}).values() if v is not None]
    if not fr or min(fr) <= 0.5:
        return []
    return [f"warning: masks may be inverted: every rater marks more than half of the image (foreground fraction "
            f"{min(fr):.2f}-{max(fr):.2f}); set \"label\" in dataset.json to the object's value"]


def _preview_indices(n: int, k: int) -> set[int]:
    return set(np.linspace(0, n - 1, num=min(k, n)).round().astype(int).tolist()) if n else set()


def _dataset_problems(ds, stats: _Stats, result: CheckResult) -> None:
    from .datasets.splits import leaked_groups

    dup = [c for c, n in Counter(ds.case_ids).items() if n > 1]
    for c in dup:
        result.problems.append(Problem(f"case {c!r}", "duplicate case id"))
    for c in stats.no_rater:
        result.problems.append(Problem(f"case {c!r}", "case with no valid rater"))
    split = ds.predefined_split()
    if split is not None:
        for g in sorted(leaked_groups(split, ds.group_ids)):
            result.problems.append(Problem(f"group {g!r}", "group on more than one side of the predefined split"))


class _Stats:
    """Running sums over batches (vectorised per batch)."""

    def __init__(self, r: int) -> None:
        self.r = r
        self.n = 0
        self.case_ids: list[str] = []
        self.groups: set[str] = set()
        self.sizes: Counter = Counter()
        self.annotations = np.zeros(r, dtype=np.int64)
        self.fg_sum = np.zeros(r)
        self.pair_sum = np.zeros((r, r))
        self.pair_n = np.zeros((r, r))
        self.disagree: list[float] = []
        self.ged_sum = np.zeros(r)
        self.ged_n = np.zeros(r)
        self.maj_sum = np.zeros(r)
        self.maj_n = np.zeros(r)
        self.log_area: list[np.ndarray] = []
        self.no_rater: list[str] = []

    def add(self, samples) -> None:
        from .metrics.functional import rater_disagreement
        from .metrics.pairwise import (
            dice_from_counts,
            flatten_masks,
            intersections,
            iou_from_counts,
        )

        groups: dict[tuple, list] = {}
        for s in samples:  # samples of one size are stacked together
            groups.setdefault(tuple(s.image.shape), []).append(s)
            self.case_ids.append(s.case_id)
            self.groups.add(s.group_id)
            if not bool(s.rater_valid.any()):
                self.no_rater.append(s.case_id)
        for shape, group in groups.items():
            self.sizes[shape[1:]] += len(group)
            self.n += len(group)
            masks = torch.stack([s.masks for s in group])
            v = torch.stack([s.rater_valid for s in group]).double()
            y = flatten_masks(masks, dtype=torch.float64)
            area = y.sum(-1)
            inter = intersections(y, y)
            self.annotations += v.sum(0).long().numpy()
            self.fg_sum += ((area / y.shape[-1]) * v).sum(0).numpy()
            dice = dice_from_counts(inter, area.unsqueeze(-1), area.unsqueeze(-2))
            pv = v.unsqueeze(-1) * v.unsqueeze(-2)
            self.pair_sum += (dice * pv).sum(0).numpy()
            self.pair_n += pv.sum(0).numpy()
            self.disagree += rater_disagreement(masks, torch.stack([s.rater_valid for s in group])).tolist()
            d = 1 - iou_from_counts(inter, area, area)  # [B,R,R]
            nv = v.sum(1, keepdim=True)  # [B,1]
            n_oth = nv - v  # others per rater [B,R]
            dv = torch.einsum("bjk,bk->bj", d, v)  # sum over valid k of d(j,k) (d(j,j)=0)
            total = torch.einsum("bjk,bj,bk->b", d, v, v).unsqueeze(-1)
            others_pairs = total - 2 * dv * v  # pairs among the others (diagonal d = 0)
            ok = (v > 0) & (n_oth > 0)
            ged = 2 * dv / n_oth.clamp_min(1) - others_pairs / n_oth.clamp_min(1) ** 2
            self.ged_sum += torch.where(ok, ged, 0).sum(0).numpy()
            self.ged_n += ok.sum(0).numpy()
            yv = y * v.unsqueeze(-1)
            others = yv.sum(1, keepdim=True) - yv  # [B,R,P]
            maj = (2 * others > n_oth.unsqueeze(-1)).double()
            mi = (y * maj).sum(-1)
            md = dice_from_counts(mi, area, maj.sum(-1))
            self.maj_sum += torch.where(ok, md, 0).sum(0).numpy()
            self.maj_n += ok.sum(0).numpy()
            la = torch.log1p(area)
            la = torch.where(v > 0, la, torch.nan)
            self.log_area.append(la.numpy())

    def identity(self, seed: int = 0, permutations: int = 200) -> dict[str, Any]:
        if self.r < 2 or not self.log_area:
            return {"p_value": None, "verdict": "one rater: identity does not apply"}
        la = np.concatenate(self.log_area)
        keep = (~np.isnan(la)).sum(1) >= 2
        la = la[keep]
        if la.shape[0] < 3:
            return {"p_value": None, "verdict": "too few cases with two raters to tell"}
        dev = la - np.nanmean(la, axis=1, keepdims=True)

        def stat(x: np.ndarray) -> np.ndarray:  # x [..., N, R] -> [...]
            with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
                __import__("warnings").simplefilter("ignore", RuntimeWarning)
                return np.nanvar(np.nanmean(x, axis=-2), axis=-1)

        observed = float(stat(dev))
        rng = np.random.default_rng(seed)
        order = np.argsort(rng.random((permutations, *dev.shape)), axis=-1)
        perm = np.take_along_axis(np.broadcast_to(dev, order.shape), order, axis=-1)
        null = stat(perm)
        p = float((1 + np.sum(null >= observed - 1e-12)) / (permutations + 1))
        verdict = ("raters differ systematically in mask size: consistent with a fixed rater identity"
                   if p < 0.05 else
                   "no systematic difference between raters: the masks cannot tell fixed from anonymous raters")
        return {"p_value": p, "statistic": observed, "verdict": verdict}

    def summary(self, ds) -> dict[str, Any]:
        r = self.r
        names = list(ds.info.rater_names)
        pair = np.where(self.pair_n > 0, self.pair_sum / np.maximum(self.pair_n, 1), np.nan)
        off = ~np.eye(r, dtype=bool)
        offn = self.pair_n[off]
        mean_pair = float(self.pair_sum[off].sum() / offn.sum()) if offn.sum() > 0 else None

        def per_rater(s: np.ndarray, n: np.ndarray) -> dict[str, float | None]:
            return {names[j]: (float(s[j] / n[j]) if n[j] > 0 else None) for j in range(r)}

        dis = np.asarray(self.disagree, dtype=float)
        return {
            "dataset": ds.info.name, "cases": self.n, "groups": len(self.groups), "raters": names,
            "rater_identity_declared": ds.info.rater_identity, "in_channels": ds.info.in_channels,
            "annotations_per_rater": dict(zip(names, self.annotations.tolist(), strict=True)),
            "missing_annotations": int(self.n * r - self.annotations.sum()),
            "image_sizes": {f"{h}x{w}": n for (h, w), n in self.sizes.items()},
            "foreground_fraction": per_rater(self.fg_sum, self.annotations.astype(float)),
            "agreement": {
                "pairwise_dice": [[None if math.isnan(x) else float(x) for x in row] for row in pair],
                "mean_pairwise_dice": mean_pair,
                "rater_disagreement": float(np.nanmean(dis)) if np.isfinite(dis).any() else None,
                "ged_vs_others": per_rater(self.ged_sum, self.ged_n),
                "dice_vs_majority": per_rater(self.maj_sum, self.maj_n),
            },
            "identity": self.identity(),
        }


def _literal(text: Any) -> str:
    """``text`` drawn as it is: a ``$`` would start matplotlib mathtext (``c1$\\x$`` fails)."""
    return str(text).replace("$", r"\$")


def preview_figure(samples, rater_names, pairwise: np.ndarray, path: Path, title: str = "") -> Path:
    """A grid (one row per case: image, then each rater's mask over it) and the rater-agreement
    (mean pairwise Dice) heat map; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, r = len(samples), len(rater_names)
    fig = plt.figure(figsize=(1.6 * (r + 1) + 1.6 * max(2.2, 0.6 * r) + 0.8, 1.6 * max(k, 2) + 0.6))
    grid = fig.add_gridspec(max(k, 2), r + 2, width_ratios=[1] * (r + 1) + [max(2.2, 0.6 * r)])
    for i, s in enumerate(samples):
        img = s.image.float()
        img = img[0] if img.shape[0] == 1 else img[:3].permute(1, 2, 0)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
        for j in range(r + 1):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(img.numpy(), cmap="gray", interpolation="nearest")
            if j:
                m = s.masks[j - 1].numpy().astype(float)
                if bool(s.rater_valid[j - 1]):
                    ax.imshow(np.ma.masked_where(m == 0, m), cmap="autumn", alpha=0.6, vmin=0, vmax=1,
                              interpolation="nearest")
                else:
                    ax.text(0.5, 0.5, "missing", color="red", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("image" if j == 0 else _literal(rater_names[j - 1]), fontsize=8)
            if j == 0:
                ax.set_ylabel(_literal(str(s.case_id)[-18:]), fontsize=7)
    ax = fig.add_subplot(grid[:, r + 1])
    im = ax.imshow(pairwise, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(r))
    ax.set_yticks(range(r))
    ax.set_xticklabels([_literal(n) for n in rater_names], rotation=45, fontsize=7)
    ax.set_yticklabels([_literal(n) for n in rater_names], fontsize=7)
    for a in range(r):
        for b in range(r):
            if not math.isnan(pairwise[a, b]):
                ax.text(b, a, f"{pairwise[a, b]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if pairwise[a, b] < 0.6 else "black")
    ax.set_title("mean pairwise Dice", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(_literal(title), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_summary(result: CheckResult) -> str:
    """Plain-text report: problems first, then the summary."""
    lines = []
    if result.problems:
        lines.append(f"{len(result.problems)} problem(s):")
        lines += [f"  {p}" for p in result.problems]
    for n in result.notes:
        lines.append(f"note: {n}")
    s = result.summary
    if s:
        ag = s["agreement"]

        def fmt(x: Any) -> str:
            return "—" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

        lines += [
            f"dataset {s['dataset']}: {s['cases']} cases, {s['groups']} groups, {len(s['raters'])} raters "
            f"({', '.join(s['raters'])}), {s['in_channels']} channel(s)",
            "annotations per rater: " + ", ".join(f"{k} {v}" for k, v in s["annotations_per_rater"].items())
            + f"; missing {s['missing_annotations']}",
            "image sizes: " + ", ".join(f"{k} ({v})" for k, v in s["image_sizes"].items()),
            "foreground fraction: " + ", ".join(f"{k} {fmt(v)}" for k, v in s["foreground_fraction"].items()),
            f"mean pairwise Dice {fmt(ag['mean_pairwise_dice'])}; rater disagreement (1-IoU) "
            f"{fmt(ag['rater_disagreement'])}",
            "GED^2 rater vs others: " + ", ".join(f"{k} {fmt(v)}" for k, v in ag["ged_vs_others"].items()),
            "Dice vs others' majority: " + ", ".join(f"{k} {fmt(v)}" for k, v in ag["dice_vs_majority"].items()),
            f"rater identity: declared {s['rater_identity_declared']}; {s['identity']['verdict']}"
            + (f" (p={s['identity']['p_value']:.3f})" if s["identity"].get("p_value") is not None else ""),
        ]
        if "generated" in s:
            lines += _generated_lines(s["generated"], s["raters"], fmt)
    for f in result.files:
        lines.append(f"wrote {f}")
    lines.append("OK" if result.ok else f"FAILED: {len(result.problems)} problem(s)")
    return "\n".join(lines)



def _generated_lines(gen: dict[str, Any], raters: list[str], fmt) -> list[str]:
    """Lines of the ``generated`` summary: version, split, reference Dice per rater and mean."""
    knobs = ", ".join(f"{k} {v:g}" for k, v in gen["knobs"].items())
    split = gen["disagreement_split"]
    lines = [f"generator version {gen['version']}" + (f" ({knobs})" if knobs else ""),
             f"rater disagreement split: style {fmt(split['style'])}, ambiguity {fmt(split['ambiguity'])}"]
    for name, vals in gen["references"].items():
        per = ", ".join(f"{r} {fmt(float(v))}" for r, v in zip(raters, vals, strict=True))
        lines.append(f"reference {name} Dice: {per}; mean {fmt(float(np.mean(vals)))}")
    return lines
