"""``write_report(store_path, out_dir)``: every table and figure from the results store alone.

Files, per table group ``<name> = <dataset>_<experiment>`` (plus the protocol, convention and
metric settings when they are not the defaults; a group never mixes them):
- ``<name>_<kind>.tex`` / ``.md`` / ``.csv`` for kind in diversity, personalization,
  consensus, any table a plugin metric names, and cost (see tables.py);
- ``<name>_throughput.png/.pdf`` (metric vs inference images/s), ``<name>_per_rater.png/.pdf``
  (when a method is personalised; the dataset's reference scores, e.g. the synthetic oracle,
  as dashed lines), ``<name>_qualitative.png/.pdf`` (when run folders hold
  ``qualitative.pt``, see qualitative.py), ``<name>_curves_<method>.png/.pdf`` (learning
  curves from the run folders' ``train_log.jsonl``, see curves.py);
and ``tables.tex`` (all LaTeX tables; needs ``\\usepackage{booktabs}``) and ``report.md``
(all Markdown tables and figure links). Only the latest ``done`` run per configuration and seed
is used (loader.py). Each LaTeX table passes ``latex.check_latex`` before anything is written;
``tests/test_report_latex.py`` compiles them with pdflatex where it is installed.

Writing: everything goes to a staging folder, swapped in at the end (staging.py): an
interrupted report leaves the previous one whole. A figure that cannot be drawn (a bad
``qualitative.pt``, values matplotlib refuses) is a warning (``log``) and a placeholder line in
report.md; the tables are still written.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from ..paths import check_run_names
from .aggregate import case_values, intervals, profile_values, run_means, seed_stats
from .cells import csv_frame
from .curves import learning_curves
from .figures import per_rater_bars, qualitative_grid, throughput_scatter
from .latex import check_latex, render_latex
from .loader import Results, load_results
from .markdown import escape_md, render_markdown
from .qualitative import QUALITATIVE_FILE, as_prediction, load_qualitative
from .references import reference_frame
from .staging import staging_for, swap_in
from .tables import Table, build_tables, method_order


def _qualitative(results: Results, runs: pd.DataFrame, reference: str | None, stem: Path,
                 notes: list[str], names: list[str] | None = None) -> list[Path]:
    """Grid from the lowest-seed run of each method that saved ``qualitative.pt``."""
    base = None
    preds = {}
    for method in method_order(runs["row"].tolist(), reference):
        mine = runs[runs["row"] == method].sort_values("seed")
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
    return qualitative_grid(base["image"], base["masks"], preds, stem, case_ids=base["case_ids"],
                            rater_names=names, max_cases=len(base["case_ids"]) or int(base["image"].shape[0]))


def write_report(store_path: Path, out_dir: Path, reference: str | None = None,
                 alpha: float = 0.05, figures: bool = True, experiment: str | None = None,
                 log: Callable[[str], None] | None = None) -> list[Path]:
    """Write all report files for the store at ``store_path`` into ``out_dir``; return them.

    ``experiment``: the experiment to report (None: the store's only one; several raise
    ``SelectionError`` listing them). ``reference``: the row significance is tested against
    (a method name or a row label such as ``"dpersona (beta=1.0)"``; None: dpersona when
    present); ``alpha``: significance level of the † marker; ``figures=False``: tables only;
    ``log``: receives a warning per figure that could not be drawn (default: ignored; report.md
    says so either way).

    Raises FileNotFoundError for a missing store and ValueError when it has no done run, the
    selection is ambiguous or the reference matches no row (nothing is written then).
    """
    store_path, out_dir = Path(store_path), Path(out_dir)
    results = load_results(store_path, experiment=experiment)
    if results.runs.empty:
        raise ValueError(f"results store {store_path}: no finished ('done') runs to report")
    check_run_names(results.runs, str(store_path))  # names become file names under out_dir
    tables = build_tables(results, reference=reference, alpha=alpha)
    for t in tables:  # validate everything before writing anything
        problems = check_latex(render_latex(t))
        if problems:
            raise RuntimeError(f"LaTeX table {t.name} is malformed: {'; '.join(problems)}")
    stage = staging_for(out_dir)
    try:
        written = _write_all(results, tables, store_path, stage, figures, log or (lambda m: None))
        swap_in(stage, out_dir)
    except BaseException:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        raise
    return [out_dir / p.relative_to(stage) for p in written]


def _figure(title: str, draw: Callable[[], list[Path]], group: str, md: list[str],
            log: Callable[[str], None]) -> list[Path]:
    """Draw one figure; a failure becomes a warning and a placeholder line in report.md."""
    try:
        paths = draw()
    except Exception as exc:  # noqa: BLE001 - a figure must not cost the tables
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log(f"figure {title!r} of {group} not drawn ({why})")
        md.append(f"### {title}\n\n*Figure not drawn: {escape_md(why)}*\n")
        return []
    links = [p for p in paths if p.suffix == ".png"] or paths[:1]  # one link per drawn figure
    if links:
        md.append(f"### {title}\n\n" + "\n".join(f"![{title}]({p.name})" for p in links) + "\n")
    return paths


def _write_all(results: Results, tables: list[Table], store_path: Path, out_dir: Path, figures: bool,
               log: Callable[[str], None]) -> list[Path]:
    written: list[Path] = []
    latex_all: list[str] = []
    exps = ", ".join(sorted(set(results.runs["experiment"])))
    md: list[str] = [f"# mrseg-bench report\n\nStore: `{store_path}` — experiment {escape_md(exps)}, "
                     f"{len(results.runs)} finished runs (latest per configuration and seed). "
                     f"Rows are method configurations, labelled by the settings that differ from "
                     f"the preset.\n"]
    by_group: dict[str, list[Table]] = {}
    for t in tables:
        by_group.setdefault(t.group, []).append(t)
    stats_metrics = seed_stats(pd.concat([run_means(results, rater_means=True), profile_values(results)]))
    cases_all = case_values(results, rater_means=True)
    for group, group_tables in by_group.items():
        first = group_tables[0]
        md.append(f"## {escape_md(first.dataset)} — {escape_md(group)}\n")
        for t in group_tables:
            tex = render_latex(t)
            text_md = render_markdown(t)
            for suffix, content in ((".tex", tex), (".md", text_md)):
                path = out_dir / f"{t.name}{suffix}"
                path.write_text(content, encoding="utf-8")
                written.append(path)
            path = out_dir / f"{t.name}.csv"
            csv_frame(t).to_csv(path, index=False)
            written.append(path)
            latex_all.append(tex)
            md.append(f"### {t.title}\n\n{text_md}")
        ids = _group_runs(results.runs, first)
        runs = results.runs[results.runs["run_id"].isin(ids)]
        methods = method_order(runs["row"].tolist(), first.reference)
        stats = stats_metrics[stats_metrics["method"].isin(methods)]
        stats = stats[stats["dataset"] == first.dataset]
        notes: list[str] = []
        if not figures:
            md.append("")
            continue
        names = first.rater_names
        bars = intervals(stats, cases_all[cases_all["run_id"].isin(ids)])
        figs = {
            "Metric vs inference throughput": partial(
                throughput_scatter, stats, methods, out_dir / f"{group}_throughput", intervals=bars),
            "Per-rater Dice": partial(
                per_rater_bars, stats, methods, out_dir / f"{group}_per_rater", intervals=bars,
                references=reference_frame(results.references, ids)[0], rater_names=names),
            "Qualitative examples": partial(
                _qualitative, results, runs, first.reference, out_dir / f"{group}_qualitative", notes, names),
            "Learning curves": partial(
                learning_curves, runs, methods, out_dir / f"{group}_curves", f"{first.dataset} ({first.preset})"),
        }
        drawn = {title: _figure(title, draw, group, md, log) for title, draw in figs.items()}
        for paths in drawn.values():
            written += paths
        if not drawn["Qualitative examples"] and not any("Qualitative" in m and "not drawn" in m for m in md):
            notes.append(f"qualitative grid: no run folder holds {QUALITATIVE_FILE}")
        md += [f"- {escape_md(n)}" for n in notes] + [""]
    tex_path = out_dir / "tables.tex"
    tex_path.write_text("% needs \\usepackage{booktabs} and \\usepackage{graphicx}\n" + "\n".join(latex_all),
                        encoding="utf-8")
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    return [*written, tex_path, md_path]


def _group_runs(runs: pd.DataFrame, table: Table) -> set[str]:
    """run_ids of the table group ``table`` belongs to."""
    from .tables import GROUP_KEYS, _group_stem

    keys = runs[GROUP_KEYS].to_dict("records")
    return {rid for rid, k in zip(runs["run_id"], keys, strict=True) if _group_stem(k) == table.group}
