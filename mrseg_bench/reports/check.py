"""The CI regression gate: compare the store's latest done runs with a committed baseline.

Baseline JSON (``benchmarks/baseline.json``)::

    {"version": 1,
     "tolerance": {"default": 0.02, "per_rater_dice_matched": 0.05},  # absolute
     "entries": [{"method", "dataset", "preset", "seed", "metric", "value"}, ...],
     "throughput": {"enabled": false, "rel_tolerance": 0.5,
                    "entries": [{"method", "dataset", "preset", "seed", "value"}, ...]}}

``value`` is a run's mean over test cases (per-rater metrics as ``per_rater_dice[r]``; null for
NaN). A metric FAILS when it moved in its bad direction by more than its tolerance (lower for
higher-is-better, higher for lower-is-better, either way for descriptive metrics such as
``sample_diversity`` and ``rater_disagreement``); moving the good way is reported, not failed.
A baselined run or metric that is missing now fails. Runs or metrics absent from the baseline
are listed as new. Entries marked ``"gated": false`` (values at the floor or at chance; rule in
``gating.py``) are listed as not gated and never fail. Throughput (inference images/s) is compared only when ``enabled`` (shared
CI machines are noisy): it fails when it dropped by more than ``rel_tolerance`` (relative).

Tolerance (measured, not guessed) with the smoke grid of ``scripts/update_baseline.sh``
(dpersona, probunet, fusion.soft, per_rater.multihead; seed 0; CPU) on the 2-core dev machine:
- same code, same settings, rerun: bit-identical (all 47 values; CPU presets pin one thread);
- ``--set run.num_threads=2`` (other float summation order, a stand-in for another CPU):
  probunet moved by at most 1.1e-4, the rest stayed identical;
- an earlier build (torch's default threads vs ``OMP_NUM_THREADS=1``): continuous metrics moved
  by at most 1.1e-3, but ``per_rater_dice_matched[r]`` by 0.033, because the Hungarian
  assignment flipped between two raters (a discrete jump, equal and opposite on two raters).
Hence ``default`` 0.02 (about 20x the largest continuous drift, still a fifth of a barely
trained model's Dice of ~0.1, so a real regression fails) and 0.05 for
``per_rater_dice_matched``. ``tolerance=`` (CLI ``--tolerance``) overrides every metric's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .aggregate import profile_values, run_means
from .columns import base_metric, higher_is_better, metric_spec
from .gating import gate_entries
from .loader import SelectionError, load_results, select_experiment

VERSION = 1
DEFAULT_TOLERANCE: dict[str, float] = {"default": 0.02, "per_rater_dice_matched": 0.05}
DEFAULT_THROUGHPUT = {"enabled": False, "rel_tolerance": 0.5}
RUN_KEY = ("method", "dataset", "preset", "seed")
CONFIG_KEYS = ("experiment", "overrides", "protocol", "convention")  # written by --update; optional
_EPS = 1e-12


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def current_values(store_path: Path) -> tuple[list[dict], list[dict]]:
    """(metric entries, throughput entries) of the store's latest done runs, every experiment.

    Each entry carries its run's identity: ``RUN_KEY`` plus ``CONFIG_KEYS`` (experiment,
    overrides as a dict, protocol, convention)."""
    results = load_results(store_path, all_experiments=True)
    ident = results.runs.set_index("run_id")[["experiment", "overrides", "protocol", "convention"]]
    means = run_means(results)
    prof = profile_values(results)
    prof = prof[prof["key"] == "infer_images_per_s"]

    def entry(r, **more) -> dict:
        extra = ident.loc[r.run_id]
        return {"method": r.method_name, "dataset": r.dataset, "preset": r.preset, "seed": int(r.seed),
                **more, "experiment": str(extra["experiment"]), "overrides": dict(extra["overrides"]),
                "protocol": str(extra["protocol"]), "convention": str(extra["convention"])}

    method_of = results.runs.set_index("run_id")["method"]
    means = means.assign(method_name=means["run_id"].map(method_of))
    prof = prof.assign(method_name=prof["run_id"].map(method_of))
    entries = [entry(r, metric=r.key, value=_num(r.value)) for r in means.itertuples(index=False)]
    thr = [entry(r, value=_num(r.value)) for r in prof.itertuples(index=False)]
    key = lambda e: (e["dataset"], e["preset"], e["method"], e["seed"], _config_id(e), e.get("metric", ""))  # noqa: E731
    return sorted(entries, key=key), sorted(thr, key=key)


def _config_id(e: dict) -> str:
    """Canonical text of an entry's configuration fields (those it has)."""
    return json.dumps({k: e[k] for k in CONFIG_KEYS if k in e}, sort_keys=True)


