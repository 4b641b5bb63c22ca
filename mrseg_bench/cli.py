"""The ``mrseg-bench`` command line: parses arguments and calls the runner, profiler and reports.

Bad input (unknown method/dataset/preset, bad ``--set``, missing data root) exits with code 2
and a one-line message naming the valid choices, before anything is written.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark multi-rater medical image segmentation methods head to head.")
# a wide table in logs and pipes (rich assumes 80 columns when stdout is not a terminal)
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True)

DASH = "—"


def _usage(msg: str) -> typer.Exit:
    """Print a one-line error and return the exit (code 2) to raise."""
    err_console.print(f"error: {' '.join(str(msg).split())}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise _usage(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise _usage("--seeds: give at least one seed, e.g. 0,1,2")
    return seeds


def _fmt(value: float, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if kind == "params":
        return f"{value / 1e6:.2f}M"
    if kind == "flops_per_image":
        return f"{value / 1e9:.2f}G"
    if kind.endswith("_per_s") or kind.endswith("_ms"):
        return f"{value:.1f}"
    return f"{value:.4f}"


@app.command()
def run(
    methods: str = typer.Option(..., "--methods", "-m", help="Comma list of methods; fnmatch wildcards allowed (e.g. 'dpersona,fusion.*')."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset name(s), comma list."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder holding the dataset files."),
    preset: str = typer.Option("default", "--preset", "-p", help="smoke | default | study | paper, or a .toml file."),
    seeds: str = typer.Option("0", "--seeds", help="Comma list of seeds, e.g. 0,1,2."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override: key=value, method.key=value, dataset.key=value or run.key=value (repeatable)."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N | mps (default: preset's, else auto)."),
    precision: str | None = typer.Option(None, "--precision", help="auto | bf16 | fp32 (auto: bf16 on CUDA, fp32 elsewhere)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels_last memory format (same as --set run.channels_last=true)."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model (same as --set run.compile=true)."),
    grad_clip: float | None = typer.Option(None, "--grad-clip", help="Clip the global gradient norm (same as --set run.grad_clip=X)."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Experiment folder root."),
    store: Path | None = typer.Option(None, "--store", help="Results store (default <out>/results.sqlite)."),
    force: bool = typer.Option(False, "--force", help="Rerun runs already done with the same config hash."),
    experiment: str | None = typer.Option(None, "--experiment", "-e", help="Label of this grid in the store and reports (default: the preset's name; a user preset file: its path)."),
    reuse_results: bool = typer.Option(False, "--reuse-results", help="Skip runs done before on other code (same config, data, device otherwise) instead of rerunning them."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report tables into <out>/report/."),
) -> None:
    """Train, evaluate and profile the grid methods x datasets x seeds; store and report results."""
    from .reports.summary import summarize, summary_table
    from .runner import UsageError, plan_grid, run_grid
    from .store import ResultsStore

    seed_list = _seeds(seeds)
    _check_out_dir(out, "--out")
    sets = list(set_) + (["run.channels_last=true"] if channels_last else []) + (
        ["run.compile=true"] if compile_ else []) + ([f"run.grad_clip={grad_clip}"] if grad_clip is not None else [])
    try:
        plan = plan_grid(methods, dataset, seed_list, preset, sets, data_root, device, precision, experiment)
    except UsageError as exc:
        raise _usage(str(exc)) from None
    store_path = store or out / "results.sqlite"
    if store_path.exists():
        try:
            with ResultsStore(store_path) as st:  # refuses a foreign or empty file without touching it
                if st.readonly:
                    raise ValueError(f"results store {store_path}: not writable (read-only file or folder)")
        except ValueError as exc:
            raise _usage(str(exc)) from None
    else:
        _check_out_dir(store_path.parent, "--store")
    _make_out_dir(out)
    log = (lambda s: None) if quiet else (lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True))
    if not quiet:
        spec0 = plan.specs[0]
        console.print(f"{len(plan.specs)} run(s); preset {plan.preset.name}; experiment {spec0.experiment}; "
                      f"device {spec0.device} "
                      f"({spec0.precision}); out {out}; store {store_path}", markup=False, soft_wrap=True)
    outcomes = run_grid(plan, out, store_path, force=force, quiet=quiet, log=log, reuse_results=reuse_results)
    failed = [o for o in outcomes if o.status == "failed"]
    with ResultsStore(store_path) as st:
        frame = summarize(st, [o.run_id for o in outcomes if o.status in ("done", "skipped") and o.run_id])
    if not quiet and not frame.empty:
        console.print(summary_table(frame))
    report_ok = True
    if report:
        experiment = getattr(plan, "experiment", None) or plan.preset.name
        report_ok = _write_report(store_path, out / "report", quiet, experiment)
    for o in failed:
        err_console.print(f"failed: {o.spec.method} {o.spec.dataset} seed {o.spec.seed}: {o.error} "
                          f"(see {o.run_dir}/error.txt)", markup=False, highlight=False)
    if failed or not report_ok:
        raise typer.Exit(1)


def _write_report(store_path: Path, out_dir: Path, quiet: bool, experiment: str | None = None) -> bool:
    """Write the report of ``experiment``; False (error printed) when it fails: the runs are
    stored, so the grid is not lost, but the command exits non-zero."""
    from .reports.report import write_report

    try:
        paths = write_report(store_path, out_dir, experiment=experiment)
    except Exception as exc:  # noqa: BLE001 - the runs are stored; report the failure, exit 1
        err_console.print(f"error: report failed: {type(exc).__name__}: {exc} (the runs are stored; "
                          f"rerun `mrseg-bench report --store {store_path}`)", markup=False)
        return False
    if not quiet:
        console.print(f"report: {len(paths)} file(s) in {out_dir}", markup=False)
    return True


def _out_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a writable folder, or None. Writes nothing."""
    import os

    probe = path  # the folder itself, or the nearest existing folder above it
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    where = "" if probe == path else f" ({probe})"
    if probe.exists() and not probe.is_dir():
        return f"is a file, not a folder{where}" if probe == path else f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        return f"{'read-only file system' if read_only else 'permission denied'}{where}"
    return None


