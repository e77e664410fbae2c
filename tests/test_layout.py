"""The package's layout: folders are the stages of the data's way, from what the user asks to what
is written, and a stage imports only the stages below it; no import cycle; nothing but `__main__`
imports the CLI.

    top       cli, api, results, __main__, __init__
    atlas/    dataset examples, the web atlas
    run/      jobs, resolving, the runner, workers, locks, outputs, sidecars, merging
    optvis/   the engine, objectives, parameterizations, transforms, regularizers
    models/   the registry, sources, weights, layer keys, capture, pre-ReLU twins
    specs/    settings, YAML specs, the target grammar, job requests, limits (no torch)
    base      errors, messages, version, files, owned
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fvcli"
STAGES = ("base", "specs", "models", "optvis", "run", "atlas", "top")  # bottom to top
FOLDERS = ("specs", "models", "optvis", "run", "atlas")  # the stages that are folders
TOP = {"__init__", "__main__", "api", "cli", "commands", "results"}
BASE = {"errors", "messages", "version", "files", "owned"}


def _name(path: Path) -> str:
    """A module's name below fvcli: `cli`, `optvis.engine`, `run.__init__` for a folder's own."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


MODULES = {_name(path) for path in PACKAGE.rglob("*.py")}


def stage(module: str) -> str:
    """A module's stage: its folder, or for the modules directly in fvcli/, top or base."""
    folder, _, rest = module.rpartition(".")
    if folder:
        assert folder in FOLDERS, f"{module}: in a folder that is no stage"
        return folder
    assert module in TOP | BASE, f"fvcli/{module}.py: neither a top nor a base module; add it to TOP or BASE"
    return "top" if module in TOP else "base"


def _resolve(dotted: str) -> str:
    """The module of fvcli a dotted name below fvcli means: the longest prefix that is a module,
    a folder's `__init__` for a name of the folder, fvcli's `__init__` for a name of fvcli."""
    parts = dotted.split(".") if dotted else []
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in MODULES:
            return name
        if f"{name}.__init__" in MODULES:
            return f"{name}.__init__"
    return "__init__"


def _imports(path: Path) -> set[str]:
    """The fvcli modules a module imports anywhere: at the top, in functions, under TYPE_CHECKING."""
    me = _name(path)
    package = me.split(".")[:-1]  # the folder a module sits in, relative to fvcli
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    raise AssertionError(f"{me}: an import above the package")
                base = ["fvcli", *package[: len(package) - (node.level - 1)]]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from fvcli.X import y` imports the module fvcli.X.y when there is one, else a name of fvcli.X
            names = [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "fvcli" or name.startswith("fvcli."):
                found.add(_resolve(name[len("fvcli."):]))
    found.discard(me)
    return found


def _graph() -> dict[str, set[str]]:
    return {_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _upward(graph: dict[str, set[str]], stage_of=stage) -> list[str]:
    """The imports that run upward: from a module to one of a later stage."""
    rank = {name: index for index, name in enumerate(STAGES)}
    return [
        f"{module} ({stage_of(module)}) imports {other} ({stage_of(other)})"
        for module, imports in sorted(graph.items())
        for other in sorted(imports)
        if rank[stage_of(other)] > rank[stage_of(module)]
    ]


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
    assert {"cli", "optvis.engine", "run.runner", "specs.spec", "atlas.site", "models.registry"} <= set(graph)
    assert "cli" in graph["__main__"]
    assert "version" in graph["cli"]  # from fvcli.version import __version__
    assert "run.distributed" in graph["commands"]  # from fvcli.run import distributed
    assert "optvis.regularizers" in graph["optvis.engine"]  # from fvcli.optvis import regularizers, transparency
    assert "run.runner" in graph["run.workers"]  # inside a function
    assert "models.layer_keys" in graph["run.jobs"]  # under TYPE_CHECKING
    assert "specs.expressions" in graph["__init__"]  # inside __getattr__
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_every_module_has_a_stage():
    stages = {module: stage(module) for module in MODULES}
    assert set(stages.values()) == set(STAGES)
    assert stages["optvis.engine"] == "optvis" and stages["errors"] == "base" and stages["cli"] == "top"


def test_each_stage_imports_only_the_stages_below_it():
    upward = _upward(_graph())
    assert not upward, "imports that run upward (order: " + " < ".join(STAGES) + "):\n" + "\n".join(upward)


def test_the_stage_check_sees_an_upward_import():
    graph = {"optvis.engine": {"run.devices", "models.capture"}, "run.devices": {"errors"}}
    assert _upward(graph) == ["optvis.engine (optvis) imports run.devices (run)"]


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_main_imports_the_cli():
    importers = sorted(module for module, imports in _graph().items() if "cli" in imports)
    assert importers == ["__main__"]


def test_specs_and_base_import_no_torch():
    """What the user asks is read and checked before torch loads: specs and base never import it."""
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if stage(_name(path)) not in ("base", "specs"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name == "torch" or name.startswith("torch.") for name in names):
                importers.append(_name(path))
    assert not importers, f"torch imported by {sorted(set(importers))}"


MODULE_LINES = 500  # a module a reader takes in at one sitting
CLASS_LINES = 270  # about 250: a class of one concern
# Larger ones, and why each reads better whole.
LARGER = {
    "specs.grammar._Parser": "a recursive-descent parser: one method a production of the grammar its module's "
    "docstring writes out, in that order; split, a production's callers and callees would part",
}


def test_no_module_or_class_outgrows_a_reading():
    too_large = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MODULE_LINES and _name(path) not in LARGER:
            too_large.append(f"fvcli/{path.relative_to(PACKAGE)}: {lines} lines (at most {MODULE_LINES})")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.ClassDef):
                name, length = f"{_name(path)}.{node.name}", node.end_lineno - node.lineno + 1
                if length > CLASS_LINES and name not in LARGER:
                    too_large.append(f"{name}: {length} lines (at most {CLASS_LINES}); split it by concern, or say in LARGER why it reads better whole")
    assert not too_large, "\n".join(too_large)
