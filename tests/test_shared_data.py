"""The real-data switch of tests/conftest.py: a missing ../shared path skips a test with a reason,
and MRSEG_BENCH_REQUIRE_SHARED=1 (set by .ci/run, passed through by tox) turns that into a failure."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from conftest import REPO, REQUIRE_SHARED_ENV, require_shared


def test_missing_path_skips_with_a_reason_naming_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(REQUIRE_SHARED_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"nope\.pkl.*is absent"):
        require_shared("data/nope.pkl", root=tmp_path)


@pytest.mark.parametrize("value", ["1", " 1 "])
def test_require_env_turns_skip_into_failure(tmp_path: Path, monkeypatch, value: str) -> None:
    monkeypatch.setenv(REQUIRE_SHARED_ENV, value)
    with pytest.raises(pytest.fail.Exception, match=rf"nope\.pkl.*{REQUIRE_SHARED_ENV}=1 requires it"):
        require_shared("data/nope.pkl", root=tmp_path)


@pytest.mark.parametrize("value", ["0", "", "yes"])
def test_other_env_values_still_skip(tmp_path: Path, monkeypatch, value: str) -> None:
    monkeypatch.setenv(REQUIRE_SHARED_ENV, value)
    with pytest.raises(pytest.skip.Exception):
        require_shared("nope", root=tmp_path)


def test_present_path_is_returned_in_either_mode(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.pkl").write_bytes(b"")
    for value in ("1", "0"):
        monkeypatch.setenv(REQUIRE_SHARED_ENV, value)
        assert require_shared("data/x.pkl", root=tmp_path) == tmp_path / "data" / "x.pkl"
        assert require_shared(root=tmp_path) == tmp_path


def test_ci_requires_shared_data_and_tox_passes_the_switch_through() -> None:
    """.ci/run exports the switch before calling tox, and tox (which isolates the environment)
    passes it to pytest, so CI fails instead of skipping when ../shared is missing."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    export = [i for i, line in enumerate(ci) if line.strip() == f"export {REQUIRE_SHARED_ENV}=1"]
    tox_call = [i for i, line in enumerate(ci) if line.strip().startswith("python3 -m tox")]
    assert export and tox_call and export[0] < tox_call[0]
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini", encoding="utf-8")
    assert REQUIRE_SHARED_ENV in tox["testenv"]["passenv"].replace(",", " ").split()
    for env in tox.sections():  # every testenv:X inherits [testenv]'s passenv unless it sets one
        if env.startswith("testenv:") and "passenv" in tox[env]:
            assert REQUIRE_SHARED_ENV in tox[env]["passenv"], env
