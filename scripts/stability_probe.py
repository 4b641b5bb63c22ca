"""Measure the first optimiser steps of each method's first stage, per seed: max KL, max global
gradient norm (before clipping), max prior sigma (``mrseg_bench.engine.stability``).

    python scripts/stability_probe.py --methods dpersona --preset study --seeds 0,1,2,3,4 \
        --steps 30 [--set run.warmup_steps=0 --set run.grad_clip=0 --set lr=1e-3 ...]

Prints one row per (method, seed) and writes them as JSON lines with ``--json FILE``. Nothing
else is written (each probe trains in a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", required=True)
    ap.add_argument("--preset", default="study")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--json", default=None, help="also write the per-step records here (JSON lines)")
    args = ap.parse_args(argv)

    from mrseg_bench.engine.stability import probe, summary
    from mrseg_bench.run.overrides import UsageError
    from mrseg_bench.run.plan import plan_grid

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        plan = plan_grid(args.methods, args.dataset, seeds, args.preset, sets=args.sets)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = open(args.json, "w", encoding="utf-8") if args.json else None
    try:
        print(f"{'method':<22} {'seed':>4} {'steps':>5} {'max KL':>12} {'max |g|':>12} {'max sigma':>10}")
        for spec in plan.specs:
            records = probe(spec, plan.datasets[spec.dataset], plan.splits[spec.dataset], args.steps)
            s = summary(records)
            print(f"{spec.method:<22} {spec.seed:>4} {s['steps']:>5} {s['max_kl']:>12.4g} "
                  f"{s['max_grad_norm']:>12.4g} {s['max_sigma']:>10.4g}", flush=True)
            if out:
                for r in records:
                    out.write(json.dumps({"method": spec.method, "seed": spec.seed, "sets": args.sets, **r}) + "\n")
    finally:
        if out:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