def _matches(current: dict, wanted: dict) -> bool:
    """``current`` belongs to the run ``wanted`` names: same RUN_KEY and the same value for every
    configuration field ``wanted`` has (a baseline written before experiments has none but
    the preset, which stands for the experiment)."""
    if _run_id(current) != _run_id(wanted):
        return False
    exp = wanted.get("experiment", wanted["preset"])
    if current["experiment"] != exp:
        return False
    return all(current[k] == wanted[k] for k in CONFIG_KEYS if k in wanted and k != "experiment")


def select_current(baseline: dict[str, Any], metric_now: list[dict], thr_now: list[dict],
                   where: str = "results store") -> tuple[list[dict], list[dict]]:
    """The current entries of the baseline's experiments, one configuration per baselined run.

    Raises ``SelectionError`` listing the choices when a baselined run matches several
    configurations now (e.g. dpersona with beta=0.5 and beta=1.0 and a baseline that does not
    say which)."""
    base = baseline["entries"] + baseline["throughput"].get("entries", [])
    experiments = {e.get("experiment", e["preset"]) for e in base}
    wanted = {}
    for e in base:
        wanted.setdefault((*_run_id(e), _config_id(e)), e)
    keep_configs: dict[tuple, set[str]] = {}
    problems: list[str] = []
    all_now = metric_now + thr_now
    for w in wanted.values():
        hits = {_config_id(c) for c in all_now if _matches(c, w)}
        if len(hits) > 1:
            choices = sorted(_describe(json.loads(h)) for h in hits)
            problems.append(f"{'/'.join(map(str, _run_id(w)))} matches {len(hits)} configurations: "
                            + "; ".join(choices))
        keep_configs.setdefault(_run_id(w), set()).update(hits)
    if problems:
        raise SelectionError(f"{where}: the baseline's selection is ambiguous (add experiment/"
                             f"overrides to its entries, or keep one configuration per run): "
                             + " | ".join(problems))

    def keep(c: dict) -> bool:
        if c["experiment"] not in experiments:
            return False
        configs = keep_configs.get(_run_id(c))
        return configs is None or _config_id(c) in configs

    return [c for c in metric_now if keep(c)], [c for c in thr_now if keep(c)]


