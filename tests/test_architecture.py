"""The package's import graph: no cycles, and the edges (HTTP API, pages, CLI, Celery tasks) depend on
the core, never on each other. Read from the source, so a function-level import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "cvunet_matting"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
# Module -> the edge it belongs to. `web` (the app factory) is the one place that knows every web edge.
EDGES = {
    f"{PACKAGE}.webapp.api.views": "json-api",
    f"{PACKAGE}.webapp.pages.views": "pages",
    f"{PACKAGE}.webapp.pages.json_routes": "pages",
    f"{PACKAGE}.webapp.pages.signin": "pages",
    f"{PACKAGE}.webapp.health": "health",
    f"{PACKAGE}.webapp.metrics": "web-metrics",
    f"{PACKAGE}.commands.cli": "cli",
    f"{PACKAGE}.commands.operator": "cli",
    f"{PACKAGE}.tasks": "celery-tasks",
}
FACTORY = f"{PACKAGE}.web"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules `name` imports anywhere in its body (`from . import x` counts x if it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(PACKAGE)}
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, path.name == "__init__.py", node)
            if not target.startswith(PACKAGE):
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found |= submodules or {target}
    return (found & known) - {name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read_from_the_real_package():
    edges = graph()
    assert f"{PACKAGE}.tasks" in edges and f"{PACKAGE}.db" in edges
    assert f"{PACKAGE}.db" in edges[f"{PACKAGE}.pipeline.submission"]  # a real import is seen


def test_the_package_has_no_import_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


@pytest.mark.parametrize("edge", sorted(EDGES))
def test_an_edge_never_imports_another_edge(edge):
    crossing = {m for m in graph()[edge] if m in EDGES and EDGES[m] != EDGES[edge]}
    assert not crossing, f"{edge} imports {sorted(crossing)}"


def test_only_the_factory_imports_the_web_edges():
    web_kinds = {"json-api", "pages", "health", "web-metrics"}
    web_edges = {m for m, kind in EDGES.items() if kind in web_kinds}
    importers = {name for name, deps in graph().items() if deps & web_edges and EDGES.get(name) not in web_kinds}
    assert importers <= {FACTORY}, sorted(importers)


def test_the_web_side_never_imports_the_model_runtime():
    """The web process enqueues by task name (`dispatch`): it must not load onnxruntime through tasks."""
    edges = graph()
    seen, todo = set(), [FACTORY]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    assert not seen & {f"{PACKAGE}.tasks", f"{PACKAGE}.model.session", f"{PACKAGE}.image.matting"}


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
