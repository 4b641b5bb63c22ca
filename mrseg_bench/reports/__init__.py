"""Reports from the results store alone, and the CI regression gate.

- ``report.write_report(store_path, out_dir) -> list[Path]``: LaTeX (booktabs), Markdown and
  CSV tables per dataset and preset (diversity, personalisation, consensus, cost) and figures
  (metric vs throughput, per-rater Dice, qualitative grid from ``qualitative.pt``).
- ``check.run_check(store_path, baseline_path, tolerance=None, update=False) -> (ok, text)``.
- ``qualitative.save_qualitative(run_dir, image, masks, prediction, case_ids)``: what the runner
  saves after evaluation so the report can draw the qualitative grid;
  ``figures.qualitative_grid(images, raters, predictions, out_path)`` draws it directly.

Submodules are imported on first use (matplotlib and scipy load only when needed).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "write_report": "report",
    "run_check": "check",
    "qualitative_grid": "figures",
    "save_qualitative": "qualitative",
    "load_qualitative": "qualitative",
    "load_results": "loader",
    "build_tables": "tables",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
