"""``write_report(store_path, out_dir)``: every table and figure from the results store alone.

Files, per (dataset, preset) ``<name> = <dataset>_<preset>``:
- ``<name>_<kind>.tex`` / ``.md`` / ``.csv`` for kind in diversity, personalization,
  consensus, cost (a kind is written when some run has its metrics; see tables.py);
- ``<name>_throughput.png/.pdf`` (metric vs inference images/s), ``<name>_per_rater.png/.pdf``
  (when a method is personalised), ``<name>_qualitative.png/.pdf`` (when run folders hold
  ``qualitative.pt``, see qualitative.py);
and ``tables.tex`` (all LaTeX tables; needs ``\\usepackage{booktabs}``) and ``report.md``
(all Markdown tables and figure links). Only the latest ``done`` run per (method, dataset,
preset, seed) is used. Each LaTeX table passes ``latex.check_latex`` before it is written
(no TeX engine is assumed).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..paths import check_run_names
from .aggregate import profile_values, run_means, seed_stats
from .cells import csv_frame
from .figures import per_rater_bars, qualitative_grid, throughput_scatter
from .latex import check_latex, render_latex
from .loader import Results, load_results
from .markdown import escape_md, render_markdown
from .qualitative import QUALITATIVE_FILE, as_prediction, load_qualitative
from .tables import Table, build_tables, method_order


def _qualitative(results: Results, runs: pd.DataFrame, reference: str, stem: Path,
                 notes: list[str]) -> list[Path]:
    """Grid from the lowest-seed run of each method that saved ``qualitative.pt``."""
    base = None
    preds = {}
    for method in method_order(runs["method"].tolist(), reference):
        mine = runs[runs["method"] == method].sort_values("seed")
        for run_dir in mine["run_dir"]:
            path = Path(str(run_dir or "")) / QUALITATIVE_FILE
            if not run_dir or not path.is_file():
                continue
            data = load_qualitative(path)
            if base is None:
                base = data
            elif (data["image"].shape != base["image"].shape
                  or (data["case_ids"] and base["case_ids"] and data["case_ids"] != base["case_ids"])):
                notes.append(f"qualitative: {path} shows other cases than the first method's; left out")
                break
            preds[method] = as_prediction(data)
            break
    if base is None or not preds:
        return []
    return qualitative_grid(base["image"], base["masks"], preds, stem, case_ids=base["case_ids"])


def write_report(store_path: Path, out_dir: Path, reference: str = "dpersona",
                 alpha: float = 0.05, figures: bool = True) -> list[Path]:
    """Write all report files for the store at ``store_path`` into ``out_dir``; return them.

    ``reference``: the method under study (significance is tested against it, it is listed
    last); ``alpha``: significance level of the † marker; ``figures=False``: tables only.

    Raises FileNotFoundError for a missing store and ValueError when it has no done run.
    """
    store_path, out_dir = Path(store_path), Path(out_dir)
    results = load_results(store_path)
    if results.runs.empty:
        raise ValueError(f"results store {store_path}: no finished ('done') runs to report")
    check_run_names(results.runs, str(store_path))  # names become file names under out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = build_tables(results, reference=reference, alpha=alpha)
    written: list[Path] = []
    latex_all: list[str] = []
    md: list[str] = [f"# mrseg-bench report\n\nStore: `{store_path}` — {len(results.runs)} "
                     f"finished runs (latest per method, dataset, preset, seed). Method under "
                     f"study: {escape_md(reference)}.\n"]
    by_group: dict[tuple[str, str], list[Table]] = {}
    for t in tables:
        by_group.setdefault((t.dataset, t.preset), []).append(t)
    stats_metrics = seed_stats(pd.concat([run_means(results), profile_values(results)]))
    for (dataset, preset), group_tables in by_group.items():
        name = f"{dataset}_{preset}" if preset else str(dataset)
        md.append(f"## {escape_md(dataset)} — preset {escape_md(preset or '-')}\n")
        for t in group_tables:
            tex = render_latex(t)
            problems = check_latex(tex)
            if problems:
                raise RuntimeError(f"LaTeX table {t.name} is malformed: {'; '.join(problems)}")
            text_md = render_markdown(t)
            for suffix, content in ((".tex", tex), (".md", text_md)):
                path = out_dir / f"{t.name}{suffix}"
                path.write_text(content, encoding="utf-8")
                written.append(path)
            path = out_dir / f"{t.name}.csv"
            csv_frame(t).to_csv(path, index=False)
            written.append(path)
            latex_all.append(tex)
            md.append(f"### {t.kind.capitalize()}\n\n{text_md}")
        runs = results.runs[(results.runs["dataset"] == dataset) & (results.runs["preset"] == preset)]
        methods = method_order(runs["method"].tolist(), reference)
        stats = stats_metrics[(stats_metrics["dataset"] == dataset) & (stats_metrics["preset"] == preset)]
        notes: list[str] = []
        if not figures:
            md.append("")
            continue
        figs = {
            "Metric vs inference throughput": throughput_scatter(
                stats, methods, out_dir / f"{name}_throughput", title=f"{dataset} ({preset})"),
            "Per-rater Dice": per_rater_bars(
                stats, methods, out_dir / f"{name}_per_rater", title=f"{dataset} ({preset}): per-rater Dice"),
            "Qualitative examples": _qualitative(
                results, runs, reference, out_dir / f"{name}_qualitative", notes),
        }
        for title, paths in figs.items():
            written += paths
            if paths:
                md.append(f"### {title}\n\n![{title}]({paths[0].name})\n")
        if not figs["Qualitative examples"]:
            notes.append(f"qualitative grid: no run folder holds {QUALITATIVE_FILE}")
        md += [f"- {escape_md(n)}" for n in notes] + [""]
    tex_path = out_dir / "tables.tex"
    tex_path.write_text("% needs \\usepackage{booktabs}\n" + "\n".join(latex_all), encoding="utf-8")
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    return [*written, tex_path, md_path]
