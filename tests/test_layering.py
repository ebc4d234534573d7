"""The package's module layering (docs/ARCHITECTURE.md, "Module layering"): every import
of one module of the package by another, at the top or inside a function, read with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "winlayer"
NATIVE = "_hcs"  # the extension module: it imports nothing of the package


def _modules(package: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted(package.glob("*.py"))}


def _imports(path: Path, modules: set[str]) -> list[tuple[str, int, bool]]:
    """(module imported, line, inside a function) for each package import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.level == 1:
                names = [child.module] if child.module else [a.name for a in child.names]
                for name in names:
                    head = name.split(".")[0]
                    found.append((head if head in modules else "__init__", child.lineno, nested))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    parts = alias.name.split(".")
                    if parts[0] == "winlayer":
                        head = parts[1] if len(parts) > 1 else "__init__"
                        found.append((head, child.lineno, nested))
            visit(child, nested)

    visit(tree, False)
    return found


def _graph(package: Path) -> dict[str, set[str]]:
    modules = _modules(package)
    names = set(modules) | {NATIVE}
    graph = {name: set() for name in names}
    for name, path in modules.items():
        for imported, _line, _nested in _imports(path, names):
            if imported != name:
                graph[name].add(imported)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def _graph_without_package(package: Path) -> dict[str, set[str]]:
    # The package's __init__ re-exports the public API: it imports the modules, they
    # import it only for the version (cli), which is not a cycle of implementation.
    graph = _graph(package)
    graph.pop("__init__")
    for deps in graph.values():
        deps.discard("__init__")
    return graph


def test_no_import_cycle() -> None:
    assert _cycle(_graph_without_package(PACKAGE)) is None


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import y\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    (tmp_path / "d.py").write_text("from .a import z\n")
    assert _cycle(_graph(tmp_path)) == ["a", "b", "c", "a"]
    (tmp_path / "c.py").write_text("import os\n")
    assert _cycle(_graph(tmp_path)) is None


#: The one import inside a function (docs/ARCHITECTURE.md, "Start-up"): `backend.load`
#: imports the native module, so that resolving the backend's name (`import winlayer`)
#: does not load it.
LAZY_SEAM = ("backend.py", "_native")


def test_no_package_import_inside_a_function() -> None:
    """Package modules are imported at the top: an import inside a function is how a
    cycle hides. (Third-party imports deferred for start-up time are not counted.)"""
    modules = set(_modules(PACKAGE)) | {NATIVE}
    nested = [
        (path.name, imported)
        for path in _modules(PACKAGE).values()
        for imported, _line, inside in _imports(path, modules)
        if inside
    ]
    assert nested == [LAZY_SEAM]


def test_only_native_imports_the_extension_module() -> None:
    """Native code is reached through `_native`, which checks the extension's version
    (type-only imports of its stubs aside)."""
    importers = []
    for name, path in _modules(PACKAGE).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
            for node in ast.walk(block)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in typing_only:
                names = [node.module] if node.module else [a.name for a in node.names]
                if NATIVE in names:
                    importers.append(name)
    assert importers == ["_native"]


def test_lazy_modules_are_imported_for_type_checkers_too() -> None:
    """A `lazy_module("winlayer.X")` of a module is paired with its `TYPE_CHECKING`
    import, so the layering above (and mypy) sees the dependency; a `lazy_module("json")`
    of a standard library module with its `import json` under `TYPE_CHECKING`."""
    unpaired = []
    for name, path in _modules(PACKAGE).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lazy = {
            node.args[0].value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "lazy_module"
            and isinstance(node.args[0], ast.Constant)
        }
        package = {
            f"winlayer.{dep}" for dep, _line, _nested in _imports(path, set(_modules(PACKAGE)))
        }
        typing_only = {
            alias.name
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
            for node in block.body
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        unpaired += [f"{name} -> {module}" for module in sorted(lazy - package - typing_only)]
    assert unpaired == []


def test_common_names_import_nothing_of_the_package() -> None:
    assert _graph(PACKAGE)["_common"] == set()


def test_nothing_imports_the_cli() -> None:
    graph = _graph(PACKAGE)
    assert sorted(name for name, deps in graph.items() if "cli" in deps) == [
        "__main__",
        "_cli_docs",
    ]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("backend", "driver"),
        ("driver", "images"),
        ("driver", "archive"),
        ("images", "cli"),
    ],
)
def test_lower_modules_do_not_import_higher_ones(low: str, high: str) -> None:
    graph = _graph_without_package(PACKAGE)
    seen, todo = set(), [low]
    while todo:  # everything `low` imports, directly or not
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    assert high not in seen


def test_imports_follow_the_documented_rows() -> None:
    """docs/ARCHITECTURE.md draws the layering as rows, top first: a module imports only
    modules of lower rows, and every module is in a row."""
    doc = (PACKAGE.parent.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = doc.split("## Module layering", 1)[1].split("```", 2)[1]
    graph = _graph_without_package(PACKAGE)
    rows: dict[str, int] = {}
    lines = [line for line in block.splitlines() if line.strip() not in ("", "v")]
    for depth, line in enumerate(reversed(lines)):
        for word in line.split():
            if word in graph:
                rows[word] = depth
    assert sorted(set(graph) - set(rows) - {"__main__"}) == []
    upward = [
        f"{module} -> {dep}"
        for module, deps in graph.items()
        if module in rows
        for dep in deps
        if rows[dep] >= rows[module]
    ]
    assert upward == []
