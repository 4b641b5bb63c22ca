"""Seeded train/val/test splits by patient (``group_id``), k-fold, and the D-Persona protocol.

- ``protocol="default"``: groups (patients) are shuffled with ``numpy.random.default_rng(seed)``
  (seed 0 when None); no group lands on two sides. Hold-out: ``round(test_fraction * G)`` test
  groups, ``round(val_fraction * G)`` val groups, the rest train (each at least one group when its
  fraction is > 0). k-fold (``num_folds``): the shuffled groups are cut into k near-equal chunks
  (``numpy.array_split``), test = chunk ``fold``, val = the first ``round(val_fraction * G)``
  groups of the rest. When the dataset has a ``predefined_split()`` (and ``use_predefined`` and no
  k-fold) that split is used instead (``protocol="predefined"``); an empty val is carved from its
  train groups (``round(val_fraction * train groups)``, seeded).
- ``protocol="dpersona"``: the reference code's LIDC folds. Slices, not patients, are shuffled
  (``np.random.seed(1337); np.random.shuffle(list(range(N)))`` when seed is None), cut by
  ``KFold(4, shuffle=False)`` (the first ``N % k`` folds get one extra item), val = test (the
  reference picks its checkpoint on the test fold), ``leaks_patients=True``.

Indices in a Split are sorted. ``split_to_json`` / ``split_from_json`` save and restore a split
with its case ids, so a run can be checked against the dataset it is reloaded with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import MultiRaterDataset, Split

PROTOCOLS = ("default", "dpersona")


def _group_codes(group_ids: Sequence[str]) -> tuple[np.ndarray, int]:
    """Integer code per sample, groups numbered in order of first appearance."""
    _, first, inverse = np.unique(np.asarray(group_ids, dtype=object).astype(str),
                                  return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()], len(first)


def leaked_groups(split: Split, group_ids: Sequence[str]) -> set[str]:
    """Groups that appear in more than one of train / val / test (val == test is not a leak
    between val and test when the protocol reuses test as val)."""
    g = np.asarray(group_ids, dtype=object)
    sides = [set(g[list(split.train)]), set(g[list(split.val)]), set(g[list(split.test)])]
    out = (sides[0] & sides[1]) | (sides[0] & sides[2])
    if set(split.val) != set(split.test):
        out |= sides[1] & sides[2]
    return {str(x) for x in out}


def _from_assignment(side_of_group: np.ndarray, codes: np.ndarray, protocol: str) -> Split:
    side = side_of_group[codes]  # 0 train, 1 val, 2 test
    return Split(*(tuple(np.flatnonzero(side == k).tolist()) for k in range(3)), protocol=protocol)


def _count(fraction: float, total: int) -> int:
    return 0 if fraction <= 0 else max(1, int(round(fraction * total)))


def make_split(dataset: MultiRaterDataset, protocol: str = "default", seed: int | None = None,
               val_fraction: float = 0.15, test_fraction: float = 0.2,
               num_folds: int | None = None, fold: int | None = None,
               use_predefined: bool = True) -> Split:
    """Split ``dataset`` (anything with ``group_ids`` and ``predefined_split()``); see the module
    docstring for each protocol. ValueError on bad fractions, folds or too few groups."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"make_split: protocol={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"make_split: val_fraction={val_fraction} and test_fraction={test_fraction} "
                         "must be in [0,1) with a sum below 1")
    if fold is not None and num_folds is None and protocol != "dpersona":
        raise ValueError("make_split: fold given without num_folds")
    group_ids = list(dataset.group_ids)
    n = len(group_ids)
    if n == 0:
        raise ValueError("make_split: the dataset is empty")
    if protocol == "dpersona":
        return _dpersona(n, 1337 if seed is None else seed, num_folds or 4, fold or 0)
    seed = 0 if seed is None else seed
    rng = np.random.default_rng(seed)
    codes, n_groups = _group_codes(group_ids)
    if num_folds is not None:
        fold = 0 if fold is None else fold
        if num_folds < 2 or not 0 <= fold < num_folds:
            raise ValueError(f"make_split: need num_folds >= 2 and 0 <= fold < num_folds, got "
                             f"num_folds={num_folds}, fold={fold}")
        if n_groups < num_folds + 1:
            raise ValueError(f"make_split: {n_groups} groups cannot make {num_folds} folds plus a val set")
        order = rng.permutation(n_groups)
        chunks = np.array_split(order, num_folds)
        rest = np.concatenate([c for k, c in enumerate(chunks) if k != fold])
        n_val = min(_count(val_fraction, n_groups), len(rest) - 1)
        side = np.zeros(n_groups, dtype=np.int64)
        side[chunks[fold]] = 2
        side[rest[:n_val]] = 1
        return _from_assignment(side, codes, f"default/fold{fold}of{num_folds}")
    pre = dataset.predefined_split() if use_predefined else None
    if pre is not None:
        return _complete_predefined(pre, codes, n_groups, val_fraction, rng, group_ids)
    n_test, n_val = _count(test_fraction, n_groups), _count(val_fraction, n_groups)
    if n_test + n_val >= n_groups:
        raise ValueError(f"make_split: {n_groups} groups are too few for {n_val} val + {n_test} test "
                         "groups and a non-empty train set")
    order = rng.permutation(n_groups)
    side = np.zeros(n_groups, dtype=np.int64)
    side[order[:n_test]] = 2
    side[order[n_test:n_test + n_val]] = 1
    return _from_assignment(side, codes, "default")


