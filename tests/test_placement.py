"""Placement of concurrent runs on GPUs (engine/placement.py), with a faked device count."""

from __future__ import annotations

import pytest
import torch

from mrseg_bench.engine.placement import place_run, place_runs, visible_gpus


def test_round_robin_over_the_visible_gpus():
    assert place_runs(5, "auto", 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert place_runs(3, "cuda", 4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert place_runs(3, "CUDA", 1) == ["cuda:0"] * 3


def test_one_gpu_when_asked():
    assert place_runs(4, "auto", 8, one_gpu=3) == ["cuda:3"] * 4
    with pytest.raises(ValueError, match="GPU 2: only 2 visible"):
        place_run(0, "cuda", 2, one_gpu=2)


def test_other_devices_and_no_gpu_are_left_alone():
    assert place_runs(2, "cpu", 4) == ["cpu", "cpu"]
    assert place_runs(2, "cuda:1", 4) == ["cuda:1", "cuda:1"]  # an explicit GPU is the user's word
    assert place_runs(2, "mps", 4) == ["mps", "mps"]
    assert place_runs(2, "auto", 0) == ["auto", "auto"]  # resolved as before (cpu or mps)
    assert place_runs(0, "auto", 2) == []
    with pytest.raises(ValueError, match="run index -1"):
        place_run(-1, "auto", 2)


def test_visible_gpus_fake_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert visible_gpus() == 3
    assert place_runs(4, "auto", visible_gpus()) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == 0
