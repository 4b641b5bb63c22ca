"""3-D volumes as 2-D slices, and per-volume aggregation of per-slice metric rows.

- ``keep_slices(foreground, mode, context)``: which slices of a volume become cases.
  ``mode="all"``: every slice; ``"foreground"``: slices where any valid rater marks a pixel,
  plus ``context`` neighbours on each side (clipped to the volume).
- ``slice_case_id(case, k)`` = ``<case>_s<k>``; the group (patient) of a slice is its volume's.
- ``per_volume_rows(rows, volume_of)``: per-case metric rows (``case_id, metric, rater, value``)
  -> one row per (volume, metric, rater) holding the mean over the volume's slices (NaN values
  skipped; all NaN -> NaN). ``case_id`` of the new row is the volume id. The run's test mean is
  then a mean over volumes (each volume weighs the same however many slices it has), which is
  how the NPC-170 protocol reports its numbers; see docs/your-own-data.md for the difference
  between a slice mean and a metric computed on the stacked 3-D masks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

SLICE_MODES = ("all", "foreground")
_SLICE_SUFFIX = re.compile(r"^(.*)_s\d+$")


def keep_slices(foreground: np.ndarray, mode: str = "all", context: int = 0) -> np.ndarray:
    """Indices of the slices to keep. ``foreground``: bool ``[Z]`` (any rater marks slice k)."""
    if mode not in SLICE_MODES:
        raise ValueError(f"slices={mode!r} is not one of {', '.join(SLICE_MODES)}")
    if context < 0:
        raise ValueError(f"context={context} must be >= 0")
    fg = np.asarray(foreground, dtype=bool)
    if mode == "all":
        return np.arange(fg.size)
    if context:
        fg = np.convolve(fg.astype(np.int64), np.ones(2 * context + 1, dtype=np.int64), mode="same") > 0
    return np.flatnonzero(fg)


def slice_case_id(case: str, k: int) -> str:
    return f"{case}_s{int(k)}"


def volume_of_case(case_id: str) -> str:
    """``"vol_s12"`` -> ``"vol"``; an id without a slice suffix is its own volume."""
    m = _SLICE_SUFFIX.match(case_id)
    return m.group(1) if m else case_id


def volume_lookup(dataset: Any) -> Callable[[str], str]:
    """case id -> volume id: the dataset's ``volume_ids`` (folder, NPC), else the ``_s<k>`` rule."""
    vols = getattr(dataset, "volume_ids", None)
    if vols is not None:
        table = dict(zip(dataset.case_ids, vols, strict=True))
        return lambda c: table.get(c, volume_of_case(c))
    return volume_of_case


def per_volume_rows(rows: Sequence[dict[str, Any]], volume_of: Callable[[str], str]) -> list[dict[str, Any]]:
    """Mean of per-slice rows per (volume, metric, rater) (module docstring); order of first
    appearance. Extra keys of the first row of each group are kept."""
    if not rows:
        return []
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    frame["case_id"] = [volume_of(str(c)) for c in frame["case_id"]]
    keys = ["case_id", "metric", "rater"]
    frame["rater"] = frame["rater"].astype("Int64") if "rater" in frame else pd.array([pd.NA] * len(frame), "Int64")
    grouped = frame.groupby(keys, sort=False, dropna=False)
    out = grouped.first()
    out["value"] = grouped["value"].mean()  # pandas' mean skips NaN; all-NaN gives NaN
    out = out.reset_index()
    result = []
    for rec in out.to_dict("records"):
        r = rec.get("rater")
        rec["rater"] = None if r is None or r is pd.NA or (isinstance(r, float) and math.isnan(r)) else int(r)
        rec["value"] = float(rec["value"])
        result.append(rec)
    return result
