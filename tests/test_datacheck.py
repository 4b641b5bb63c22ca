"""``mrseg-bench data check``: agreement numbers by hand, every problem listed with exit 2, any
dataset, the preview figure; per-volume aggregation of metric rows; a folder that fails its
check writes nothing when used in ``run``; the end-to-end run on a folder with fixed raters."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mrseg_bench.cli import app
from mrseg_bench.datacheck import check_dataset
from mrseg_bench.datasets.volumes import keep_slices, per_volume_rows, volume_of_case


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRSEG_BENCH_CACHE", str(tmp_path / "cache"))


def _folder(root: Path, n: int = 6, size: int = 16, raters=("a", "b", "c"), heights=(4, 5, 6),
            jitter: bool = False) -> Path:
    """Rater k marks rows 4..4+heights[k] x cols 4..10 (hand-computable Dice)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"c{i:02d}.png")
        y = int(rng.integers(2, size - 10)) if jitter else 4
        for r, h in zip(raters, heights, strict=True):
            (root / "masks" / r).mkdir(parents=True, exist_ok=True)
            m = np.zeros((size, size), np.uint8)
            m[y:y + h, 4:10] = 255
            Image.fromarray(m).save(root / "masks" / r / f"c{i:02d}.png")
    return root


def test_agreement_by_hand(tmp_path: Path) -> None:
    res = check_dataset("folder", _folder(tmp_path / "d"))
    assert res.ok, res.problems
    s = res.summary
    assert s["cases"] == 6 and s["groups"] == 6 and s["raters"] == ["a", "b", "c"]
    assert s["annotations_per_rater"] == {"a": 6, "b": 6, "c": 6} and s["missing_annotations"] == 0
    assert s["image_sizes"] == {"16x16": 6}
    assert s["foreground_fraction"]["a"] == pytest.approx(24 / 256)
    ag = s["agreement"]
    # areas 24, 30, 36 nested: Dice(a,b) = 48/54, Dice(a,c) = 48/60, Dice(b,c) = 60/66
    dab, dac, dbc = 48 / 54, 48 / 60, 60 / 66
    assert ag["pairwise_dice"][0][1] == pytest.approx(dab) and ag["pairwise_dice"][2][1] == pytest.approx(dbc)
    assert ag["pairwise_dice"][1][1] == pytest.approx(1.0)
    assert ag["mean_pairwise_dice"] == pytest.approx((dab + dac + dbc) / 3)
    # majority of the others (2 raters: both must mark): a vs b∩c = b; c vs a∩b = a
    assert ag["dice_vs_majority"] == pytest.approx({"a": dab, "b": dab, "c": dac})
    # GED^2({a}, {b,c}) = 2 mean(d(a,b), d(a,c)) - (d(b,c) + d(c,b)) / 4, d = 1 - IoU
    d_ab, d_ac, d_bc = 1 - 24 / 30, 1 - 24 / 36, 1 - 30 / 36
    assert ag["ged_vs_others"]["a"] == pytest.approx(2 * (d_ab + d_ac) / 2 - 2 * d_bc / 4)
    assert ag["rater_disagreement"] == pytest.approx((d_ab + d_ac + d_bc) / 3)
    assert s["identity"]["p_value"] < 0.05  # a always smallest, c always largest