def _describe(config: dict) -> str:
    over = config.get("overrides") or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(over.items())) or "no overrides"
    return (f"experiment {config.get('experiment')!r} ({text}; protocol {config.get('protocol')}, "
            f"convention {config.get('convention')})")


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and validate a baseline file; ValueError names the file and the problem: not JSON,
    a non-finite number (``NaN``/``Infinity``/``1e999``), wrong version, bad tolerances, no
    entries, an entry without its keys or with a non-numeric value, a duplicate entry."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"baseline {path}: is a folder; give the baseline JSON file")
    if not path.is_file():
        raise FileNotFoundError(f"baseline {path}: no such file (create it with --update)")

    def no_constant(name: str) -> float:
        raise ValueError(f"baseline {path}: {name} is not allowed (numbers must be finite; use null for NaN)")

    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"baseline {path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"baseline {path}: not a baseline (JSON nested too deeply)") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"baseline {path}: expected an object with \"version\": {VERSION}")

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    tol = data.get("tolerance", DEFAULT_TOLERANCE)
    if not isinstance(tol, dict) or not all(number(v) and v >= 0 for v in tol.values()):
        raise ValueError(f"baseline {path}: \"tolerance\" must map metric names to finite numbers >= 0")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise ValueError(f"baseline {path}: \"entries\" must be a list")
    if not entries:
        raise ValueError(f"baseline {path}: \"entries\" is empty, so nothing would be checked "
                         "(write it with --update from a store with finished runs)")
    seen: dict[tuple, int] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or any(k not in e for k in (*RUN_KEY, "metric", "value")):
            raise ValueError(f"baseline {path}: entries[{i}] needs keys {[*RUN_KEY, 'metric', 'value']}")
        if e["value"] is not None and not number(e["value"]):
            raise ValueError(f"baseline {path}: entries[{i}].value must be a finite number or null")
        if why := _key_types(e, ("metric",)):
            raise ValueError(f"baseline {path}: entries[{i}].{why}")
        if not isinstance(e.get("gated", True), bool):
            raise ValueError(f"baseline {path}: entries[{i}].gated must be true or false")
        key = (*(str(e[k]) for k in RUN_KEY), _config_id(e), str(e["metric"]))  # two configs may share a run key
        if key in seen:
            raise ValueError(f"baseline {path}: entries[{i}] repeats entries[{seen[key]}] "
                             f"({'/'.join(key)}); each run and metric may appear once")
        seen[key] = i
    thr = data.get("throughput", {}) or {}
    if not isinstance(thr, dict) or not isinstance(thr.get("entries", []), list):
        raise ValueError(f"baseline {path}: \"throughput\" must be an object with a list \"entries\"")
    if "rel_tolerance" in thr and not (number(thr["rel_tolerance"]) and thr["rel_tolerance"] >= 0):
        raise ValueError(f"baseline {path}: throughput.rel_tolerance must be a finite number >= 0")
    seen = {}
    for i, e in enumerate(thr.get("entries", [])):
        if not isinstance(e, dict) or any(k not in e for k in (*RUN_KEY, "value")):
            raise ValueError(f"baseline {path}: throughput.entries[{i}] needs keys {[*RUN_KEY, 'value']}")
        if e["value"] is not None and not number(e["value"]):
            raise ValueError(f"baseline {path}: throughput.entries[{i}].value must be a finite number or null")
        if why := _key_types(e, ()):
            raise ValueError(f"baseline {path}: throughput.entries[{i}].{why}")
        key = tuple(str(e[k]) for k in RUN_KEY)
        if key in seen:
            raise ValueError(f"baseline {path}: throughput.entries[{i}] repeats throughput.entries[{seen[key]}]")
        seen[key] = i
    data["tolerance"] = {**DEFAULT_TOLERANCE, **tol}
    data["throughput"] = {**DEFAULT_THROUGHPUT, "entries": [], **thr}
    return data


def _key_types(e: dict, text_keys: tuple[str, ...]) -> str | None:
    """Why an entry's identifying fields have the wrong types (``<key> must be ...``), or None:
    method, dataset, preset and ``text_keys`` strings, seed an int, the optional experiment,
    protocol and convention strings, overrides an object."""
    for k in ("method", "dataset", "preset", *text_keys):
        if not isinstance(e[k], str):
            return f"{k} must be a string, not {type(e[k]).__name__}"
    if isinstance(e["seed"], bool) or not isinstance(e["seed"], int):
        return f"seed must be an integer, not {type(e['seed']).__name__}"
    for k in ("experiment", "protocol", "convention"):
        if k in e and not isinstance(e[k], str):
            return f"{k} must be a string, not {type(e[k]).__name__}"
    if "overrides" in e and not isinstance(e["overrides"], dict):
        return f"overrides must be an object, not {type(e['overrides']).__name__}"
    return None


def _spec_tolerance(name: str, tol: dict) -> float:
    """The metric's ``MetricSpec.gate_tolerance``, else the baseline's default."""
    spec = metric_spec(base_metric(name))
    return spec.gate_tolerance if spec is not None and spec.gate_tolerance is not None else tol["default"]


def _run_id(e: dict) -> tuple:
    return tuple(e[k] for k in RUN_KEY)


def _fmt(x: float | None) -> str:
    return "NaN" if x is None else f"{x:.6g}"


