"""The layout shows the layers: the import graph follows them, with no cycles.

The graph is read from the sources (``ast``), every import counted, also
those inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ROOTS = {"omgkit": REPO / "omgkit", "omg_ta": REPO / "ta" / "omg_ta"}


def _module_name(pkg: str, root: Path, f: Path) -> str:
    parts = [pkg, *f.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    mods: dict[str, Path] = {}
    for pkg, root in ROOTS.items():
        for f in root.rglob("*.py"):
            mods[_module_name(pkg, root, f)] = f
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from pkg import submodule`` depends on the submodule; names on the module
                targets = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names
                ]
            for t in targets:
                while t and t not in mods:  # a name inside a module: the module
                    t = t.rpartition(".")[0]
                if t and t != m:
                    graph[m].add(t)
    return graph


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in graph[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


GRAPH = import_graph()


def _in(mod: str, *prefixes: str) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_the_ta_never_imports_the_workbench():
    for m in GRAPH:
        if _in(m, "omg_ta"):
            assert not any(_in(t, "omgkit") for t in GRAPH[m]), m


def test_the_tee_does_not_import_the_guard_or_the_boards():
    for m in GRAPH:
        if _in(m, "omgkit.tee"):
            bad = {t for t in reach(GRAPH, m) if _in(t, "omgkit.guard", "omgkit.board")}
            assert not bad, (m, bad)


def test_the_pipeline_does_not_import_guard_tee_or_boards():
    for m in GRAPH:
        if _in(m, "omgkit.kws"):
            bad = {t for t in GRAPH[m] if _in(t, "omgkit.guard", "omgkit.tee", "omgkit.board")}
            assert not bad, (m, bad)


def test_conversion_and_evaluation_do_not_import_training():
    for m in ("omgkit.kws.convert", "omgkit.kws.evaluate", "omgkit.kws.release"):
        assert "omgkit.kws.train" not in reach(GRAPH, m), m


def test_the_bundle_does_not_import_the_ta_entry_point():
    assert "omg_ta.entry" not in reach(GRAPH, "omgkit.tee.bundle")


def test_no_import_cycles():
    """No module can reach itself (package ``__init__`` re-exports aside: they are lazy)."""
    g = {m: {t for t in ts if not GRAPH.get(t) or not _is_lazy_init(t)} for m, ts in GRAPH.items()}
    cycles = sorted(m for m in g if m in reach(g, m) and not _is_lazy_init(m))
    assert cycles == []


def _is_lazy_init(mod: str) -> bool:
    """Packages whose ``__init__`` only re-exports names on first use (PEP 562)."""
    return mod in {"omgkit", "omgkit.guard", "omgkit.board"}


def test_the_layout_shows_the_layers():
    top = sorted(
        p.name for p in (REPO / "omgkit").iterdir() if p.is_dir() and p.name != "__pycache__"
    )
    assert top == ["board", "guard", "kws", "tee"]
    kws = {p.stem for p in (REPO / "omgkit" / "kws").glob("*.py")}
    assert {"audio", "labels", "dataset", "fetch", "augment", "models", "train", "convert",
            "evaluate", "run", "release"} <= kws  # fmt: skip
