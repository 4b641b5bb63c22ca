"""Names that become paths (issue 12.2): ``paths.check_name``/``safe_join``, the registry and
``report`` refuse traversal names."""

from __future__ import annotations

import pytest

from mrseg_bench.paths import check_name, safe_join
from mrseg_bench.registry import Registry, RegistryError


@pytest.mark.parametrize("bad", ["", "a/b", "a\\b", "..", "../x", "x..y", "/abs", "C:x", "tab\tname",
                                 "nl\nname", "del\x7f"])
def test_check_name_refuses(bad):
    with pytest.raises(ValueError, match="dataset"):
        check_name(bad, "dataset")


@pytest.mark.parametrize("good", ["synthetic", "fusion.majority", "per_rater.separate", "a-b_c 1"])
def test_check_name_accepts(good):
    assert check_name(good, "method") == good


def test_safe_join(tmp_path):
    assert safe_join(tmp_path, "a", "b.csv") == tmp_path / "a" / "b.csv"
    with pytest.raises(ValueError, match="leaves"):
        safe_join(tmp_path / "out", "../victim/x.csv")
    with pytest.raises(ValueError, match="leaves"):
        safe_join(tmp_path, "/etc/passwd")


def test_registry_refuses_path_names():
    reg = Registry("method")
    with pytest.raises(RegistryError, match=r"\.\."):
        reg.add("../evil", object)
    with pytest.raises(RegistryError, match="/"):
        reg.add("a/b", object)
    reg.add("fine.name", object)


def test_report_refuses_traversal_dataset_name(tmp_path):
    from mrseg_bench.reports.demo import write_demo_store
    from mrseg_bench.reports.report import write_report

    store = write_demo_store(tmp_path / "results.sqlite", dataset="../victim/owned")
    out = tmp_path / "a" / "out"
    with pytest.raises(ValueError, match=r"results store .*dataset '\.\./victim/owned'"):
        write_report(store, out, figures=False)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "results.sqlite"
               and not p.name.startswith("results.sqlite")]
    assert written == []
    assert not (tmp_path / "a" / "victim").exists()


def test_cli_report_traversal_exits_2(tmp_path):
    from typer.testing import CliRunner

    from mrseg_bench.cli import app
    from mrseg_bench.reports.demo import write_demo_store

    store = write_demo_store(tmp_path / "results.sqlite", methods=("../../x",), seeds=(0,))
    res = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "method" in res.output and not (tmp_path / "out").exists()


def test_path_like_preset_names_stay_inside_out(tmp_path):
    """A user preset is named by its path (it may hold / and ..): it reaches file names only
    slugged, so the report writes under --out and nowhere else."""
    from mrseg_bench.reports.demo import write_demo_store
    from mrseg_bench.reports.report import write_report

    (tmp_path / "deep" / "er").mkdir(parents=True)
    store = write_demo_store(tmp_path / "deep" / "er" / "results.sqlite", methods=("probunet",), seeds=(0,),
                             preset="../../x.toml")
    out = tmp_path / "deep" / "er" / "out"
    paths = write_report(store, out, figures=False)
    assert paths and all(p.resolve().is_relative_to(out.resolve()) for p in paths)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.resolve().is_relative_to(out.resolve())
               and not p.name.startswith("results.sqlite")]
    assert outside == []
