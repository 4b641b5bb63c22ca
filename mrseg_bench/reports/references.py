"""Reference rows of the report (``mrseg_bench.references``): scores the dataset itself gives for
the run's test cases, e.g. the synthetic set's oracle, attainable and shared mask.

Per-rater references appear as extra rows at the bottom of the personalisation table (label
``<name> (reference)``; not ranked, never bold, no ± and no significance) and as dashed lines in
the per-rater figure. Values: per reference and rater, the mean over the group's runs of the
stored value (the runs of a table group share their test cases, so the values are equal); the
``Mean`` column is their mean over raters. The data-level ``ambiguity disagreement`` (stored
without a rater) is a reference row of the diversity table, in its sample-diversity column,
with the whole split in a note (``diversity_reference_frame``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REFERENCE_SUFFIX = " (reference)"
PER_RATER_KEY = "per_rater_dice"
MEAN_KEY = "per_rater_dice_mean"


def reference_label(name: str) -> str:
    return f"{name}{REFERENCE_SUFFIX}"


def reference_frame(references: pd.DataFrame, run_ids: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """(wide frame: index = row labels, columns = ``per_rater_dice[r]`` keys and
    ``per_rater_dice_mean``; notes). Empty frame when the runs stored no reference."""
    refs = references[references["run_id"].isin(run_ids)].dropna(subset=["value", "rater"])
    if refs.empty:
        return pd.DataFrame(), []
    names = list(dict.fromkeys(refs["name"]))
    grouped = refs.groupby(["name", "rater"])["value"]
    per = grouped.mean().unstack("rater").reindex(names)
    per.columns = [f"{PER_RATER_KEY}[{int(r)}]" for r in per.columns]
    per[MEAN_KEY] = per.mean(axis=1)
    per.index = [reference_label(n) for n in names]
    notes = []
    spread = (grouped.max() - grouped.min()).groupby("name").max()
    odd = [n for n in names if spread.get(n, 0.0) > 1e-9]
    if odd:
        notes.append(f"Reference values differ between the runs ({', '.join(odd)}): their test cases differ; "
                     "the mean over runs is shown.")
    known = {"oracle": "oracle = each rater's own style applied to the hidden true object, the ceiling of a "
                       "personalised method",
             "attainable": "attainable = the oracle with its outline one pixel off (inwards and outwards, "
                           "averaged), what a model recovering each mask to a pixel reaches",
             "shared mask": "shared mask = the true object for every rater, what one shared prediction reaches"}
    said = "; ".join(known[n] for n in names if n in known)
    notes.insert(0, f"Reference rows ({', '.join(names)}) are not methods: per-rater Dice the dataset itself gives "
                    f"on the same test cases{f' (synthetic: {said})' if said else ''}. Not ranked, no significance.")
    return per, notes


STYLE, AMBIGUITY = "style disagreement", "ambiguity disagreement"
SAMPLE_DIVERSITY_KEY = "sample_diversity"


def diversity_reference_frame(references: pd.DataFrame, run_ids: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """(frame with the row ``ambiguity (reference)``: the stored ambiguity part of rater
    disagreement in the ``sample_diversity`` column; notes giving the split). Empty frame when
    the runs stored no split (every dataset but the synthetic set's version 2)."""
    refs = references[references["run_id"].isin(run_ids) & references["rater"].isna()]
    vals = refs.dropna(subset=["value"]).groupby("name")["value"].mean()
    if AMBIGUITY not in vals:
        return pd.DataFrame(), []
    frame = pd.DataFrame({SAMPLE_DIVERSITY_KEY: [float(vals[AMBIGUITY])]}, index=[reference_label("ambiguity")])
    style = f"style part {vals[STYLE]:.3f} (mean pairwise 1 - IoU between the raters' masks of the unambiguous " \
            "object), " if STYLE in vals else ""
    note = (f"Rater disagreement split (reference, on the same test cases): {style}ambiguity part "
            f"{vals[AMBIGUITY]:.3f} (expected 1 - IoU between two annotations by the same rater, who includes "
            "the case's ambiguous part at random). The ambiguity row is what the sample diversity of a model "
            "reproducing one rater's random choices shows; a model of all raters' masks at once should "
            "reach Rater disagr. Not ranked.")
    return frame, [note]


def add_reference_rows(table, frame: pd.DataFrame, notes: list[str]):
    """``table`` with the rows of ``frame`` (``reference_frame``) appended as reference rows;
    columns the frame lacks are unavailable (—). Unchanged when ``frame`` is empty."""
    if frame.empty:
        return table
    keys = [c.key for c in table.columns]
    labels = [r for r in frame.index if r not in table.methods]
    if not labels:
        return table
    add = frame.loc[labels].reindex(columns=keys).astype(float)
    add.index.name = table.mean.index.name

    def extend(df: pd.DataFrame, value) -> pd.DataFrame:
        extra = pd.DataFrame(value, index=add.index, columns=keys)
        return pd.concat([df, extra.astype(df.dtypes.to_dict()) if len(df.columns) else extra])

    table.mean = pd.concat([table.mean, add])
    table.std = extend(table.std, np.nan)
    table.n = extend(table.n, 1)
    table.pvalue = extend(table.pvalue, np.nan)
    table.available = pd.concat([table.available, add.notna()])
    table.text = extend(table.text, "")
    table.methods = [*table.methods, *labels]
    table.reference_rows = [*table.reference_rows, *labels]
    table.notes = [*table.notes, *notes]
    return table