def _check_out_dir(path: Path, option: str) -> None:
    """Exit 2 with one line naming ``path`` when it cannot be a writable output folder."""
    problem = _out_problem(path)
    if problem:
        raise _usage(f"{option} {path}: {problem}")


def _make_out_dir(path: Path, option: str = "--out") -> None:
    """Create the output folder and probe it with a temp file; exit 2 with one line on failure
    (a read-only mount that ``os.access`` did not reveal, a full disk, ...)."""
    import os
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mrseg-write-probe-", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise _usage(f"{option} {path}: not writable ({exc.strerror or exc})") from None


@app.command("list")
def list_cmd() -> None:
    """List methods (capabilities, paper), datasets (raters, identity), metrics and presets."""
    from .presets import load_preset, preset_names
    from .registry import DATASETS, METHODS, METRICS, load_plugins

    load_plugins()
    t = Table(title="methods")
    for c in ("name", "capabilities", "paper"):
        t.add_column(c)
    for name, factory in METHODS.items():
        try:
            info = factory().info
            t.add_row(name, ", ".join(sorted(c.value for c in info.capabilities)), info.paper)
        except Exception as exc:  # noqa: BLE001 - list what can be listed
            t.add_row(name, DASH, f"(error: {exc})")
    console.print(t)
    t = Table(title="datasets")
    for c in ("name", "raters", "identity", "description"):
        t.add_column(c)
    for name, factory in DATASETS.items():
        info = getattr(factory, "info", None)
        doc = (factory.__doc__ or "").strip().splitlines()
        if info is None:
            try:
                info = factory().info
            except Exception:  # noqa: BLE001 - needs a data root
                info = None
        t.add_row(name, str(info.num_raters) if info else DASH, info.rater_identity if info else DASH,
                  doc[0] if doc else "")
    console.print(t)
    t = Table(title="metrics")
    t.add_column("name")
    t.add_column("description")
    for name, spec in METRICS.items():
        doc = (getattr(spec, "description", None) or getattr(spec, "__doc__", "") or "").strip().splitlines()
        t.add_row(name, doc[0] if doc else "")
    console.print(t)
    t = Table(title="presets")
    t.add_column("name")
    t.add_column("description")
    for name in preset_names():
        t.add_row(name, load_preset(name).description)
    console.print(t)


