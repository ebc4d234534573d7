"""The .pyi stubs and the native module must describe the same surface."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import winlayer
from winlayer import _hcs

STUB = Path(winlayer.__file__).with_name("_hcs.pyi")


def _stub_names(tree: ast.Module) -> dict[str, set[str]]:
    """Top-level names -> member names (for classes)."""
    names: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            names[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = set()
    return names


def _module_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for name, obj in vars(_hcs).items():
        if name.startswith("__") and name != "__version__":
            continue
        if inspect.isclass(obj):
            names[name] = {
                m
                for m in vars(obj)
                if not m.startswith("_")
                or m in ("__init__", "__enter__", "__exit__", "__iter__", "__next__")
            }
        else:
            names[name] = set()
    return names


def test_stub_file_is_installed() -> None:
    assert STUB.is_file()
    assert STUB.with_name("py.typed").is_file()


def test_stubs_match_native_module() -> None:
    stub = _stub_names(ast.parse(STUB.read_text()))
    real = _module_names()
    assert sorted(stub) == sorted(real), "top-level names differ between _hcs.pyi and _hcs"
    for name, members in real.items():
        assert stub[name] == members, f"members of {name} differ between _hcs.pyi and _hcs"
