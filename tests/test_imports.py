"""The run pipeline's imports go one way: no cycle among its modules, and ``run/`` never
imports ``reports/``. The graph is read from the source (every module ast-parsed, relative
imports resolved, imports inside functions included), so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import mrseg_bench

PACKAGE = Path(mrseg_bench.__file__).resolve().parent
PIPELINE = ("mrseg_bench.run", "mrseg_bench.executors", "mrseg_bench.cli", "mrseg_bench.registry",
            "mrseg_bench.identity", "mrseg_bench.engine", "mrseg_bench.collect", "mrseg_bench.presets", "mrseg_bench.method",
            "mrseg_bench.qualitative", "mrseg_bench.run_folder", "mrseg_bench.claims")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["mrseg_bench", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports (``from x import y``: ``x.y`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_resolves_relative_imports():
    g = graph()
    assert "mrseg_bench.run.spec" in g["mrseg_bench.run.plan"]  # from .spec import RunSpec
    assert "mrseg_bench.identity" in g["mrseg_bench.run.plan"]  # from .. import identity
    assert "mrseg_bench.run.worker" not in g["mrseg_bench.run.spec"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_cycle_among_run_pipeline_modules():
    g = graph()
    sub = {v: {w for w in ws if _in(w, PIPELINE)} for v, ws in g.items() if _in(v, PIPELINE)}
    assert cycles(sub) == []


def test_run_package_never_imports_reports():
    g = graph()
    bad = {v: sorted(w for w in ws if _in(w, ("mrseg_bench.reports",)))
           for v, ws in g.items() if _in(v, ("mrseg_bench.run",))}
    assert {v: ws for v, ws in bad.items() if ws} == {}


def test_every_package_import_resolves():
    """A relative import (also one inside a function) names a module or package that exists."""
    known = modules()
    missing = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
                if base not in known:
                    missing.append(f"{name}: from {'.' * node.level}{node.module or ''}")
    assert missing == []


def test_one_module_is_called_worker():
    assert [m for m in modules() if m.rpartition(".")[2] == "worker"] == ["mrseg_bench.run.worker"]