def _table(rows: list[list[str]]) -> list[str]:
    header = ["method", "dataset", "preset", "seed", "metric", "baseline", "now", "delta", "allowed", "status"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


def compare(baseline: dict[str, Any], metric_now: list[dict], thr_now: list[dict],
            tolerance: float | None = None) -> tuple[bool, str]:
    """(ok, text) comparing current entries with a loaded baseline (see module doc)."""
    tol = baseline["tolerance"]
    now = {(*_run_id(e), e["metric"]): e["value"] for e in metric_now}
    runs_now = {_run_id(e) for e in metric_now}
    base_runs = {_run_id(e) for e in baseline["entries"]}
    fails: list[list[str]] = []
    better: list[list[str]] = []
    n_ok = n_ungated = 0
    for run in sorted(base_runs - runs_now, key=str):
        fails.append([*map(str, run), "*", "", "", "", "", "MISSING RUN"])
    for e in baseline["entries"]:
        run = _run_id(e)
        if run not in runs_now:
            continue
        if e.get("gated", True) is False:
            n_ungated += 1
            continue
        name = str(e["metric"])
        allowed = float(tolerance if tolerance is not None else tol.get(base_metric(name), _spec_tolerance(name, tol)))
        b = _num(e["value"])
        key = (*run, name)
        ident = [*map(str, run), name]
        if key not in now:
            fails.append([*ident, _fmt(b), "", "", f"{allowed:g}", "MISSING METRIC"])
            continue
        v = now[key]
        if b is None or v is None:
            if (b is None) == (v is None):
                n_ok += 1
            else:
                fails.append([*ident, _fmt(b), _fmt(v), "", f"{allowed:g}", "WORSE (NaN changed)"])
            continue
        delta = v - b
        hib = higher_is_better(name)
        bad = {True: -delta, False: delta, None: abs(delta)}[hib]
        row = [*ident, _fmt(b), _fmt(v), f"{delta:+.3g}", f"{allowed:g}"]
        if bad > allowed + _EPS:
            fails.append([*row, "WORSE" if hib is not None else "CHANGED"])
        elif hib is not None and -bad > allowed + _EPS:
            better.append([*row, "better"])
        else:
            n_ok += 1
    base_keys = {(*_run_id(e), e["metric"]) for e in baseline["entries"]}
    new = sorted({k for k in now if k not in base_keys}, key=str)
    thr_lines: list[str] = []
    thr = baseline["throughput"]
    if thr.get("enabled"):
        rel = float(thr.get("rel_tolerance", 0.5))
        cur = {_run_id(e): e["value"] for e in thr_now}
        for e in thr["entries"]:
            b, v = _num(e["value"]), cur.get(_run_id(e))
            ident = [*map(str, _run_id(e)), "infer_images_per_s"]
            if v is None:
                fails.append([*ident, _fmt(b), "", "", f"-{rel:.0%}", "MISSING THROUGHPUT"])
            elif b is not None and v < b * (1 - rel):
                fails.append([*ident, _fmt(b), _fmt(v), f"{(v - b) / b:+.0%}", f"-{rel:.0%}", "SLOWER"])
            else:
                thr_lines.append(f"throughput {'/'.join(ident[:4])}: {_fmt(v)} img/s (baseline {_fmt(b)})")
    ok = not fails
    tol_text = f"{tolerance:g} for all metrics" if tolerance is not None else str(tol)
    lines = [f"regression check: {'PASS' if ok else 'FAIL'} — {n_ok} within tolerance, "
             f"{len(better)} better, {len(fails)} failing, {len(new)} new "
             f"(tolerance {tol_text})"]
    if n_ungated:
        lines[0] += f"; {n_ungated} not gated (at floor or chance)"
    if fails:
        lines += ["", "Failing:"] + _table(fails)
    if better:
        lines += ["", "Better than baseline (fine; update the baseline to lock it in):"] + _table(better)
    if new:
        lines += ["", "Not in baseline (new): " + ", ".join("/".join(map(str, k)) for k in new[:20])
                  + (f" ... (+{len(new) - 20})" if len(new) > 20 else "")]
    lines += thr_lines
    return ok, "\n".join(lines)


def write_baseline(path: Path, metric_now: list[dict], thr_now: list[dict],
                   previous: dict[str, Any] | None = None) -> None:
    """Write a baseline from current entries, keeping a previous file's tolerance and
    throughput settings. Entries without a ``gated`` flag get one (``gating.gate_entries``)."""
    if any("gated" not in e for e in metric_now):
        metric_now = gate_entries(metric_now)
    tol = dict(previous["tolerance"]) if previous else dict(DEFAULT_TOLERANCE)
    thr_prev = previous["throughput"] if previous else DEFAULT_THROUGHPUT
    data = {
        "version": VERSION,
        "tolerance": tol,
        "entries": metric_now,
        "throughput": {"enabled": bool(thr_prev.get("enabled", False)),
                       "rel_tolerance": float(thr_prev.get("rel_tolerance", 0.5)),
                       "entries": thr_now},
    }
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"baseline {path}: cannot write it ({exc.strerror or exc})") from None


