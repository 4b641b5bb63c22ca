"""Shared test setup: one torch thread (CI has 2 cores shared by parallel jobs), fixed seeds, and
access to the real data that lives OUTSIDE the repository.

Real data (``<repo>/../shared``: the QUBIQ pickle, ...) is not shipped. A test that needs it asks
the ``shared_path`` fixture for a path below that folder: when the path is absent the test is
SKIPPED with a reason naming it (a fresh clone passes), unless the environment sets
``MRSEG_BENCH_REQUIRE_SHARED=1`` (``.ci/run`` does): then it FAILS, so CI cannot silently stop
running the real-data tests. ``MRSEG_BENCH_SHARED_DIR`` names another folder instead of
``../shared``. The pytest header says which mode is on and where the folder is.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
# CPU peak memory is measured in a fresh Python process per profile (seconds per run): off for
# the suite (children inherit it); tests/test_harden_profile.py measures it explicitly
os.environ.setdefault("MRSEG_PROFILE_MEMORY", "off")

REPO = Path(__file__).resolve().parents[1]
REQUIRE_SHARED_ENV = "MRSEG_BENCH_REQUIRE_SHARED"
# MRSEG_BENCH_SHARED_DIR points elsewhere (e.g. a git worktree whose parent has no shared/)
SHARED_DIR = Path(os.environ.get("MRSEG_BENCH_SHARED_DIR") or REPO.parent / "shared")


def shared_required() -> bool:
    """True when ``MRSEG_BENCH_REQUIRE_SHARED=1``: missing real data fails instead of skipping."""
    return os.environ.get(REQUIRE_SHARED_ENV, "").strip() == "1"


def require_shared(relpath: str = "", root: Path | None = None) -> Path:
    """``root / relpath`` (``root`` defaults to ``<repo>/../shared``) if it exists; otherwise skip
    the calling test with a reason naming the path, or fail it when ``shared_required()``."""
    base = SHARED_DIR if root is None else Path(root)
    path = base / relpath if relpath else base
    if path.exists():
        return path
    reason = (f"real data {path} is absent (it lives in ../shared beside the repository, "
              "which a fresh clone does not have)")
    if shared_required():
        pytest.fail(f"{reason}; {REQUIRE_SHARED_ENV}=1 requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def shared_path() -> Callable[..., Path]:
    """``shared_path("data/qubiq_brain_growth")``: see ``require_shared``."""
    return require_shared


@pytest.fixture
def shared_dir() -> Path:
    """The ``<repo>/../shared`` folder (skips or fails as ``require_shared``)."""
    return require_shared()


def pytest_report_header(config) -> str:
    state = "present" if SHARED_DIR.is_dir() else "ABSENT"
    mode = "missing data FAILS" if shared_required() else "missing data skips"
    return f"shared data: {SHARED_DIR} ({state}); {REQUIRE_SHARED_ENV}={os.environ.get(REQUIRE_SHARED_ENV, '')!r} ({mode})"


@pytest.fixture
def seed() -> int:
    """Seed torch, numpy and random with 1337 and return the seed."""
    random.seed(1337)
    np.random.seed(1337)
    torch.manual_seed(1337)
    return 1337


@pytest.fixture
def toy_preset(tmp_path, request) -> Iterator[str]:
    """The calling test module's ``PRESET`` (TOML text) written to ``tmp_path/toy.toml``; yields
    its path with the toy methods and dataset of ``test_engine_toys`` registered."""
    import test_engine_toys as toys

    path = tmp_path / "toy.toml"
    path.write_text(request.module.PRESET)
    with toys.registered():
        yield str(path)
