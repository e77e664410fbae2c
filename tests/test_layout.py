"""The package's layout: modules import downwards only, and nothing but `__main__` imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fvcli"
MODULES = {path.stem for path in PACKAGE.glob("*.py")}


def _imports(path: Path) -> set[str]:
    """The fvcli modules a module imports anywhere: at the top, in functions, under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                raise AssertionError(f"{path.name}: an import above the package")
            module = "fvcli" + (f".{node.module}" if node.module else "") if node.level else node.module or ""
            # `from fvcli import x` imports the module fvcli.x when there is one, else a name of fvcli
            names = [f"{module}.{alias.name}" for alias in node.names] if module == "fvcli" else [module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "fvcli":
                found.add(parts[1] if len(parts) > 1 and parts[1] in MODULES else "__init__")
    found.discard(path.stem)
    return found


def _graph() -> dict[str, set[str]]:
    return {path.stem: _imports(path) for path in sorted(PACKAGE.glob("*.py"))}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph.get(module, ())):
            if state.get(other) == 1:
                return path[path.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_import_graph_finds_imports_of_every_kind():
    graph = _graph()
    assert "cli" in graph["__main__"]
    assert "version" in graph["cli"]  # from fvcli.version import __version__
    assert "distributed" in graph["api"]  # from fvcli import distributed
    assert "runner" in graph["workers"]  # inside a function
    assert "layer_keys" in graph["jobs"]  # under TYPE_CHECKING
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_main_imports_the_cli():
    importers = sorted(module for module, imports in _graph().items() if "cli" in imports)
    assert importers == ["__main__"]
