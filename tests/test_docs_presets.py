"""The preset files under docs/presets/ that the README runs: they load, they plan, and
``study-tuned.toml`` is the ``study`` preset plus the tuned method sections, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrseg_bench.presets import check_preset, load_preset

DOCS_PRESETS = Path(__file__).resolve().parents[1] / "docs" / "presets"
TUNED = ("dpersona", "probunet", "pionono")


@pytest.mark.parametrize("path", sorted(DOCS_PRESETS.glob("*.toml")), ids=lambda p: p.name)
def test_docs_preset_loads_and_checks(path):
    preset = load_preset(str(path))
    check_preset(preset, str(path))
    assert preset.description


def test_study_tuned_is_the_study_preset_with_tuned_method_sections():
    study = load_preset("study")
    tuned = load_preset(str(DOCS_PRESETS / "study-tuned.toml"))
    # everything but the description and the tuned methods' own sections is the study preset's
    assert tuned.run == study.run
    assert tuned.dataset == study.dataset
    assert tuned.tune == study.tune
    assert {k: v for k, v in tuned.method.items() if k not in TUNED} == study.method
    assert set(TUNED) <= set(tuned.method)
    assert not set(TUNED) & set(study.method)
    # each tuned section sets the method's lr (every built-in space searches it) and no epochs
    for method in TUNED:
        section = tuned.method[method]
        assert 1e-5 <= section["lr"] <= 1e-3, (method, section["lr"])
        assert not any(k.endswith("epochs") for k in section), (method, section)
