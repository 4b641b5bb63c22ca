"""Paired significance against the method under study (two-sided Wilcoxon signed-rank).

Protocol: for a compared method M and the reference method D, keep the seeds both have run
(all seeds of each if they share none), average each method's per-case values over those
seeds, pair the two by ``case_id`` (and rater, for per-rater keys: the key carries it), drop
pairs with a NaN, and run ``scipy.stats.wilcoxon(M - D)`` (zero differences dropped,
``zero_method="wilcox"``). Cases are the independent units, so seeds are averaged, not pooled
as extra pairs. All differences zero -> p = 1; fewer than 2 pairs -> p = NaN (not tested).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (see module doc)."""
    diff = np.asarray(diff, dtype=float)
    diff = diff[np.isfinite(diff)]
    if diff.size < 2:
        return float("nan")
    if not np.any(diff != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
        except ValueError:
            return float("nan")


def paired_pvalues(cases: pd.DataFrame, reference: str) -> pd.DataFrame:
    """p-values of every method against ``reference`` for every key.

    ``cases``: per-case rows of one dataset and preset with columns method, seed, case_id,
    key, value. Returns columns method, key, p, n_pairs (no rows for ``reference`` itself or
    when the reference is absent).
    """
    rows: list[dict] = []
    if reference not in set(cases["method"]):
        return pd.DataFrame(columns=["method", "key", "p", "n_pairs"])
    ref = cases[cases["method"] == reference]
    ref_seeds = set(ref["seed"].dropna())
    for method, other in cases[cases["method"] != reference].groupby("method"):
        common = ref_seeds & set(other["seed"].dropna())
        a = other[other["seed"].isin(common)] if common else other
        b = ref[ref["seed"].isin(common)] if common else ref
        ma = a.groupby(["key", "case_id"])["value"].mean()
        mb = b.groupby(["key", "case_id"])["value"].mean()
        paired = pd.concat({"m": ma, "r": mb}, axis=1, join="inner").dropna()
        diff = (paired["m"] - paired["r"]).rename("d").reset_index()
        for key, d in diff.groupby("key"):
            rows.append({"method": method, "key": key, "p": wilcoxon_p(d["d"].to_numpy()),
                         "n_pairs": len(d)})
    return pd.DataFrame(rows, columns=["method", "key", "p", "n_pairs"])