@app.command()
def profile(
    methods: str = typer.Option(..., "--methods", "-m", help="Comma list of methods; wildcards allowed."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset whose shapes to use."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder holding the dataset files."),
    preset: str = typer.Option("default", "--preset", "-p", help="smoke | default | study | paper, or a .toml file."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Overrides, as for run."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N | mps."),
    precision: str | None = typer.Option(None, "--precision", help="auto | bf16 | fp32."),
) -> None:
    """Profile untrained models (no training): params, FLOPs, throughput, latency, memory."""
    import torch

    from .engine.data import make_batches, prepare
    from .engine.device import reset_peak_memory, seed_everything
    from .engine.profile import profile_method
    from .runner import UsageError, plan_grid

    try:
        plan = plan_grid(methods, dataset, [0], preset, set_, data_root, device, precision)
    except UsageError as exc:
        raise _usage(str(exc)) from None
    table = Table(title=f"profile ({plan.specs[0].device}, {plan.specs[0].precision}, untrained)")
    cols = ["params", "flops_per_image", "train_images_per_s", "infer_images_per_s", "latency_p50_ms",
            "latency_p95_ms", "peak_memory_mb"]
    table.add_column("method")
    for c in cols:
        table.add_column(c, justify="right")
    for spec in plan.specs:
        ds = plan.datasets[spec.dataset]
        cfg = spec.run_cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(0)
        model = spec.method_obj.build(ds.info).to(spec.device)
        reset_peak_memory(spec.device)
        idx = list(range(min(cfg.eval_bs, len(ds))))
        batch = prepare(next(iter(make_batches(ds, idx, cfg.eval_bs, False, 0))), spec.device, cfg.image_size,
                        cfg.channels_last)
        rows = profile_method(spec.method_obj, model, batch, spec.device, cfg.n_samples, spec.precision,
                              cfg.profile_warmup, cfg.profile_steps, cfg.latency_repeats)
        vals = {r["name"]: r["value"] for r in rows}
        table.add_row(spec.method, *[_fmt(vals.get(c, float("nan")), c) if c != "peak_memory_mb"
                                     else f"{vals[c]:.0f}" for c in cols])
    console.print(table)


@app.command()
def report(
    store: Path = typer.Option(Path("runs/results.sqlite"), "--store", help="Results store to read."),
    out: Path = typer.Option(Path("runs/report"), "--out", "-o", help="Folder for the tables and figures."),
    reference: str | None = typer.Option(None, "--reference", help="Method (or row label such as 'dpersona (beta=1.0)') significance is tested against (default: dpersona when present)."),
    experiment: str | None = typer.Option(None, "--experiment", help="Experiment to report (default: the store's only one)."),
) -> None:
    """Write LaTeX / Markdown / CSV tables and figures from the results store."""
    if not store.is_file():
        raise _usage(f"--store {store}: no such results store")
    from .reports.report import write_report

    _check_out_dir(out, "--out")
    _make_out_dir(out)
    try:
        paths = write_report(store, out, reference=reference, experiment=experiment)
    except ValueError as exc:
        raise _usage(str(exc)) from None
    except OSError as exc:
        raise _usage(f"--out {out}: cannot write the report ({exc.strerror or exc}"
                     f"{': ' + str(exc.filename) if exc.filename else ''})") from None
    except Exception as exc:  # noqa: BLE001 - any other failure: one line, exit 1
        err_console.print(f"error: report failed: {type(exc).__name__}: {exc}", markup=False)
        raise typer.Exit(1) from None
    for p in paths:
        console.print(str(p), markup=False, highlight=False)


@app.command()
def check(
    baseline: Path = typer.Option(..., "--baseline", help="Baseline JSON of expected values."),
    store: Path = typer.Option(Path("runs/results.sqlite"), "--store", help="Results store to check."),
    tolerance: float | None = typer.Option(None, "--tolerance", help="Allowed deviation (default: the baseline's)."),
    update: bool = typer.Option(False, "--update", help="Write the store's values as the new baseline."),
) -> None:
    """Compare the store against a baseline (CI regression gate); exit 1 when it fails."""
    if not store.is_file():
        raise _usage(f"--store {store}: no such results store")
    from .reports.check import run_check

    try:
        ok, text = run_check(store, baseline, tolerance=tolerance, update=update)
    except (ValueError, FileNotFoundError) as exc:
        raise _usage(str(exc)) from None
    console.print(text, markup=False, highlight=False)
    if not ok:
        raise typer.Exit(1)


data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Look at a dataset before benchmarking on it.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name (folder, lidc, qubiq, ...)."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder holding the dataset files."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write summary.json and preview.png here."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Dataset option key=value (repeatable)."),
) -> None:
    """Validate every file, list every problem, summarise raters and agreement; exit 2 on problems."""
    from .datacheck import check_dataset, format_summary

    opts = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _usage(f"--set {item!r}: expected key=value")
        opts[key.strip().removeprefix("dataset.")] = value.strip()
    try:
        result = check_dataset(dataset, data_root, opts, out)
    except (ValueError, KeyError) as exc:
        raise _usage(str(exc).splitlines()[0]) from None
    console.print(format_summary(result), markup=False, highlight=False, soft_wrap=True)
    if not result.ok:
        raise typer.Exit(2)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="mrseg-bench")


if __name__ == "__main__":
    main()
