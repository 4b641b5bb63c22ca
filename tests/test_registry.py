"""The Registry type (decorator, duplicates, errors, wildcards) and entry-point plugins."""

from __future__ import annotations

import sys
import textwrap

import pytest

from mrseg_bench import registry
from mrseg_bench.registry import METRICS, PLUGIN_GROUP, Registry, RegistryError, load_plugins


@pytest.fixture
def reg() -> Registry:
    r: Registry = Registry("widget")
    for name in ("fusion.majority", "fusion.staple", "fusion.soft", "probunet", "dpersona"):
        r.add(name, name.upper())
    return r


def test_decorator_registers_and_returns_object():
    r: Registry = Registry("widget")

    @r.register("alpha")
    def alpha():
        return 1

    assert alpha() == 1  # the decorator hands the object back unchanged
    assert r.get("alpha") is alpha
    assert "alpha" in r and "beta" not in r
    assert len(r) == 1 and r.items() == [("alpha", alpha)]
    r.remove("alpha")
    assert "alpha" not in r


def test_duplicate_and_bad_names_raise(reg):
    with pytest.raises(RegistryError, match="duplicate widget name 'probunet'"):
        reg.add("probunet", object())
    with pytest.raises(RegistryError, match="duplicate"):
        reg.register("dpersona")(object())
    with pytest.raises(RegistryError, match="non-empty string"):
        reg.add("", object())
    assert reg.get("probunet") == "PROBUNET"  # the first registration is kept


def test_unknown_name_lists_known_names(reg):
    with pytest.raises(RegistryError) as err:
        reg.get("probnet")
    msg = str(err.value)
    assert msg.startswith("unknown widget 'probnet' (did you mean 'probunet'?); known: ")
    assert "dpersona, fusion.majority, fusion.soft, fusion.staple, probunet" in msg
    assert isinstance(err.value, KeyError)


def test_resolve_wildcards_and_comma_lists(reg):
    assert reg.names("fusion.*") == ["fusion.majority", "fusion.soft", "fusion.staple"]
    assert reg.resolve("dpersona,fusion.s*") == ["dpersona", "fusion.soft", "fusion.staple"]
    assert reg.resolve(" probunet , fusion.*, fusion.soft") == [
        "probunet", "fusion.majority", "fusion.soft", "fusion.staple"]  # order kept, no repeats
    assert reg.resolve(["dpersona", "prob?net"]) == ["dpersona", "probunet"]
    assert reg.resolve("fusion.[ms]*") == ["fusion.majority", "fusion.soft", "fusion.staple"]
    with pytest.raises(RegistryError, match="unknown widget 'nope'"):
        reg.resolve("dpersona,nope")
    with pytest.raises(RegistryError, match="pattern 'x.*' matches nothing; known: dpersona"):
        reg.resolve("x.*")
    with pytest.raises(RegistryError, match="no widget given"):
        reg.resolve(" , ")


def _write_plugin(root, monkeypatch):
    dist = root / "fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [{PLUGIN_GROUP}]
        fake_metric = fake_plugin_metric
        fake_broken = fake_plugin_broken
        """))
    (root / "fake_plugin_metric.py").write_text(textwrap.dedent("""\
        from mrseg_bench.metrics import MetricSpec
        from mrseg_bench.registry import register_metric
        from mrseg_bench.types import Capability

        register_metric("fake_plugin.area")(MetricSpec(
            "fake_plugin.area", lambda ctx: ctx.s.sum((1, 2)), Capability.DIVERSE, True, False,
            "foreground pixels over all samples"))
        """))
    (root / "fake_plugin_broken.py").write_text("raise ImportError('fake plugin is broken')\n")
    monkeypatch.syspath_prepend(str(root))


def test_entry_point_plugins(tmp_path, monkeypatch):
    _write_plugin(tmp_path, monkeypatch)
    try:
        with pytest.warns(RuntimeWarning, match="plugin 'fake_broken'.*fake plugin is broken"):
            errors = load_plugins(force=True)
        assert "fake_plugin.area" in METRICS
        assert METRICS.resolve("fake_plugin.*") == ["fake_plugin.area"]
        assert errors["fake_broken"] == "ImportError: fake plugin is broken"
        assert "fake_metric" not in errors
        assert registry.plugin_errors is errors
    finally:
        METRICS.remove("fake_plugin.area")
        registry.plugin_errors.pop("fake_broken", None)
        for mod in ("fake_plugin_metric", "fake_plugin_broken"):
            sys.modules.pop(mod, None)
    assert "fake_plugin.area" not in METRICS
