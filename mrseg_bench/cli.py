"""The ``mrseg-bench`` command line: parses arguments and calls the planner, executors, profiler and reports.

Bad input (unknown method/dataset/preset, bad ``--set``, missing data root) exits with code 2
and a one-line message naming the valid choices, before anything is written.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .progress import grid_total
from .store_tidy import tidy_wal

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark multi-rater medical image segmentation methods head to head.")
# a wide table in logs and pipes (rich assumes 80 columns when stdout is not a terminal)
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True)

DASH = "—"
MAX_SPEC_BYTES = 64 * 2**20  # run-one --spec: a plan --json list of ~10k specs


def _usage(msg: str) -> typer.Exit:
    """Print the error and return the exit (code 2) to raise: the first line after ``error:``,
    whitespace collapsed; further lines (an expected layout, a problem list) indented as given."""
    first, *rest = str(msg).split("\n") or [""]
    text = "\n".join([f"error: {' '.join(first.split())}", *(f"  {line.rstrip()}" for line in rest if line.strip())])
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _error_file_hint(run_dir: Path | None) -> str:
    """`` (see <run_dir>/error.txt)`` when that file was written, else nothing."""
    path = Path(run_dir or "") / "error.txt"
    return f" (see {path})" if run_dir is not None and path.is_file() else ""


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


_OPT_METHODS = typer.Option(..., "--methods", "-m", help="Comma list of methods; fnmatch wildcards allowed (e.g. 'dpersona,fusion.*').")
_OPT_DATASET = typer.Option("synthetic", "--dataset", "-d", help="Dataset name(s), comma list.")
_OPT_DATA_ROOT = typer.Option(None, "--data-root", help="Folder holding the dataset files.")
_OPT_PRESET = typer.Option("default", "--preset", "-p", help="smoke | ci | default | study | paper, or a .toml file.")
_OPT_SEEDS = typer.Option("0", "--seeds", help="Comma list of seeds, e.g. 0,1,2.")
_OPT_SET = typer.Option([], "--set", "-s", help="Override: key=value, method.key=value, dataset.key=value or run.key=value (repeatable).")
_OPT_DEVICE = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N | mps (default: preset's, else auto).")
_OPT_PRECISION = typer.Option(None, "--precision", help="auto | bf16 | fp32 (auto: bf16 on CUDA, fp32 elsewhere).")
_OPT_CHANNELS_LAST = typer.Option(False, "--channels-last", help="channels_last memory format (same as --set run.channels_last=true).")
# executor options shared by `run` and `tune` (a tune trial is a run)
_OPT_RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster to join: auto | HOST:PORT (default: start a local one).")
_OPT_RAY_CPUS = typer.Option(1.0, "--ray-num-cpus", help="CPUs each Ray task (one run) asks for.")
_OPT_RAY_GPUS = typer.Option(None, "--ray-num-gpus", "--gpus-per-run", help="GPUs each Ray task (one run) asks for: a fraction packs several runs on one GPU (0.25: four per GPU), or a whole number (default: 1 when the cluster has GPUs, else 0).")
_OPT_SLURM_PARTITION = typer.Option(None, "--slurm-partition", help="Slurm partition of the job array.")
_OPT_SLURM_GPUS = typer.Option(1, "--slurm-gpus-per-task", help="GPUs per array task (one run).")
_OPT_SLURM_CPUS = typer.Option(4, "--slurm-cpus-per-task", help="CPUs per array task.")
_OPT_SLURM_TIME = typer.Option("4:00:00", "--slurm-time", help="Time limit per task: MINUTES, HH:MM:SS or D-HH:MM:SS; a task that reaches it is requeued and resumes.")
_OPT_SLURM_PARALLEL = typer.Option(16, "--slurm-array-parallelism", help="Array tasks running at once.")
_OPT_SLURM_CLUSTER = typer.Option("slurm", "--slurm-cluster", hidden=True, help="'local': run the job array as local processes (submitit's LocalExecutor; tests).")
_OPT_COMPILE = typer.Option(False, "--compile", help="torch.compile the model (same as --set run.compile=true).")
_OPT_GRAD_CLIP = typer.Option(None, "--grad-clip", help="Clip the global gradient norm (same as --set run.grad_clip=X).")
_OPT_OUT = typer.Option(Path("runs"), "--out", "-o", help="Experiment folder root.")
_OPT_EXPERIMENT = typer.Option(None, "--experiment", "-e", help="Label of this grid in the store and reports (default: the preset's name; a user preset file: its path).")


def _plan(methods, dataset, data_root, preset, seeds, set_, device, precision, channels_last, compile_, grad_clip,
          experiment=None):
    """plan_grid from the shared run/plan options; usage errors exit 2."""
    from .run.overrides import UsageError
    from .run.plan import plan_grid

    seed_list = _seeds(seeds)
    sets = list(set_) + (["run.channels_last=true"] if channels_last else []) + (
        ["run.compile=true"] if compile_ else []) + ([f"run.grad_clip={grad_clip}"] if grad_clip is not None else [])
    try:
        return plan_grid(methods, dataset, seed_list, preset, sets, data_root, device, precision, experiment)
    except UsageError as exc:
        raise _usage(str(exc)) from None


def _interrupted(exc, command: str = "the same command") -> typer.Exit:
    err_console.print(exc.message(command), markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


@app.command()
def run(
    methods: str = _OPT_METHODS,
    dataset: str = _OPT_DATASET,
    data_root: Path | None = _OPT_DATA_ROOT,
    preset: str = _OPT_PRESET,
    seeds: str = _OPT_SEEDS,
    set_: list[str] = _OPT_SET,
    device: str | None = _OPT_DEVICE,
    precision: str | None = _OPT_PRECISION,
    channels_last: bool = _OPT_CHANNELS_LAST,
    compile_: bool = _OPT_COMPILE,
    grad_clip: float | None = _OPT_GRAD_CLIP,
    out: Path = _OPT_OUT,
    store: Path | None = typer.Option(None, "--store", help="Results store (default <out>/results.sqlite)."),
    force: bool = typer.Option(False, "--force", help="Rerun runs already done with the same config hash (the done run is replaced only when the rerun succeeds)."),
    experiment: str | None = _OPT_EXPERIMENT,
    reuse_results: bool = typer.Option(False, "--reuse-results", help="Skip runs done before on other code (same config, data, device otherwise) instead of rerunning them."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report tables into <out>/report/."),
    executor: str = typer.Option("local", "--executor", help="local (runs on this machine, --jobs at a time) | ray (one Ray task per run) | slurm (a submitit job array). With ray/slurm, --out must be on storage every worker shares."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Local executor: runs at a time, each in its own worker process with cores // JOBS torch threads (run.num_threads overrides); 1: one after another in this process. With GPUs (device auto/cuda) the worker processes are placed on them round-robin."),
    one_gpu: int | None = typer.Option(None, "--one-gpu", help="Local --jobs: place every worker process on this GPU (index among the visible ones) instead of round-robin, to pack several runs on one large GPU."),
    ray_address: str | None = _OPT_RAY_ADDRESS,
    ray_num_cpus: float = _OPT_RAY_CPUS,
    ray_num_gpus: float | None = _OPT_RAY_GPUS,
    slurm_partition: str | None = _OPT_SLURM_PARTITION,
    slurm_gpus_per_task: int = _OPT_SLURM_GPUS,
    slurm_cpus_per_task: int = _OPT_SLURM_CPUS,
    slurm_time: str = _OPT_SLURM_TIME,
    slurm_array_parallelism: int = _OPT_SLURM_PARALLEL,
    slurm_cluster: str = _OPT_SLURM_CLUSTER,
) -> None:
    """Train, evaluate and profile the grid methods x datasets x seeds; store and report results.

    Each run is claimed before it trains, so several `run` processes may share one --out."""
    from .engine.threads import warn_if_busy
    from .executors import EXECUTORS
    from .interrupts import RunInterrupted
    from .reports.summary import summarize, summary_table
    from .store import ResultsStore

    if executor not in EXECUTORS:
        raise _usage(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS.names())}")
    if jobs < 1:
        raise _usage(f"--jobs {jobs}: must be at least 1")
    if jobs > 1 and executor != "local":
        raise _usage("--jobs works with --executor local (Ray and Slurm place the runs themselves)")
    exec_opts = _executor_options(executor, jobs, ray_address, ray_num_cpus, ray_num_gpus, slurm_partition,
                                  slurm_gpus_per_task, slurm_cpus_per_task, slurm_time, slurm_array_parallelism,
                                  slurm_cluster, force)
    if one_gpu is not None and (one_gpu < 0 or executor != "local"):
        raise _usage(f"--one-gpu {one_gpu}: give a GPU index >= 0, with --executor local")
    exec_opts.local.one_gpu = one_gpu
    _check_out_dir(out, "--out")
    plan = _plan(methods, dataset, data_root, preset, seeds, set_, device, precision, channels_last, compile_,
                 grad_clip, experiment)
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
    if executor == "local":
        warn_if_busy(lambda s: err_console.print(s, markup=False, highlight=False, soft_wrap=True))
    log = (lambda s: None) if quiet else (lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True))
    if not quiet:
        spec0 = plan.specs[0]
        console.print(f"{len(plan.specs)} run(s); preset {plan.preset.name}; experiment {plan.experiment}; "
                      f"device {spec0.device} "
                      f"({spec0.precision}); out {out}; store {store_path}", markup=False, soft_wrap=True)
    t_grid = time.perf_counter()
    try:
        outcomes = _run_on_executor(executor, plan, out, store_path, exec_opts, reuse_results, quiet, log)
    except RunInterrupted as exc:
        raise _interrupted(exc) from None
    failed = [o for o in outcomes if o.status == "failed"]
    unindexed = [o for o in outcomes if o.store_error]
    log(grid_total(outcomes, time.perf_counter() - t_grid))
    finished, elsewhere = _finished_run_ids(outcomes)
    try:
        with ResultsStore(store_path) as st:
            frame = summarize(st, finished)
    except Exception as exc:  # noqa: BLE001 - the results are in the run folders
        err_console.print(f"error: cannot read the store {store_path}: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if not quiet and not frame.empty:
        console.print(summary_table(frame))
    if not quiet and elsewhere:
        console.print(f"note: {elsewhere} run(s) of this grid are claimed by another process and not finished: "
                      f"the table averages the finished runs only (column runs); when they finish, "
                      f"run mrseg-bench report --store {store_path}", markup=False, highlight=False, soft_wrap=True)
    report_ok = True
    if report:
        report_ok = _write_report(store_path, out / "report", quiet, plan.experiment)
    for o in failed:
        err_console.print(f"failed: {o.spec.method} {o.spec.dataset} seed {o.spec.seed}: {o.error}"
                          f"{_error_file_hint(o.run_dir)}", markup=False, highlight=False)
    for o in unindexed:
        err_console.print(f"not in the store: {o.spec.method} {o.spec.dataset} seed {o.spec.seed}: {o.store_error}; "
                          f"the result is in {o.run_dir}/result.json: run mrseg-bench collect --out {out}",
                          markup=False, highlight=False)
    if failed or unindexed or not report_ok:
        raise typer.Exit(1)


def _slurm_minutes(text: str) -> int:
    """``MINUTES``, ``HH:MM:SS`` or ``D-HH:MM:SS`` -> minutes (rounded up); exit 2 otherwise."""
    import re

    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", text.strip())
    if m:
        d, h, mi, sec = (int(g or 0) for g in m.groups())
        minutes = d * 1440 + h * 60 + mi + (1 if sec else 0)
    elif text.strip().isdigit():
        minutes = int(text.strip())
    else:
        raise _usage(f"--slurm-time {text!r}: expected MINUTES, HH:MM:SS or D-HH:MM:SS")
    if minutes < 1:
        raise _usage(f"--slurm-time {text!r}: must be at least one minute")
    return minutes


def _executor_options(executor, jobs, ray_address, ray_num_cpus, ray_num_gpus, slurm_partition, slurm_gpus_per_task,
                      slurm_cpus_per_task, slurm_time, slurm_array_parallelism, slurm_cluster, force):
    """ExecutorOptions from the run flags; bad values exit 2 before anything is planned."""
    from .executors import ExecutorOptions, LocalOptions, RayOptions, SlurmOptions
    from .executors.ray_executor import gpu_share_ok

    checks = {"--ray-num-cpus": ray_num_cpus > 0,
              "--ray-num-gpus/--gpus-per-run (a fraction of one GPU, or a whole number)":
                  ray_num_gpus is None or gpu_share_ok(ray_num_gpus),
              "--slurm-gpus-per-task": slurm_gpus_per_task >= 0, "--slurm-cpus-per-task": slurm_cpus_per_task >= 1,
              "--slurm-array-parallelism": slurm_array_parallelism >= 1,
              "--slurm-cluster": slurm_cluster in ("slurm", "local", "debug")}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise _usage(f"{bad[0]}: invalid value")
    minutes = _slurm_minutes(slurm_time) if executor == "slurm" else 240
    return ExecutorOptions(force=force, local=LocalOptions(jobs=jobs),
                           ray=RayOptions(address=ray_address, num_cpus=ray_num_cpus, num_gpus=ray_num_gpus),
                           slurm=SlurmOptions(partition=slurm_partition, gpus_per_task=slurm_gpus_per_task,
                                              cpus_per_task=slurm_cpus_per_task, time_min=minutes,
                                              array_parallelism=slurm_array_parallelism, cluster=slurm_cluster))


def _finished_run_ids(outcomes) -> tuple[list[str], int]:
    """The run ids of the grid's finished runs, including runs another process held while this one
    passed them and has finished since; and how many are still unfinished elsewhere."""
    from .run_folder import done_result

    ids, elsewhere = [], 0
    for o in outcomes:
        if o.status not in ("done", "skipped"):
            continue
        run_id = o.run_id
        if run_id is None and o.run_dir is not None:  # skipped: claimed by another process
            done = done_result(o.run_dir, o.spec.config_hash)
            run_id = done["run"]["run_id"] if done else None
        if run_id:
            ids.append(run_id)
        else:
            elsewhere += 1
    return ids, elsewhere


def _run_on_executor(executor, plan, out, store_path, opts, reuse_results, quiet, log):
    """The grid on an executor (``executors.grid.run_grid``: each run indexed as it ends), with a
    progress bar over finished runs unless one run at a time runs here. Ctrl-C cancels the runs
    not started (exit 130); finished runs are kept."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .executors.grid import run_grid

    bar = Progress(TextColumn(f"{executor}: runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True,
                   disable=quiet or (executor == "local" and opts.local.jobs == 1))
    try:
        with bar:
            task = bar.add_task("runs", total=len(plan.specs))
            return run_grid(plan, out, store_path, executor=executor, options=opts, reuse_results=reuse_results, quiet=quiet,
                            progress=lambda o: bar.advance(task), log=log)
    except ValueError as exc:  # engine not installed, no Slurm here, ...
        raise _usage(str(exc)) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted: the {executor} runs not finished were cancelled; finished runs are in "
                          f"the store and their folders; the same command resumes the rest",
                          markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


@app.command()
def tune(
    methods: str = _OPT_METHODS,
    preset: str = _OPT_PRESET,
    trials: int = typer.Option(..., "--trials", "-n", help="Trials per method (the same for every method: the budget)."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="The one dataset the tune searches on."),
    data_root: Path | None = _OPT_DATA_ROOT,
    seed: int = typer.Option(0, "--seed", help="Seed of the TPE sampler and of every trial's run."),
    set_: list[str] = _OPT_SET,
    device: str | None = _OPT_DEVICE,
    precision: str | None = _OPT_PRECISION,
    out: Path = _OPT_OUT,
    store: Path | None = typer.Option(None, "--store", help="Results store for the trial runs (default <out>/results.sqlite)."),
    experiment: str | None = typer.Option(None, "--experiment", "-e", help="Label of the trial runs; the tune lives in <out>/<experiment>/tune/ (default: tune-<preset>)."),
    batch: int = typer.Option(0, "--batch", help="Trials asked per method at a time, run as one grid (default: --jobs)."),
    pruner: str = typer.Option("median", "--pruner", help="median (MedianPruner on the per-epoch validation objective) | none."),
    prune_startup: int = typer.Option(2, "--prune-startup", help="Trials per method that finish before any is pruned."),
    prune_warmup: int = typer.Option(1, "--prune-warmup", help="Epochs of the last stage before a trial can be pruned."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    executor: str = typer.Option("local", "--executor", help="local | ray | slurm, as for run; with ray/slurm, --out must be on storage every worker shares."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Local executor: trials at a time, each in its own worker process; 1: in this process."),
    ray_address: str | None = _OPT_RAY_ADDRESS,
    ray_num_cpus: float = _OPT_RAY_CPUS,
    ray_num_gpus: float | None = _OPT_RAY_GPUS,
    slurm_partition: str | None = _OPT_SLURM_PARTITION,
    slurm_gpus_per_task: int = _OPT_SLURM_GPUS,
    slurm_cpus_per_task: int = _OPT_SLURM_CPUS,
    slurm_time: str = _OPT_SLURM_TIME,
    slurm_array_parallelism: int = _OPT_SLURM_PARALLEL,
    slurm_cluster: str = _OPT_SLURM_CLUSTER,
) -> None:
    """Tune each method's search space on the validation split, every method on the same budget
    (docs/tuning.md); writes <out>/<experiment>/tune/{best.toml,trials.csv,objective.png,summary.md}.
    A killed tune resumes where it stopped when run again."""
    from .executors import EXECUTORS
    from .interrupts import RunInterrupted
    from .run.overrides import UsageError
    from .tune.driver import TuneRequest, run_tune

    if executor not in EXECUTORS:
        raise _usage(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS.names())}")
    if jobs < 1:
        raise _usage(f"--jobs {jobs}: must be at least 1")
    if jobs > 1 and executor != "local":
        raise _usage("--jobs works with --executor local (Ray and Slurm place the runs themselves)")
    if batch < 0:
        raise _usage(f"--batch {batch}: must be at least 1 (0: --jobs)")
    opts = _executor_options(executor, jobs, ray_address, ray_num_cpus, ray_num_gpus, slurm_partition,
                             slurm_gpus_per_task, slurm_cpus_per_task, slurm_time, slurm_array_parallelism,
                             slurm_cluster, False)
    _check_out_dir(out, "--out")
    log = (lambda s: None) if quiet else (lambda s: err_console.print(s, markup=False, highlight=False, soft_wrap=True))
    req = TuneRequest(methods, preset, trials, dataset, seed, list(set_), data_root, device, precision, out,
                      experiment, store, executor, opts, batch or jobs, pruner, prune_startup, prune_warmup)
    try:
        result = run_tune(req, log)
    except UsageError as exc:
        raise _usage(str(exc)) from None
    except RunInterrupted as exc:
        raise _interrupted(exc, "the same tune command (it resumes)") from None
    except ValueError as exc:  # an executor not installed, a preset that does not load
        raise _usage(str(exc)) from None
    if not quiet:
        from .tune.outputs import budget_line

        table = Table(title=f"tune {result.experiment}: budget " + budget_line(result.budget))
        for col in ("method", "objective (validation)", "complete / pruned / failed", "best", "best values"):
            table.add_column(col)
        for s in result.summaries:
            c = s.counts
            table.add_row(s.method, f"{s.metric} ({'min' if s.direction == 'minimize' else 'max'})",
                          f"{c.get('complete', 0)} / {c.get('pruned', 0)} / {c.get('fail', 0)}",
                          DASH if s.best_value is None else f"{s.best_value:.4f}",
                          ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.best_params.items()))
        console.print(table)
        console.print(f"preset {result.preset_path}; trials {result.folder / 'trials.csv'}; figure "
                      f"{result.folder / 'objective.png'}", markup=False, soft_wrap=True)
    if any(s.best_value is None for s in result.summaries):
        raise typer.Exit(1)


@app.command("plan")
def plan_cmd(
    methods: str = _OPT_METHODS,
    dataset: str = _OPT_DATASET,
    data_root: Path | None = _OPT_DATA_ROOT,
    preset: str = _OPT_PRESET,
    seeds: str = _OPT_SEEDS,
    set_: list[str] = _OPT_SET,
    device: str | None = _OPT_DEVICE,
    precision: str | None = _OPT_PRECISION,
    channels_last: bool = _OPT_CHANNELS_LAST,
    compile_: bool = _OPT_COMPILE,
    grad_clip: float | None = _OPT_GRAD_CLIP,
    out: Path = _OPT_OUT,
    experiment: str | None = _OPT_EXPERIMENT,
    as_json: bool = typer.Option(False, "--json", help="Print the run specs as a JSON list (input of run-one)."),
) -> None:
    """Validate the grid and list its runs (hash, method, dataset, seed, run folder); writes nothing."""
    import json

    from .run.spec import spec_to_json

    plan = _plan(methods, dataset, data_root, preset, seeds, set_, device, precision, channels_last, compile_,
                 grad_clip, experiment)
    specs = [spec_to_json(s) for s in plan.specs]
    if as_json:
        sys.stdout.write(json.dumps(specs, indent=1, sort_keys=True) + "\n")
        return
    for s in specs:
        console.print(f"{s['config_hash'][:8]}  {s['method']}  {s['dataset']}  seed {s['seed']}  "
                      f"{out / s['run_dir']}", markup=False, highlight=False, soft_wrap=True)


@app.command("run-one")
def run_one_cmd(
    spec: str = typer.Option(..., "--spec", help="A spec JSON file (one item of plan --json, or the list with --index), or - for stdin."),
    index: int | None = typer.Option(None, "--index", help="Pick item INDEX when the file holds plan --json's list."),
    out: Path = _OPT_OUT,
    store: Path | None = typer.Option(None, "--store", help="Also index the result in this store (default: none; run collect later)."),
    force: bool = typer.Option(False, "--force", help="Rerun even if the run is done (swapped in only on success)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run one run spec (claimed; result.json in its folder). Exit 0 done/skipped, 1 failed."""
    import json

    from .interrupts import RunInterrupted
    from .run.overrides import UsageError
    from .run.worker import execute_spec

    where = "stdin" if spec == "-" else spec
    try:
        if spec == "-":
            text = sys.stdin.read(MAX_SPEC_BYTES + 1)
        else:
            with open(spec, "rb") as fh:
                text = fh.read(MAX_SPEC_BYTES + 1).decode("utf-8")
        if len(text) > MAX_SPEC_BYTES:
            raise _usage(f"--spec {where}: larger than {MAX_SPEC_BYTES:,} bytes; not a spec file (plan --json)")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _usage(f"--spec {where}: cannot be read as JSON ({type(exc).__name__}: {exc})") from None
    if isinstance(data, list):
        if index is None and len(data) != 1:
            raise _usage(f"--spec {where}: holds {len(data)} specs; pick one with --index 0..{len(data) - 1}")
        i = 0 if index is None else index
        if not 0 <= i < len(data):
            raise _usage(f"--index {i}: --spec {where} holds {len(data)} specs (0..{len(data) - 1})")
        data = data[i]
    elif index not in (None, 0):
        raise _usage(f"--index {index}: --spec {where} holds one spec")
    log = (lambda s: None) if quiet else (lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True))
    try:
        outcome = execute_spec(data, out, force=force, quiet=quiet, log=log)
    except UsageError as exc:
        raise _usage(f"--spec {where}: {exc}") from None
    except RunInterrupted as exc:
        raise _interrupted(exc) from None
    if store is not None and outcome.result is not None:
        from .collect import index_result
        from .store import ResultsStore

        try:
            with ResultsStore(store) as st:
                index_result(st, outcome.result)
        except Exception as exc:  # noqa: BLE001 - the result stays in its folder
            err_console.print(f"not in the store: {exc}; the result is in {outcome.run_dir}/result.json: "
                              f"run mrseg-bench collect --out {out}", markup=False, highlight=False)
            raise typer.Exit(1) from None
    if outcome.status == "failed":
        err_console.print(f"failed: {outcome.spec.method} {outcome.spec.dataset} seed {outcome.spec.seed}: "
                          f"{outcome.error}{_error_file_hint(outcome.run_dir)}", markup=False, highlight=False)
        raise typer.Exit(1)


@app.command()
def collect(
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Experiment folder root to read."),
    store: Path | None = typer.Option(None, "--store", help="Results store to (re)build (default <out>/results.sqlite)."),
) -> None:
    """Rebuild the results store from the run folders' result.json files (idempotent)."""
    from .collect import collect as collect_runs

    store_path = store or out / "results.sqlite"
    if not out.is_dir():
        raise _usage(f"--out {out}: no such folder")
    try:
        rep = collect_runs(out, store_path)
    except ValueError as exc:
        raise _usage(str(exc)) from None
    for line in rep.errors:
        err_console.print(f"skipped: {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"collected {rep.runs} run(s) ({rep.done} done, {rep.failed} failed) from {out} into {store_path}",
                  markup=False, highlight=False, soft_wrap=True)
    if rep.errors:
        raise typer.Exit(1)


def _warn(message: str) -> None:
    err_console.print(f"warning: {message}", markup=False, highlight=False)


def _write_report(store_path: Path, out_dir: Path, quiet: bool, experiment: str | None = None) -> bool:
    """Write the report of ``experiment``; False (error printed) when it fails: the runs are
    stored, so the grid is not lost, but the command exits non-zero."""
    from .reports.report import write_report

    try:
        paths = write_report(store_path, out_dir, experiment=experiment, log=_warn)
        tidy_wal(store_path)  # the report read it read-only: no -wal/-shm left behind
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
    from .dataset_facts import facts, one_line
    from .presets import load_preset, preset_names
    from .registry import DATASETS, METHODS, METRICS, load_plugins

    load_plugins()
    t = Table(title="methods")
    for c in ("name", "capabilities", "paper", "description"):
        t.add_column(c)
    for name, factory in METHODS.items():
        try:
            info = factory().info
            t.add_row(name, ", ".join(sorted(c.value for c in info.capabilities)), info.paper, info.description)
        except Exception as exc:  # noqa: BLE001 - list what can be listed
            t.add_row(name, DASH, f"(error: {exc})", "")
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
        known = facts(name)
        raters = str(info.num_raters) if info else (known[0] if known else DASH)
        ident = info.rater_identity if info else (known[1] if known else DASH)
        t.add_row(name, raters, ident, one_line("\n".join(doc)))
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
    from .engine.data import make_batches, prepare
    from .engine.device import reset_peak_memory, seed_everything
    from .engine.profile import profile_method
    from .engine.threads import set_run_threads
    from .run.overrides import UsageError
    from .run.plan import plan_grid

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
        set_run_threads(cfg.num_threads)
        seed_everything(0)
        dev = spec.torch_device
        model = spec.method_obj.build(ds.info).to(dev)
        reset_peak_memory(dev)
        idx = list(range(min(cfg.eval_bs, len(ds))))
        batch = prepare(next(iter(make_batches(ds, idx, cfg.eval_bs, False, 0))), dev, cfg.image_size,
                        cfg.channels_last)
        rows = profile_method(spec.method_obj, model, batch, dev, cfg.n_samples, spec.precision,
                              cfg.profile_warmup, cfg.profile_steps, cfg.latency_repeats, compile=cfg.compile)
        vals = {r["name"]: r["value"] for r in rows}
        table.add_row(spec.method, *[_fmt(vals.get(c, float("nan")), c) if c != "peak_memory_mb"
                                     or math.isnan(vals[c]) else f"{vals[c]:.0f}" for c in cols])
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

    _check_out_dir(out, "--out")  # writes nothing: a store that fails validation leaves no folder behind
    try:
        paths = write_report(store, out, reference=reference, experiment=experiment, log=_warn)
        tidy_wal(store)
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
        raise _usage(str(exc)) from None
    console.print(format_summary(result), markup=False, highlight=False, soft_wrap=True)
    from .dataset_facts import preset_note

    if note := preset_note(dataset, opts):
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if not result.ok:
        raise typer.Exit(2)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="mrseg-bench")


if __name__ == "__main__":
    main()
