"""Validation while planning (issue 12.9-12.12, 11.7): bad method configs, a broken list value,
an empty test split and unknown preset sections/keys exit 2 with one line; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.registry import METHODS


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def _run_exits_2(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "out"
    argv = ["run", "--dataset", "synthetic", "--out", str(out), "--set", "dataset.num_cases=12",
            "--set", "dataset.image_size=16", *args]
    if "--preset" not in args:
        argv += ["--preset", "smoke"]
    before = _files(tmp_path)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output
    assert not out.exists() and _files(tmp_path) == before


@pytest.mark.parametrize("args, needle", [
    (["--methods", "unet", "--set", "epochs=0"], "epochs must be an integer >= 1, got 0"),
    (["--methods", "unet", "--set", "epochs=-1"], "epochs must be an integer >= 1, got -1"),
    (["--methods", "dpersona", "--set", "stage1_epochs=0"], "stage 'stage1' has 0 epochs"),
    (["--methods", "probunet", "--set", "decoder_channels=32"], "decoder_channels must be 5 positive integers"),
    (["--methods", "fusion.soft", "--set", "encoder_name=nosuchnet"], "encoder_name='nosuchnet' is not an encoder"),
    (["--methods", "unet", "--set", "lr=nan"], "lr must be a finite number > 0"),
    (["--methods", "dpersona", "--set", "decoder_channels=[32,16"], "decoder_channels='[32,16' is not a valid list"),
    (["--methods", "unet", "--set", "run.test_fraction=0"], "the test split is empty"),
])
def test_bad_method_config_exits_2_before_writing(tmp_path, args, needle):
    _run_exits_2(tmp_path, args, needle)


@pytest.mark.parametrize("section, needle", [
    ('[method.nosuchmethod]\nepochs = 1\n', "[method.nosuchmethod] matches no method"),
    ('[method."*"]\nepochz = 1\n', '[method."*"] unknown key(s) epochz'),
    ('[method."fusion.*"]\nbeta = 1.0\n', '[method."fusion.*"] unknown key(s) beta'),
    ('[method.unet]\nwidth = 3\n', "[method.unet] unknown key(s) width"),
    ('[dataset.nosuchdata]\nx = 1\n', "[dataset.nosuchdata] unknown dataset"),
    ('[dataset.synthetic]\ncolour = 1\n', "[dataset.synthetic] unknown option(s) colour"),
    ('[run]\nbatchsize = 2\n', "[run] unknown key(s) batchsize"),
])
def test_preset_unknown_sections_and_keys(tmp_path, section, needle):
    preset = tmp_path / "mine.toml"
    preset.write_text('description = "x"\n' + section)
    _run_exits_2(tmp_path, ["--methods", "unet", "--preset", str(preset)], needle)


def test_every_builtin_method_validates_by_default_and_with_the_shipped_presets():
    from mrseg_bench.method import create_method
    from mrseg_bench.presets import load_preset, preset_names

    for name in METHODS.names():
        METHODS.get(name)().validate()
        for p in preset_names():
            preset = load_preset(p)
            create_method(name, preset.method_overrides(name, METHODS.get(name)().cfg)).validate()


def test_config_list_error_names_the_key():
    from mrseg_bench.config import apply_overrides
    from mrseg_bench.methods.dpersona.config import DPersonaConfig

    with pytest.raises(ValueError, match=r"method 'dpersona': decoder_channels='\[32,16' is not a valid list"):
        apply_overrides(DPersonaConfig(), {"decoder_channels": "[32,16"}, where="method 'dpersona'")
    with pytest.raises(ValueError, match="decoder_channels=32 is not a list"):
        apply_overrides(DPersonaConfig(), {"decoder_channels": 32}, where="x")
