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


def _ndarray_bomb(shape=(10**7, 10**7)) -> bytes:
    """A tiny pickle that calls numpy.ndarray(shape, 'u1'): about 91 TiB if built."""

    class _Bomb:
        def __reduce__(self):
            return (np.ndarray, (shape, np.dtype("u1")))

    return pickle.dumps(_Bomb(), protocol=2)


def test_allocation_bomb_refused_fast(tmp_path):
    import time

    from mrseg_bench.datasets.safe_pickle import PickleBombError

    path = tmp_path / "bomb.pkl"
    path.write_bytes(_ndarray_bomb())
    assert path.stat().st_size < 200
    t0 = time.perf_counter()
    with pytest.raises(PickleBombError, match=r"bomb\.pkl: refused to build an array of shape \(10000000, 10000000\)"):
        safe_load(path)
    assert time.perf_counter() - t0 < 0.5


def test_bytes_bomb_and_cumulative_budget():
    from mrseg_bench.datasets.safe_pickle import PickleBombError

    class _Bytes:
        def __reduce__(self):
            return (bytes, (10**13,))

    with pytest.raises(PickleBombError, match="<bytes>: refused to build bytes"):
        safe_loads(pickle.dumps(_Bytes(), protocol=2))
    # one ndarray() call of 600 bytes fits a 1000-byte budget; two together do not
    one = safe_loads(pickle.dumps(_Reduce((600,)), protocol=2), max_bytes=1000)
    assert one.shape == (600,) and one.dtype == np.uint8
    with pytest.raises(PickleBombError, match="600 bytes"):
        safe_loads(pickle.dumps((_Reduce((600,)), _Reduce((600,))), protocol=2), max_bytes=1000)
    # _reconstruct is charged too (its shape is chosen by the pickle)
    rec = (b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
           b"J\x80\x96\x98\x00J\x80\x96\x98\x00\x86C\x01B\x87R.")
    with pytest.raises(PickleBombError, match=r"shape \(10000000, 10000000\)"):
        safe_loads(rec)
    # arrays rebuilt from bytes stored in the file cost nothing beyond the file
    arr = np.arange(600, dtype=np.uint8)
    assert np.array_equal(safe_loads(pickle.dumps(arr, protocol=5), max_bytes=1000), arr)


class _Reduce:
    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return (np.ndarray, (self.shape, np.dtype("u1")))


def test_allocation_limit_override(tmp_path, monkeypatch):
    from mrseg_bench.datasets.safe_pickle import PickleBombError

    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps(_Reduce((2**27,)), protocol=2))  # 128 MiB > the 64 MiB floor
    with pytest.raises(PickleBombError, match="MRSEG_PICKLE_MAX_BYTES"):
        safe_load(path)
    assert safe_load(path, max_bytes=2**28).shape == (2**27,)
    monkeypatch.setenv("MRSEG_PICKLE_MAX_BYTES", str(2**28))
    assert safe_load(path).nbytes == 2**27
