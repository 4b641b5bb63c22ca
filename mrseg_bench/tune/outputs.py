"""What a tune writes into ``<out>/<experiment>/tune/``.

- ``trials.csv``: one row per trial: ``method, trial, state, value, metric, direction, params``
  (JSON), ``run_dir, error, preset`` (1 for the preset trial: the preset's own values); ``value``
  is the validation objective (a pruned trial: its last reported value; a failed one: empty);
- ``objective.png``: the objective against the trial number, one panel per method (complete
  trials as dots, the preset trial ringed, pruned as crosses, the best so far as a step line
  drawn to the method's last trial);
- ``best.toml``: a preset (``run --preset <file>``): the tune's preset with each tuned method's
  exact section holding its effective config with the best trial's values;
- ``summary.md``: the budget and each method's best trial.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..run_folder import atomic_write_text


@dataclass
class TrialRow:
    method: str
    trial: int
    state: str  # complete | pruned | fail | running | waiting
    value: float | None
    metric: str
    direction: str
    params: dict[str, Any]
    run_dir: str = ""
    error: str = ""
    orphaned: bool = False
    preset: bool = False  # the preset trial (the preset's own values)


@dataclass
class MethodSummary:
    method: str
    metric: str
    direction: str
    space: dict[str, str]  # field -> range description
    epochs: dict[str, int]  # stage -> epochs per trial
    best_value: float | None = None
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    preset_trial: int | None = None  # the trial of the preset's own values, once it completed
    preset_value: float | None = None


COLUMNS = ["method", "trial", "state", "value", "metric", "direction", "params", "run_dir", "error", "preset"]


def write_csv(path: Path, rows: Sequence[TrialRow]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({"method": r.method, "trial": r.trial, "state": r.state,
                    "value": "" if r.value is None else repr(r.value), "metric": r.metric,
                    "direction": r.direction, "params": json.dumps(r.params, sort_keys=True),
                    "run_dir": r.run_dir, "error": r.error, "preset": "1" if r.preset else ""})
    atomic_write_text(path, buf.getvalue())


def write_figure(path: Path, rows: Sequence[TrialRow]) -> None:
    """Objective against trial, one panel per method (module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r.method for r in rows)) or ["(no trials)"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.4 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        mine = [r for r in rows if r.method == method and r.value is not None and math.isfinite(r.value)]
        done = [r for r in mine if r.state == "complete"]
        pruned = [r for r in mine if r.state == "pruned"]
        failed = sum(1 for r in rows if r.method == method and r.state == "fail" and not r.orphaned)
        if done:
            ax.plot([r.trial for r in done], [r.value for r in done], "o", color="C0", label="complete")
            best, xs, ys = None, [], []
            minimise = done[0].direction == "minimize"
            for r in sorted(done, key=lambda r: r.trial):
                if best is None or (r.value < best if minimise else r.value > best):
                    best = r.value
                xs.append(r.trial)
                ys.append(best)
            last = max(r.trial for r in rows if r.method == method)
            if last > xs[-1]:  # later trials (pruned, failed) did not change the best
                xs.append(last)
                ys.append(best)
            ax.step(xs, ys, where="post", color="C1", label="best so far")
            ringed = [r for r in done if r.preset]
            if ringed:
                ax.plot([r.trial for r in ringed], [r.value for r in ringed], "o", mfc="none", mec="k", ms=11,
                        label="preset's own values")
        if pruned:
            ax.plot([r.trial for r in pruned], [r.value for r in pruned], "x", color="C3", label="pruned (last value)")
        ref = next((r for r in rows if r.method == method), None)
        title = method + (f" ({failed} failed)" if failed else "")
        if ref is not None:
            ax.set_ylabel(f"validation {ref.metric}", fontsize=9)
            title += f"\n{'lower' if ref.direction == 'minimize' else 'higher'} is better"
        ax.set_xlabel("trial")
        ax.set_title(title, fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if done or pruned:
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


# -- the tuned preset ---------------------------------------------------------------------------
def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def toml_value(value: Any) -> str:
    """TOML for a preset value: bool, int, float, str or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _table(name: str, values: Mapping[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    for k, v in values.items():
        if v is None:
            lines.append(f"# {k}: None (TOML has no null; the default applies)")
        else:
            lines.append(f"{_toml_key(k)} = {toml_value(v)}")
    return lines + [""]


def _section_name(kind: str, name: str) -> str:
    return f"{kind}.{name}" if name.replace("_", "").replace("-", "").isalnum() else f"{kind}.{json.dumps(name)}"


def preset_text(description: str, run: Mapping[str, Any], datasets: Mapping[str, Mapping[str, Any]],
                methods: Mapping[str, Mapping[str, Any]], tune: Mapping[str, Mapping[str, Any]],
                header: Sequence[str] = ()) -> str:
    """A preset file: ``description``, ``[run]``, ``[dataset.X]``, ``[method.X]`` (in the given
    order: patterns before exact names), ``[tune.X]``."""
    lines = [f"# {h}" for h in header]
    lines += [f"description = {toml_value(description)}", ""]
    lines += _table("run", run)
    for name, opts in datasets.items():
        lines += _table(_section_name("dataset", name), opts)
    for name, values in methods.items():
        lines += _table(_section_name("method", name), values)
    for name, section in tune.items():
        lines.append(f"[{_section_name('tune', name)}]")
        for k, spec in section.items():
            if isinstance(spec, Mapping):
                inner = ", ".join(f"{_toml_key(a)} = {toml_value(b)}" for a, b in spec.items())
                lines.append(f"{_toml_key(k)} = {{ {inner} }}")
            else:
                lines.append(f"{_toml_key(k)} = {toml_value(spec)}")
        lines.append("")
    return "\n".join(lines)


def summary_text(budget: Mapping[str, Any], summaries: Sequence[MethodSummary]) -> str:
    """``summary.md``: the budget line and a table of each method's best trial."""
    lines = ["# Tune summary", "", "Budget (the same for every method): " + budget_line(budget), "",
             "| method | objective (validation) | trials: complete / pruned / failed | best | best trial | best values "
             "| the preset's own values (trial) | epochs per trial |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        c = s.counts
        best = "—" if s.best_value is None else f"{s.best_value:.4f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in s.best_params.items()) or "—"
        epochs = ", ".join(f"{k} {v}" for k, v in s.epochs.items())
        own = "—" if s.preset_value is None else f"{s.preset_value:.4f} ({s.preset_trial})"
        lines.append(f"| {s.method} | {s.metric} ({'min' if s.direction == 'minimize' else 'max'}) | "
                     f"{c.get('complete', 0)} / {c.get('pruned', 0)} / {c.get('fail', 0)} | {best} | "
                     f"{'—' if s.best_trial is None else s.best_trial} | {params} | {own} | {epochs} |")
    lines += ["", "Search spaces:", ""]
    for s in summaries:
        lines.append(f"- {s.method}: " + "; ".join(f"{k} {v}" for k, v in s.space.items()))
    return "\n".join(lines) + "\n"


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def budget_line(budget: Mapping[str, Any]) -> str:
    p = budget["pruner"]
    pruner = "none" if p.get("kind") == "none" else \
        f"MedianPruner(n_startup_trials={p['n_startup_trials']}, n_warmup_steps={p['n_warmup_steps']})"
    return (f"{budget['trials']} trials per method, epochs per trial from preset {budget['preset']}, "
            f"the preset's own values as one trial where they lie in the space (never pruned), "
            f"TPE sampler seed {budget['seed']} (first {budget['startup_trials']} trials random), "
            f"pruner {pruner}, trial seed {budget['seed']}, batches of {budget['batch']} trials")
