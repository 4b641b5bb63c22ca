"""What a user sees of a grid's progress beside the per-epoch bars (engine/train.py shows
``epoch k/N``, elapsed time and an ETA per stage): ``grid_total``, the line printed at the end."""

from __future__ import annotations

from collections import Counter


def duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``1h 02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def grid_total(outcomes, seconds: float) -> str:
    """``grid: 4 run(s) in 3m 05s (3 done, 1 skipped)``."""
    counts = Counter(getattr(o, "status", "?") for o in outcomes)
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"grid: {len(outcomes)} run(s) in {duration(seconds)}" + (f" ({parts})" if parts else "")