def run_check(store_path: Path, baseline_path: Path, tolerance: float | None = None,
              update: bool = False) -> tuple[bool, str]:
    """Compare the store's latest done runs with ``baseline_path`` -> (ok, readable diff).

    ``tolerance`` (absolute, >= 0) overrides the baseline's per-metric tolerances.
    ``update=True`` writes the current values as the new baseline (keeping its tolerance and
    throughput settings when the file exists) and returns (True, a summary).
    """
    store_path, baseline_path = Path(store_path), Path(baseline_path)
    if tolerance is not None and (not math.isfinite(tolerance) or tolerance < 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    metric_now, thr_now = current_values(store_path)
    if not metric_now:  # an empty or failed-only store: a usage error (exit 2), never a gate result
        raise ValueError(f"results store {store_path}: no finished runs with metrics"
                         + ("; refusing to write an empty baseline" if update else " to check"))
    if baseline_path.is_dir():
        raise ValueError(f"baseline {baseline_path}: is a folder; give the baseline JSON file")
    if update:
        previous = load_baseline(baseline_path) if baseline_path.is_file() else None
        if previous is not None:
            metric_now, thr_now = _of_experiments(previous, metric_now, thr_now)
        else:
            metric_now, thr_now = _single_experiment(store_path, metric_now, thr_now)
        if not metric_now:
            raise ValueError(f"results store {store_path}: no finished runs with metrics; "
                             "refusing to write an empty baseline")
        write_baseline(baseline_path, metric_now, thr_now, previous)
        runs = {(*_run_id(e), _config_id(e)) for e in metric_now}
        return True, (f"baseline {baseline_path} written: {len(runs)} runs, "
                      f"{len(metric_now)} metric values, {len(thr_now)} throughput values")
    baseline = load_baseline(baseline_path)
    metric_now, thr_now = select_current(baseline, metric_now, thr_now, f"results store {store_path}")
    return compare(baseline, metric_now, thr_now, tolerance)


def _of_experiments(previous: dict, metric_now: list[dict], thr_now: list[dict]):
    """Entries of the experiments a previous baseline covered (an update keeps its scope)."""
    base = previous["entries"] + previous["throughput"].get("entries", [])
    exps = {e.get("experiment", e["preset"]) for e in base}
    return [e for e in metric_now if e["experiment"] in exps], [e for e in thr_now if e["experiment"] in exps]


def _single_experiment(store_path: Path, metric_now: list[dict], thr_now: list[dict]):
    """A new baseline covers one experiment: the store's only one (else SelectionError)."""
    import pandas as pd

    runs = pd.DataFrame([{"experiment": e["experiment"], "run_id": (*_run_id(e), _config_id(e))}
                         for e in metric_now]).drop_duplicates()
    if runs.empty:
        return metric_now, thr_now
    chosen = set(select_experiment(runs, None, f"results store {store_path}")["experiment"])
    return [e for e in metric_now if e["experiment"] in chosen], [e for e in thr_now if e["experiment"] in chosen]
