"""Which baseline values the regression gate compares (docs/metrics.md "The regression gate").

A gate on a value that cannot get worse catches nothing. When a baseline is written, each entry
gets ``"gated": true | false`` (and ``"why"`` when false); ``check`` skips entries marked false.
An entry is NOT gated when:

- ``nan``: its value is NaN (null);
- ``floor``: higher is better and the value is below ``margin`` (it can hardly fall further);
- ``chance``: a chance value is known (the same run trained for one step) and the value does not
  beat it by at least ``margin`` in the metric's good direction (descriptive metrics such as
  ``sample_diversity``, which fail when they change either way: does not differ from it by at
  least ``margin``; so ``rater_disagreement``, a property of the data, is never gated when chance
  values are given); the chance value is stored as
  ``"chance"`` so a reader sees the gap. With chance values given, an entry missing from them is
  not gated either (``chance``: nothing shows that it is above chance).

``GATE_MARGIN`` = 0.1, five times the default tolerance (0.02): a gated value sits far enough
above chance that losing more than the tolerance is a regression, not noise at the floor.

Command line (used by ``scripts/update_baseline.sh``)::

    python -m mrseg_bench.reports.gating --store T.sqlite --chance-store C.sqlite \\
        --baseline benchmarks/baseline.json [--default-tolerance 0.04]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from .columns import higher_is_better

GATE_MARGIN = 0.1


def _key(e: dict) -> tuple:
    """Match a run's entry with its chance run: the preset's --set overrides keep its name."""
    return (e["method"], e["dataset"], e["preset"], int(e["seed"]), e["metric"])


def gate_entries(entries: Iterable[dict], chance: Iterable[dict] | None = None,
                 margin: float = GATE_MARGIN) -> list[dict]:
    """Copies of ``entries`` (``{method, dataset, preset, seed, metric, value}``) with ``gated``
    (and ``why`` / ``chance``) set by the rule in the module docstring."""
    chance_map = None if chance is None else {_key(c): c["value"] for c in chance}
    out = []
    for e in entries:
        e = {k: v for k, v in e.items() if k not in ("gated", "why", "chance")}
        value, hib = e["value"], higher_is_better(str(e["metric"]))
        why = None
        if value is None:
            why = "nan"
        elif hib and value < margin:
            why = "floor"
        elif chance_map is not None:
            c = chance_map.get(_key(e))
            if c is not None:
                e["chance"] = c
            gain = None if c is None else {True: value - c, False: c - value, None: abs(value - c)}[hib]
            if gain is None or gain < margin:
                why = "chance"
        e["gated"] = why is None
        if why is not None:
            e["why"] = why
        out.append(e)
    return out


def main(argv: list[str] | None = None) -> int:
    from .check import current_values, load_baseline, write_baseline

    p = argparse.ArgumentParser(prog="python -m mrseg_bench.reports.gating",
                                description="Write a baseline whose entries are marked gated or not.")
    p.add_argument("--store", type=Path, required=True, help="results store of the trained grid")
    p.add_argument("--chance-store", type=Path, help="the same grid trained for one step")
    p.add_argument("--baseline", type=Path, required=True, help="baseline JSON to write")
    p.add_argument("--margin", type=float, default=GATE_MARGIN)
    p.add_argument("--default-tolerance", type=float, default=None,
                   help="set the baseline's default absolute tolerance (else kept from the old file)")
    a = p.parse_args(argv)
    for path in (a.store, a.chance_store):
        if path is not None and not path.is_file():
            p.error(f"{path}: no such results store")
    metric_now, thr_now = current_values(a.store)
    if not metric_now:
        p.error(f"{a.store}: no finished runs with metrics")
    chance = current_values(a.chance_store)[0] if a.chance_store else None
    entries = gate_entries(metric_now, chance, a.margin)
    previous = load_baseline(a.baseline) if a.baseline.is_file() else None
    if a.default_tolerance is not None:
        if not a.default_tolerance >= 0:
            p.error(f"--default-tolerance must be >= 0, got {a.default_tolerance}")
        from .check import DEFAULT_THROUGHPUT, DEFAULT_TOLERANCE

        previous = previous or {"tolerance": dict(DEFAULT_TOLERANCE), "throughput": DEFAULT_THROUGHPUT}
        previous["tolerance"] = {**previous["tolerance"], "default": a.default_tolerance}
    write_baseline(a.baseline, entries, thr_now, previous)
    n = sum(e["gated"] for e in entries)
    print(f"baseline {a.baseline} written: {len(entries)} values, {n} gated, "
          f"{len(entries) - n} not gated (margin {a.margin:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
