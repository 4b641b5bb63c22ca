"""Checks of a grid made while planning, so a run that would fail later is refused before
anything is written.

- ``check_seeds(seeds)``: every seed is an int in ``0 .. SEED_MAX`` (2**63 - 1): torch, numpy's
  generators and the results store (SQLite INTEGER, signed 64-bit) all accept it.
- ``check_train_split(name, split)``: the training split holds at least ``MIN_TRAIN_CASES`` (2)
  cases. Training batches of one case fail in BatchNorm (``engine.data.drops_trailing_one``
  already drops a trailing batch of one; a split of one case has only that batch).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SEED_MAX = 2**63 - 1
MIN_TRAIN_CASES = 2


def check_seeds(seeds: Iterable[Any]) -> list[int]:
    """``seeds`` as ints; ValueError naming the first one outside ``0 .. SEED_MAX``."""
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= SEED_MAX:
            raise ValueError(f"seed {s!r} is out of range; use integers 0..{SEED_MAX} (2**63 - 1)")
        out.append(int(s))
    return out


def check_train_split(name: str, split: Any) -> None:
    """ValueError when the training split of dataset ``name`` is too small to train on."""
    n = len(split.train)
    if n < MIN_TRAIN_CASES:
        raise ValueError(
            f"dataset {name!r}: the training split has {n} case(s); at least {MIN_TRAIN_CASES} are needed "
            "(BatchNorm cannot train on a batch of one): add cases, or move cases to the train split "
            "(cases.csv's split column, run.val_fraction / run.test_fraction)")
