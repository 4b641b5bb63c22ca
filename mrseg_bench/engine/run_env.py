"""Facts recorded with a finished run beside its environment (the run row's ``env_json``).

``run_facts(dataset)``: ``rater_names`` and ``rater_identity`` (the dataset's ``DatasetInfo``,
so reports name raters as the dataset does) and ``threads`` (torch intra-op threads now, i.e.
after the run applied ``run.num_threads``; the environment is captured before that). The load
average at the run's start is ``hardware_info``'s ``load_avg_1m``.
"""

from __future__ import annotations

from typing import Any

import torch


def run_facts(dataset) -> dict[str, Any]:
    """Dataset facts and the threads the run used (see module doc); {} keys absent when unknown."""
    info = getattr(dataset, "info", None)
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    if info is not None:
        out["rater_names"] = [str(n) for n in info.rater_names]
        out["rater_identity"] = str(info.rater_identity)
    return out
