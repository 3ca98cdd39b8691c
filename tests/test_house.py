"""The house plan: every module of the package sits on a floor, and imports only from its own floor or below; the
import graph has no circle (function-local imports included)."""

from __future__ import annotations

import ast

from conftest import REPO

SRC = REPO / "src"

#: floors, lowest first: a module's floor is that of the longest prefix naming it
FLOORS: dict[str, int] = {
    "landslide": 0,  # the ground floor: bands, errors, files, geo, hardware, metrics, losses, schedules, callbacks
    "landslide.synth": 1, "landslide.models": 1, "landslide.plots": 1,
    "landslide.data": 2,
    "landslide.features": 3, "landslide.module": 3,
    "landslide.filter": 4, "landslide.prediction": 4, "landslide.localisation": 4, "landslide.checkpoint": 4,
    "landslide.run_record": 4,
    "landslide.training": 5, "landslide.inference": 5,
    "landslide.report": 6, "landslide.aggregate": 6, "landslide.cli": 6, "landslide.preflight": 6,
    "landslide.audit": 6,
}


def floor(module: str) -> int:
    prefix = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[prefix]


def module_graph() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports (anywhere in its code)."""
    paths = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        paths[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in paths and m != name}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a module from a higher floor (a package's modules may import its ``__init__``)."""
    return sorted(f"{m} (floor {floor(m)}) imports {d} (floor {floor(d)})" for m, deps in graph.items() for d in deps
                  if floor(d) > floor(m) and not m.startswith(d + "."))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles found by a depth-first walk, each as the path that closes it."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_runs_up_a_floor():
    graph = module_graph()
    assert len(graph) > 40
    assert not upward_imports(graph)


def test_no_circle_between_modules():
    assert not circles(module_graph())


def test_a_planted_circle_and_upward_import_are_found():
    graph = {"landslide.bands": {"landslide.cli"}, "landslide.cli": {"landslide.bands"},
             "landslide.training.cv": {"landslide.training.fold"}, "landslide.training.fold": set()}
    assert upward_imports(graph) == ["landslide.bands (floor 0) imports landslide.cli (floor 6)"]
    assert circles(graph) == [["landslide.bands", "landslide.cli", "landslide.bands"]]
