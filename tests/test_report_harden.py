"""Report hardening (issue 25 items 7, 8, 9, 18, 19): figure names that keep a '.', non-ASCII
names transliterated in LaTeX, a figure that cannot be drawn as a warning and a placeholder,
no writing through a planted symlink, and a killed report that leaves the previous one whole."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from report_stores import write_run
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.reports.report import write_report

ROOT = Path(__import__("mrseg_bench").__file__).resolve().parents[1]  # the code under test


def _store(path: Path, experiment: str = "smoke", seeds=(0,)) -> Path:
    for method in ("dpersona", "probunet"):
        for seed in seeds:
            write_run(path, method, seed, experiment=experiment)
    return path


def test_figure_names_keep_a_dot_in_the_experiment(tmp_path):
    # item 7: `run --preset mine.toml` made every figure `synthetic_mine.png` (with_suffix)
    store = _store(tmp_path / "s.sqlite", experiment="mine.toml")
    paths = write_report(store, tmp_path / "out")
    figs = sorted(p.name for p in paths if p.suffix == ".png")
    assert figs == ["synthetic_mine.toml_per_rater.png", "synthetic_mine.toml_throughput.png"]
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "(synthetic_mine.toml_per_rater.png)" in md and "(synthetic_mine.toml_throughput.png)" in md


def test_non_ascii_names_are_transliterated_in_latex(tmp_path):
    # item 8: `--experiment résumé` refused the whole report ("non-ASCII characters")
    store = _store(tmp_path / "s.sqlite", experiment="résumé-ü")
    write_report(store, tmp_path / "out", figures=False)
    tex = (tmp_path / "out" / "tables.tex").read_text(encoding="utf-8")
    assert tex.isascii() and "experiment resume-u" in tex
    assert "résumé-ü" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")  # Markdown keeps it


def _with_run_dir(store: Path, method: str, run_dir: Path) -> None:
    con = sqlite3.connect(store)
    con.execute("UPDATE runs SET run_dir=? WHERE method=?", (str(run_dir), method))
    con.commit()
    con.close()


def test_a_figure_that_cannot_be_drawn_is_a_warning_and_a_placeholder(tmp_path):
    # item 9: a refused qualitative.pt stopped the report half-written, exit 2
    store = _store(tmp_path / "s.sqlite")
    run_dir = tmp_path / "runs" / "dpersona"
    run_dir.mkdir(parents=True)
    (run_dir / "qualitative.pt").write_bytes(b"not a torch file")
    _with_run_dir(store, "dpersona", run_dir)
    res = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "warning: figure 'Qualitative examples'" in res.output and "qualitative.pt" in res.output
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "*Figure not drawn: ValueError:" in md
    assert (tmp_path / "out" / "tables.tex").is_file() and (tmp_path / "out" / "synthetic_smoke_throughput.png").is_file()


def test_a_case_name_with_dollars_draws(tmp_path):
    # item 9: `c1$\nosuchcmd$` made matplotlib's math parser raise; text is never math now
    import torch

    from mrseg_bench.reports.figures import qualitative_grid
    from mrseg_bench.types import Prediction

    masks = (torch.rand(1, 2, 8, 8) > 0.5).to(torch.uint8)
    out = qualitative_grid(torch.rand(1, 1, 8, 8), masks, {"m": Prediction(consensus=torch.rand(1, 8, 8))},
                           tmp_path / "q", case_ids=["c1$\\nosuchcmd$"])
    assert all(p.is_file() for p in out)


def test_no_writing_through_a_planted_symlink(tmp_path):
    # item 18: `report --out OUT` wrote through a symlink planted at OUT/tables.tex
    store = _store(tmp_path / "s.sqlite")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's own file", encoding="utf-8")  # not a report folder
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    (out / "tables.tex").symlink_to(victim)
    write_report(store, out, figures=False)
    assert victim.read_text(encoding="utf-8") == "precious"
    assert not (out / "tables.tex").is_symlink() and "\\begin{table}" in (out / "tables.tex").read_text()
    assert (out / "mine.txt").read_text(encoding="utf-8") == "the user's own file"
    # a previous report folder is replaced whole: the planted link goes with it
    write_report(store, tmp_path / "rep", figures=False)
    (tmp_path / "rep" / "tables.tex").unlink()
    (tmp_path / "rep" / "tables.tex").symlink_to(victim)
    write_report(store, tmp_path / "rep", figures=False)
    assert victim.read_text(encoding="utf-8") == "precious" and not (tmp_path / "rep" / "tables.tex").is_symlink()


SLOW_FIGURE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import mrseg_bench.reports.report as rep

    def slow(*args, **kwargs):
        Path(sys.argv[3]).write_text("drawing")
        time.sleep(120)

    rep.per_rater_bars = slow
    rep.write_report(Path(sys.argv[1]), Path(sys.argv[2]))
""")


def test_sigterm_mid_report_leaves_the_previous_report_whole(tmp_path):
    # item 19: SIGTERM while drawing left old and new files mixed
    store = _store(tmp_path / "s.sqlite")
    out = tmp_path / "out"
    write_report(store, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_run(store, "fusion.soft", 0)  # the next report differs (a new row, a consensus table)
    flag = tmp_path / "drawing"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).parent}", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FIGURE, str(store), str(out), str(flag)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), "the report never reached its figures"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # the old report, byte for byte; nothing new mixed in
    # the next report clears the dead process's staging folder and swaps in whole
    write_report(store, out, figures=False)
    assert (out / "synthetic_smoke_consensus.tex").is_file()
    assert not list(tmp_path.glob(".out.staging-*"))
