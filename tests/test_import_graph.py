"""The package's import graph: no module takes part in a cycle, counting imports inside functions.

The graph is read from the source with ``ast`` (nothing is imported), so a cycle that only closes
when a function runs is found as surely as one at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rsdvla

PACKAGE_DIR = Path(rsdvla.__file__).resolve().parent


def module_names(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package -> its file (``pkg/__init__.py`` is the module ``pkg``)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``module`` imports anywhere in its file (top level or in a function)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name` imports pkg.name when that is a module, else a name of pkg
            # (a submodule's own package is not counted: a package re-exporting its modules is no cycle)
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            candidates = submodules + ([base] if len(submodules) < len(node.names) else [])
        else:
            continue
        for name in candidates:
            # `import a.b.c` names a module; a name that is not a module resolves to its package
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_reader_sees_function_level_imports_and_finds_a_cycle(tmp_path: Path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a\n")
    modules = module_names(pkg)
    graph = {n: imported_modules(n, p, set(modules)) for n, p in modules.items()}
    (pkg / "e.py").write_text("from pkg import a, VERSION\n")
    modules = module_names(pkg)
    graph = {n: imported_modules(n, p, set(modules)) for n, p in modules.items()}
    assert graph["pkg.b"] == {"pkg.c"}
    assert graph["pkg.d"] == {"pkg.a"}
    assert graph["pkg.e"] == {"pkg", "pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (pkg / "c.py").write_text("")
    graph = {n: imported_modules(n, p, set(modules)) for n, p in modules.items()}
    assert cycles(graph) == []


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    graph = import_graph()
    assert "rsdvla.policy" in graph and len(graph) > 50
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    "low, high",
    [("rsdvla.decoding", "rsdvla.evaluation"), ("rsdvla.policy", "rsdvla.evaluation")],
)
def test_lower_floors_do_not_import_evaluation(low: str, high: str):
    graph = import_graph()
    offenders = {
        module: sorted(t for t in targets if t.startswith(high))
        for module, targets in graph.items()
        if (module == low or module.startswith(low + "."))
        and any(t.startswith(high) for t in targets)
    }
    assert not offenders, offenders
