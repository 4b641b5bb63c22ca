#!/usr/bin/env bash
# Regenerate benchmarks/baseline.json from a fresh smoke run (seed 0, CPU, one thread set).
# The smoke run is seeded and deterministic on CPU; commit the new baseline only with a reason
# (a method changed on purpose). Usage: scripts/update_baseline.sh [python-bin-dir]
set -euo pipefail
BIN="${1:-$(dirname "$(command -v mrseg-bench)")}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$BIN/mrseg-bench" run --methods dpersona,probunet,fusion.soft,per_rater.multihead \
  --preset smoke --seeds 0 --device cpu --out "$OUT" --no-report --quiet
"$BIN/mrseg-bench" check --store "$OUT/results.sqlite" --baseline benchmarks/baseline.json --update
