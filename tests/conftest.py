"""Shared test setup: one torch thread (CI has 2 cores shared by parallel jobs), fixed seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
# CPU peak memory is measured in a fresh Python process per profile (seconds per run): off for
# the suite (children inherit it); tests/test_harden_profile.py measures it explicitly
os.environ.setdefault("MRSEG_PROFILE_MEMORY", "off")


@pytest.fixture
def seed() -> int:
    """Seed torch, numpy and random with 1337 and return the seed."""
    random.seed(1337)
    np.random.seed(1337)
    torch.manual_seed(1337)
    return 1337
