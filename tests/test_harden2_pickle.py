"""The pickle allocation cap counts every call and array BUILD, so memo reuse cannot amplify."""

from __future__ import annotations

import collections
import pickle
import struct
import tracemalloc

import numpy as np
import pytest

from mrseg_bench.datasets.safe_pickle import (
    PickleBombError,
    UnsafePickleError,
    default_max_bytes,
    safe_load,
    safe_loads,
)


def _amplifier(n_bytes: int, repeats: int, func: bytes = b"list") -> bytes:
    """A hand-built protocol-2 pickle: one stored bytes of ``n_bytes``, then ``repeats`` calls of
    ``builtins.<func>(that bytes)`` (fetched through the memo) whose results stay on the stack."""
    out = b"\x80\x02B" + struct.pack("<I", n_bytes) + b"\x00" * n_bytes + b"q\x00("
    out += (b"cbuiltins\n" + func + b"\nh\x00\x85R") * repeats
    return out + b"t."


def _peak_of(fn) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        fn()
        err = None
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        err = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return err, peak


@pytest.mark.parametrize("func", [b"list", b"tuple", b"bytearray", b"bytes", b"set", b"frozenset"])
def test_memo_reuse_amplification_refused_before_allocating(func: bytes) -> None:
    data = _amplifier(64 * 1024, 96, func)  # 96 expansions of a 64 KiB bytes: >= 6 MiB if built
    err, peak = _peak_of(lambda: safe_loads(data, source="amp.pkl", max_bytes=1 << 20))
    assert isinstance(err, PickleBombError), err
    assert "amp.pkl" in str(err) and func.decode() in str(err)
    assert peak < 2 * len(data) + (1 << 20)  # the stored bytes plus at most the budget


def test_amplification_at_the_real_cap(tmp_path) -> None:
    path = tmp_path / "amp.pkl"
    path.write_bytes(_amplifier(4 << 20, 4))  # 4 x list(4 MiB bytes) = 128 MiB of pointers
    err, peak = _peak_of(lambda: safe_load(path))
    assert isinstance(err, PickleBombError) and str(path) in str(err)
    # two lists (64 MiB) fit the 64 MiB budget, the third is refused unbuilt; unguarded: 4 x 32 MiB
    assert peak < default_max_bytes(path.stat().st_size) + 3 * path.stat().st_size
    # the same calls within budget load: the cap counts, it does not forbid
    small = _amplifier(1024, 4)
    assert [len(x) for x in safe_loads(small)] == [1024] * 4


def test_byteswapped_array_build_reusing_stored_bytes_is_charged() -> None:
    from numpy._core.multiarray import _reconstruct

    raw = bytes(1 << 16)

    class Swapped:  # numpy copies byte-swapped raw data in __setstate__, once per array
        def __reduce__(self):
            return (_reconstruct, (np.ndarray, (0,), b"b"), (1, (1 << 14,), np.dtype(">i4"), False, raw))

    data = pickle.dumps([Swapped() for _ in range(64)], protocol=3)
    assert len(data) < 2 * len(raw)  # the pickler stored raw once
    err, peak = _peak_of(lambda: safe_loads(data, source="swap.pkl", max_bytes=1 << 20))
    assert isinstance(err, PickleBombError) and "swap.pkl" in str(err) and "__setstate__" in str(err)
    assert peak < 3 << 20
    one = safe_loads(pickle.dumps([Swapped()], protocol=3), max_bytes=1 << 20)
    assert one[0].shape == (1 << 14,) and not one[0].any()


def test_str_of_a_container_and_exotic_codecs_refused() -> None:
    # str(list) is a repr whose size the file does not bound
    rep = b"\x80\x02cbuiltins\nstr\n]\x85R."
    with pytest.raises(UnsafePickleError, match=r"x\.pkl: refused str\(\) of \(list\[0\]\)"):
        safe_loads(rep, source="x.pkl")
    hexed = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x03\x00\x00\x00hex\x86R."
    with pytest.raises(UnsafePickleError, match="only str to latin-1 or utf-8"):
        safe_loads(hexed, source="x.pkl")


def test_numpy_scalar_charged_its_itemsize() -> None:
    big = np.void(bytes(4096))
    assert safe_loads(pickle.dumps(big, protocol=2)).tobytes() == bytes(4096)
    out = safe_loads(pickle.dumps(np.float64(2.5), protocol=2), max_bytes=256)
    assert out == 2.5
    with pytest.raises(PickleBombError, match="numpy scalar"):
        safe_loads(pickle.dumps(big, protocol=3), max_bytes=1024)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legit_builtins_still_load_within_default_budget(protocol: int) -> None:
    data = {"s": {1, 2, 3}, "f": frozenset({4}), "b": bytearray(b"xyz"), "c": 1 + 2j,
            "o": collections.OrderedDict(a=1), "raw": b"\x00" * 100,
            "arr": np.arange(10, dtype=">f8"), "list": [np.zeros(3)] * 3}
    out = safe_loads(pickle.dumps(data, protocol=protocol))
    assert out["s"] == {1, 2, 3} and out["f"] == frozenset({4}) and out["b"] == bytearray(b"xyz")
    assert out["c"] == 1 + 2j and out["o"] == {"a": 1} and out["raw"] == b"\x00" * 100
    assert np.array_equal(out["arr"], np.arange(10))
