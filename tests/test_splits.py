"""Splits: by patient, seeded, k-fold, predefined, the D-Persona protocol, JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrseg_bench.datasets import Split, make_split, split_from_json, split_to_json
from mrseg_bench.datasets.splits import leaked_groups


class Groups:
    """A stand-in dataset: only group ids (and case ids) are needed to split."""

    def __init__(self, groups: list[str], predefined: Split | None = None) -> None:
        self.group_ids = groups
        self.case_ids = [f"c{i}" for i in range(len(groups))]
        self._pre = predefined

    def __len__(self) -> int:
        return len(self.group_ids)

    def predefined_split(self) -> Split | None:
        return self._pre


def _sides(ds: Groups, sp: Split) -> list[set[str]]:
    return [{ds.group_ids[i] for i in part} for part in (sp.train, sp.val, sp.test)]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=6, max_size=40), seed=st.integers(0, 10**6))
def test_holdout_by_group_property(sizes: list[int], seed: int) -> None:
    groups = [f"p{g}" for g, n in enumerate(sizes) for _ in range(n)]
    perm = np.random.default_rng(seed).permutation(len(groups))  # groups interleaved
    ds = Groups([groups[i] for i in perm])
    sp = make_split(ds, seed=seed)
    tr, va, te = _sides(ds, sp)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert sorted(sp.train + sp.val + sp.test) == list(range(len(groups)))
    g = len(sizes)
    assert len(te) == max(1, round(0.2 * g)) and len(va) == max(1, round(0.15 * g))
    assert not sp.leaks_patients and not leaked_groups(sp, ds.group_ids)
    assert make_split(ds, seed=seed) == sp  # reproducible


def test_seed_changes_split_and_hand_counts() -> None:
    ds = Groups([f"p{i // 2}" for i in range(40)])  # 20 patients x 2 slices
    a, b = make_split(ds, seed=0), make_split(ds, seed=1)
    assert a != b
    assert len(a.test) == 2 * 4 and len(a.val) == 2 * 3 and len(a.train) == 2 * 13
    no_val = make_split(ds, val_fraction=0.0)
    assert no_val.val == () and len(no_val.test) == 8


def test_kfold_partitions_groups() -> None:
    ds = Groups([f"p{i % 11}" for i in range(33)])
    tests = []
    for k in range(4):
        sp = make_split(ds, num_folds=4, fold=k, seed=5)
        tr, va, te = _sides(ds, sp)
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert len(va) == 2 and len(tr) + len(va) + len(te) == 11
        assert sp.protocol == f"default/fold{k}of4"
        tests.append(te)
    assert set().union(*tests) == set(ds.group_ids)
    assert sum(len(t) for t in tests) == 11 and sorted(len(t) for t in tests) == [2, 3, 3, 3]


def test_predefined_used_and_val_carved() -> None:
    pre = Split(train=tuple(range(0, 12)), val=(), test=(12, 13, 14), protocol="predefined")
    ds = Groups([f"p{i // 2}" for i in range(15)], pre)
    sp = make_split(ds, val_fraction=0.34)
    assert sp.test == (12, 13, 14) and sp.protocol == "predefined"
    assert len(sp.val) == 4 and set(sp.val) | set(sp.train) == set(range(12))  # 2 of 6 groups
    assert not (_sides(ds, sp)[0] & _sides(ds, sp)[1]) and not sp.leaks_patients
    assert make_split(ds, use_predefined=False).protocol == "default"
    assert make_split(ds, num_folds=3).protocol.startswith("default/fold")
    # a published split that puts one patient on two sides is flagged, not hidden
    leaky = Groups(ds.group_ids, Split(tuple(range(13)), (), (13, 14)))
    flagged = make_split(leaky, val_fraction=0.0)
    assert flagged.leaks_patients and leaked_groups(flagged, leaky.group_ids) == {"p6"}


def _reference_dpersona(n: int, k: int, fold: int) -> tuple[list[int], list[int]]:
    """The reference code's steps, written independently: global np.random + KFold(k)."""
    indices = list(range(n))
    np.random.seed(1337)
    np.random.shuffle(indices)
    bounds = np.cumsum([0] + [n // k + (1 if j < n % k else 0) for j in range(k)])
    test_pos = range(bounds[fold], bounds[fold + 1])
    train = [indices[i] for i in range(n) if i not in test_pos]
    return sorted(train), sorted(indices[i] for i in test_pos)


def test_dpersona_protocol_reproduces_reference() -> None:
    ds = Groups([f"p{i // 3}" for i in range(10)])
    sizes = []
    for fold in range(4):
        sp = make_split(ds, protocol="dpersona", fold=fold)
        train, test = _reference_dpersona(10, 4, fold)
        assert list(sp.train) == train and list(sp.test) == test
        assert sp.val == sp.test and sp.leaks_patients
        sizes.append(len(sp.test))
    assert sizes == [3, 3, 2, 2]
    assert make_split(ds, protocol="dpersona") == make_split(ds, protocol="dpersona", seed=1337, fold=0)


def test_bad_arguments() -> None:
    ds = Groups([f"p{i}" for i in range(5)])
    with pytest.raises(ValueError, match="protocol"):
        make_split(ds, protocol="random")
    with pytest.raises(ValueError, match="sum below 1"):
        make_split(ds, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="too few"):
        make_split(Groups(["a", "a", "b"]))
    with pytest.raises(ValueError, match="fold"):
        make_split(ds, num_folds=3, fold=3)
    with pytest.raises(ValueError, match="without num_folds"):
        make_split(ds, fold=1)


def test_json_round_trip_and_checks() -> None:
    ds = Groups([f"p{i // 2}" for i in range(20)])
    sp = make_split(ds, seed=3)
    assert split_from_json(split_to_json(sp)) == sp
    text = split_to_json(sp, ds)
    assert split_from_json(text, ds) == sp
    other = Groups(ds.group_ids)
    other.case_ids = list(reversed(ds.case_ids))
    with pytest.raises(ValueError, match="case ids differ"):
        split_from_json(text, other, source="run1/split.json")
    with pytest.raises(ValueError, match="out of range"):
        split_from_json(split_to_json(sp), Groups(["a"] * 5))
    with pytest.raises(ValueError, match="split.json: not valid JSON"):
        split_from_json("{", source="split.json")
    with pytest.raises(ValueError, match="'train' must be a list"):
        split_from_json('{"train": [1, -2], "val": [], "test": []}')