def _complete_predefined(pre: Split, codes: np.ndarray, n_groups: int, val_fraction: float,
                         rng: np.random.Generator, group_ids: Sequence[str]) -> Split:
    train, val, test = list(pre.train), list(pre.val), list(pre.test)
    if not val and val_fraction > 0 and train:
        train_groups = np.unique(codes[train])
        n_val = min(_count(val_fraction, len(train_groups)), len(train_groups) - 1)
        val_groups = rng.permutation(train_groups)[:n_val]
        is_val = np.isin(codes[train], val_groups)
        val = np.asarray(train)[is_val].tolist()
        train = np.asarray(train)[~is_val].tolist()
    split = Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), protocol="predefined")
    leaks = bool(leaked_groups(split, group_ids))
    return Split(split.train, split.val, split.test, "predefined", leaks or pre.leaks_patients)


def _dpersona(n: int, seed: int, num_folds: int, fold: int) -> Split:
    """Reproduce the reference: np.random.seed(seed); shuffle(list(range(n))); KFold(k) folds."""
    if num_folds < 2 or not 0 <= fold < num_folds or n < num_folds:
        raise ValueError(f"make_split(dpersona): need 2 <= num_folds <= N={n} and 0 <= fold < num_folds, "
                         f"got num_folds={num_folds}, fold={fold}")
    indices = list(range(n))
    np.random.RandomState(seed).shuffle(indices)  # same stream as np.random.seed + np.random.shuffle
    sizes = np.full(num_folds, n // num_folds)
    sizes[: n % num_folds] += 1
    start = int(sizes[:fold].sum())
    stop = start + int(sizes[fold])
    test = sorted(indices[start:stop])
    train = sorted(indices[:start] + indices[stop:])
    return Split(tuple(train), tuple(test), tuple(test), protocol=f"dpersona/fold{fold}of{num_folds}",
                 leaks_patients=True)


def split_to_json(split: Split, dataset: MultiRaterDataset | None = None) -> str:
    """JSON text of ``split``; with ``dataset``, each side's case ids are stored too."""
    out: dict[str, Any] = {"protocol": split.protocol, "leaks_patients": split.leaks_patients,
                           "train": list(split.train), "val": list(split.val), "test": list(split.test)}
    if dataset is not None:
        ids = dataset.case_ids
        out["case_ids"] = {side: [ids[i] for i in getattr(split, side)] for side in ("train", "val", "test")}
    return json.dumps(out)


def split_from_json(text: str, dataset: MultiRaterDataset | None = None, source: str = "split") -> Split:
    """Inverse of ``split_to_json``. With ``dataset``: indices must be in range and, when case ids
    were saved, name the same cases; ValueError naming ``source`` otherwise."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object with train/val/test")
    sides = {}
    for side in ("train", "val", "test"):
        vals = data.get(side)
        if not isinstance(vals, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in vals):
            raise ValueError(f"{source}: {side!r} must be a list of non-negative integers")
        sides[side] = tuple(vals)
    split = Split(sides["train"], sides["val"], sides["test"], str(data.get("protocol", "default")),
                  bool(data.get("leaks_patients", False)))
    if dataset is not None:
        n = len(dataset)
        for side in ("train", "val", "test"):
            idx = getattr(split, side)
            if idx and max(idx) >= n:
                raise ValueError(f"{source}: {side} index {max(idx)} out of range for {n} cases")
        saved = data.get("case_ids")
        if saved is not None:
            ids = dataset.case_ids
            for side in ("train", "val", "test"):
                now = [ids[i] for i in getattr(split, side)]
                if list(saved.get(side, [])) != now:
                    raise ValueError(f"{source}: {side} case ids differ from the dataset's "
                                     "(the data changed since the split was saved)")
    return split