def test_identical_raters_and_missing_annotations(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", heights=(5, 5, 5), jitter=True)
    (root / "masks" / "b" / "c01.png").unlink()
    s = check_dataset("folder", root).summary
    assert s["annotations_per_rater"]["b"] == 5 and s["missing_annotations"] == 1
    assert s["agreement"]["mean_pairwise_dice"] == pytest.approx(1.0)
    assert s["agreement"]["rater_disagreement"] == pytest.approx(0.0)
    assert s["identity"]["p_value"] > 0.05  # nothing tells the raters apart


def test_cli_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    (root / "images" / "c00.png").write_bytes(b"garbage")
    m = np.zeros((16, 16), np.uint8)
    m[2, 2], m[3, 3] = 1, 2
    Image.fromarray(m).save(root / "masks" / "b" / "c03.png")
    res = CliRunner().invoke(app, ["data", "check", "--dataset", "folder", "--data-root", str(root),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert f"{root / 'images' / 'c00.png'}: not a readable image" in res.output
    assert f"{root / 'masks' / 'b' / 'c03.png'}: mask is not binary" in res.output
    assert "2 problem(s)" in res.output and not (tmp_path / "out").exists()
    ok = CliRunner().invoke(app, ["data", "check", "--dataset", "folder", "--data-root", str(root),
                                  "--set", "label=1", "--out", str(tmp_path / "out")])
    assert ok.exit_code == 2 and "1 problem(s)" in ok.output  # the label fixes the mask only


def test_cli_ok_writes_summary_and_preview(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["data", "check", "--dataset", "folder", "--data-root", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "6 cases, 6 groups, 3 raters" in res.output and "mean pairwise Dice 0.866" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agreement"]["mean_pairwise_dice"] == pytest.approx((48 / 54 + 48 / 60 + 60 / 66) / 3)
    with Image.open(out / "preview.png") as im:
        assert im.size[0] > 400 and im.size[1] > 300


def test_check_works_for_other_datasets(tmp_path: Path) -> None:
    res = check_dataset("synthetic", None, {"num_cases": 8, "image_size": 16}, out=tmp_path / "o")
    assert res.ok and res.summary["cases"] == 8 and (tmp_path / "o" / "preview.png").is_file()
    bad = CliRunner().invoke(app, ["data", "check", "--dataset", "qubiq", "--data-root", str(tmp_path / "none")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    unknown = CliRunner().invoke(app, ["data", "check", "--dataset", "nosuch"])
    assert unknown.exit_code == 2 and "folder" in unknown.output


def test_check_synthetic_prints_the_split_and_the_references(tmp_path: Path) -> None:
    from mrseg_bench.datasets.synthetic import synthetic

    res = CliRunner().invoke(app, ["data", "check", "--dataset", "synthetic", "--set", "version=2",
                                   "--set", "num_cases=6", "--set", "image_size=32", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    ds = synthetic(num_cases=6, image_size=32, version=2)
    split = ds.disagreement_split()
    oracle, att = ds.oracle_dice(), ds.attainable_dice()
    assert f"rater disagreement split: style {split['style']:.3f}, ambiguity {split['ambiguity']:.3f}" in res.output
    assert "generator version 2 (contrast 1, size 1, ambiguity 0.75, include_p 0.5, style 1, jitter 0)" in res.output
    assert f"reference oracle Dice: tight {float(oracle[0]):.3f}" in res.output
    assert f"reference attainable Dice: tight {float(att[0]):.3f}" in res.output
    assert f"mean {float(att.mean()):.3f}" in res.output
    gen = json.loads((tmp_path / "o" / "summary.json").read_text())["generated"]
    assert gen["references"]["attainable"] == pytest.approx(att.tolist())
    assert gen["disagreement_split"] == pytest.approx(split) and gen["version"] == 2
    # version 1: the same lines (no ambiguity); datasets without hidden objects print none
    one = check_dataset("synthetic", None, {"num_cases": 4, "image_size": 32})
    assert one.summary["generated"]["disagreement_split"]["ambiguity"] == 0.0
    assert "generated" not in check_dataset("folder", _folder(tmp_path / "f"), {}).summary


def test_keep_slices_and_per_volume_rows() -> None:
    fg = np.array([0, 0, 1, 0, 0, 0, 1, 0], bool)
    assert keep_slices(fg, "all").tolist() == list(range(8))
    assert keep_slices(fg, "foreground").tolist() == [2, 6]
    assert keep_slices(fg, "foreground", 1).tolist() == [1, 2, 3, 5, 6, 7]
    assert keep_slices(np.zeros(3, bool), "foreground", 2).tolist() == []
    assert volume_of_case("pat_1_s12") == "pat_1" and volume_of_case("plain") == "plain"
    rows = [
        {"case_id": "v1_s0", "metric": "ged", "rater": None, "value": 0.2},
        {"case_id": "v1_s1", "metric": "ged", "rater": None, "value": 0.4},
        {"case_id": "v1_s0", "metric": "per_rater_dice", "rater": 0, "value": 1.0},
        {"case_id": "v1_s1", "metric": "per_rater_dice", "rater": 0, "value": float("nan")},
        {"case_id": "v1_s0", "metric": "per_rater_dice", "rater": 1, "value": 0.5},
        {"case_id": "v1_s1", "metric": "per_rater_dice", "rater": 1, "value": 0.7},
        {"case_id": "v2_s3", "metric": "ged", "rater": None, "value": 1.0},
        {"case_id": "v2_s3", "metric": "per_rater_dice", "rater": 1, "value": float("nan")},
    ]
    out = per_volume_rows(rows, volume_of_case)
    got = {(r["case_id"], r["metric"], r["rater"]): r["value"] for r in out}
    assert got[("v1", "ged", None)] == pytest.approx(0.3) and got[("v2", "ged", None)] == 1.0
    assert got[("v1", "per_rater_dice", 0)] == 1.0 and got[("v1", "per_rater_dice", 1)] == pytest.approx(0.6)
    assert math.isnan(got[("v2", "per_rater_dice", 1)]) and len(out) == 5
    assert all(isinstance(r["rater"], int | type(None)) for r in out)


def test_run_with_bad_folder_writes_nothing(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    (root / "masks" / "a" / "c02.png").write_bytes(b"broken")
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", "--methods", "probunet", "--dataset", "folder", "--data-root", str(root),
                                   "--preset", "smoke", "--out", str(out), "--quiet"])
    assert res.exit_code == 2 and "c02.png" in res.output and "data check" in res.output
    assert not out.exists()


@pytest.mark.slow
def test_run_dpersona_probunet_on_folder_reports_per_rater_dice(tmp_path: Path) -> None:
    """The issue's end-to-end check, kept tiny: 12 cases of 32x32, 3 fixed raters, smoke preset."""
    root = _folder(tmp_path / "d", n=12, size=32, heights=(6, 8, 10), jitter=True)
    (root / "dataset.json").write_text(json.dumps({"name": "tiny", "rater_identity": "fixed"}))
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", "--methods", "dpersona,probunet", "--dataset", "folder",
                                   "--data-root", str(root), "--preset", "smoke", "--out", str(out), "--quiet",
                                   "--device", "cpu", "--set", "run.profile=false",
                                   "--set", "run.qualitative_cases=0"])
    assert res.exit_code == 0, res.output
    table = (out / "report" / "folder_smoke_personalization.md").read_text()
    head = table.splitlines()[0]
    assert "| a ↑ | b ↑ | c ↑ |" in head  # the folder's rater names (masks/a, masks/b, masks/c)
    csv = (out / "report" / "folder_smoke_personalization.csv").read_text().splitlines()[0]
    assert all(f"per_rater_dice[{r}].mean" in csv for r in "abc")
    row = next(line for line in table.splitlines() if line.startswith("| dpersona"))
    cells = [c.strip(" *") for c in row.split("|")[2:5]]
    assert all(0.0 <= float(c) <= 1.0 for c in cells)  # a per-rater Dice for each rater


def test_run_aggregate_volume_stores_one_row_per_volume(tmp_path: Path) -> None:
    import nibabel as nib
    import test_engine_toys as toys

    from mrseg_bench.engine.run_config import RunConfig
    from mrseg_bench.executors.grid import run_grid
    from mrseg_bench.run.plan import plan_grid
    from mrseg_bench.store import ResultsStore

    with pytest.raises(ValueError, match="aggregate"):
        RunConfig(aggregate="patient")  # type: ignore[arg-type]
    root = tmp_path / "vols"
    rng = np.random.default_rng(0)
    for v in range(6):
        (root / "images").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rng.random((8, 8, 3)).astype(np.float32), np.eye(4)), str(root / "images" / f"v{v}.nii.gz"))
        for r in ("a", "b"):
            (root / "masks" / r).mkdir(parents=True, exist_ok=True)
            m = np.zeros((8, 8, 3), np.uint8)
            m[2:5, 2:6, :] = 1
            nib.save(nib.Nifti1Image(m, np.eye(4)), str(root / "masks" / r / f"v{v}.nii.gz"))
    preset = tmp_path / "p.toml"
    preset.write_text('description = "t"\n[run]\nbatch_size = 4\nn_samples = 2\nval_n_samples = 2\n'
                      'profile = false\nqualitative_cases = 0\ndevice = "cpu"\ntest_fraction = 0.34\n'
                      '[method."toy*"]\nepochs = 1\nstage2_epochs = 1\n')
    toys.register()
    try:
        plan = plan_grid("toy", "folder", [0], str(preset), ["run.aggregate=volume"], root)
        ds = plan.datasets["folder"]
        assert len(ds) == 18 and ds.case_ids[:3] == ["v0_s0", "v0_s1", "v0_s2"]
        test_idx = plan.splits["folder"].test
        out = run_grid(plan, tmp_path / "runs", tmp_path / "runs" / "r.sqlite")
        assert out[0].status == "done", out[0].error
        with ResultsStore(tmp_path / "runs" / "r.sqlite") as st:
            m = st.metrics([out[0].run_id])
    finally:
        toys.unregister()
    expect = sorted({ds.volume_ids[i] for i in test_idx})
    assert sorted(m["case_id"].unique()) == expect and len(expect) == len(test_idx) // 3
