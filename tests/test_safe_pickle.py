"""The restricted unpickler loads numpy/builtin data and refuses everything else unexecuted."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from mrseg_bench.datasets.safe_pickle import UnsafePickleError, safe_load, safe_loads

QUBIQ_PKL = "data/qubiq_brain_growth/brain_growth_alpha.pkl"  # below ../shared


class _WritesFile:
    """A pickle payload whose __reduce__ would run a shell command that creates a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_roundtrip_numpy_and_builtins(protocol: int) -> None:
    data = {
        "case": {
            "image": np.arange(12, dtype=np.float32).reshape(3, 4),
            "masks": [np.eye(3, dtype=np.uint8), np.zeros((3, 3), np.uint8)],
            "series_uid": "LIDC-IDRI-0001_a",
            "raw": b"\x00\x01",
            "scalar": np.float64(2.5),
            "misc": (1, 2.0, None, True, {1, 2}, frozenset({3}), bytearray(b"x"), 1 + 2j),
        },
        "ordered": collections.OrderedDict(a=1),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    }
    out = safe_loads(pickle.dumps(data, protocol=protocol))
    c = out["case"]
    assert c["image"].dtype == np.float32 and np.array_equal(c["image"], data["case"]["image"])
    assert all(np.array_equal(a, b) for a, b in zip(c["masks"], data["case"]["masks"], strict=True))
    assert c["series_uid"] == "LIDC-IDRI-0001_a" and c["raw"] == b"\x00\x01"
    assert c["scalar"] == 2.5 and c["misc"] == data["case"]["misc"]
    assert out["ordered"] == {"a": 1}
    assert np.array_equal(out["fortran"], data["fortran"])


def test_real_qubiq_pickle_loads(shared_path) -> None:
    data = safe_load(shared_path(QUBIQ_PKL))
    assert len(data) == 39
    first = data["case01"]
    assert first["image"].shape == (128, 128) and first["image"].dtype == np.uint8
    assert len(first["masks"]) == 7


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"case": _WritesFile(target)}))
    with pytest.raises(UnsafePickleError) as err:
        safe_load(bad)
    msg = str(err.value)
    assert str(bad) in msg and "system" in msg
    assert not target.exists()
    # the same payload through plain pickle WOULD run it: the test can fail
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("payload", [_Evals(), getattr])
def test_other_globals_refused(payload: object) -> None:
    with pytest.raises(UnsafePickleError, match="refused to load global builtins"):
        safe_loads(pickle.dumps(payload), source="x.pkl")


def test_numpy_functions_outside_allow_list_refused() -> None:
    with pytest.raises(UnsafePickleError, match="numpy.load"):
        safe_loads(pickle.dumps(np.load))


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        safe_load(tmp_path / "nope.pkl")
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps({"a": np.zeros(100)})[:50])
    with pytest.raises(ValueError, match="trunc.pkl"):
        safe_load(trunc)
    text = tmp_path / "text.pkl"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.pkl"):
        safe_load(text)
