"""Every use in tests/ of what Windows Python lacks (tests/capabilities.py's GUARDED_NAMES)
sits under its capability guard, so the suite skips, not fails, where it is missing: the
enclosing top-level function or class is marked `@needs(CAP)`, calls `require(CAP)`, tests
`missing(CAP)` or uses `pytest.importorskip(MODULE)`, or the module's `pytestmark` is
`needs(CAP)`. Modules that Windows lacks are never imported at the top of a test module
(collection would fail there). Not checked here, guarded by hand: scripts run by their #!
line ("shebang"), commands such as mount and unshare, and Debian's tools (require_tools)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from . import capabilities
from .capabilities import GUARDED_NAMES, needs, require

TESTS = Path(__file__).resolve().parent
MODULES = {name: cap for name, cap in GUARDED_NAMES.items() if "." not in name}


def _uses(node: ast.AST) -> set[str]:
    """The capabilities a piece of code uses (GUARDED_NAMES)."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            dotted = f"{sub.value.id}.{sub.attr}"
            if dotted in GUARDED_NAMES:
                found.add(GUARDED_NAMES[dotted])
            elif sub.value.id in MODULES:
                found.add(MODULES[sub.value.id])
        elif isinstance(sub, ast.Import | ast.ImportFrom):
            names = [a.name for a in sub.names] if isinstance(sub, ast.Import) else [sub.module]
            found.update(MODULES[n] for n in names if n in MODULES)
    return found


def _guards(node: ast.AST) -> set[str]:
    """The capabilities a piece of code guards: needs/require/missing arguments and the
    modules it imports with pytest.importorskip."""
    found = set()
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Call):
            continue
        func = sub.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        args = [a.value for a in sub.args if isinstance(a, ast.Constant)]
        if name in ("needs", "require", "missing"):
            found.update(a for a in args if isinstance(a, str))
        elif name == "importorskip":
            found.update(MODULES[a] for a in args if a in MODULES)
    return found


def unguarded(source: str, filename: str) -> list[str]:
    """Each use of a guarded name outside its guard: "file:line: capability"."""
    tree = ast.parse(source, filename)
    module_guards: set[str] = set()
    findings = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            module_guards |= _guards(node)
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            findings += [f"{filename}:{node.lineno}: imports {c} at the top" for c in _uses(node)]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            missing = _uses(node) - _guards(node) - module_guards
            findings += [f"{filename}:{node.lineno}: {node.name} uses {c}" for c in missing]
        elif not (isinstance(node, ast.Assign) and module_guards):
            findings += [f"{filename}:{node.lineno}: uses {c}" for c in _uses(node)]
    return findings


def test_every_use_of_what_windows_lacks_is_guarded() -> None:
    findings = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name not in ("capabilities.py", "test_capabilities.py"):
            findings += unguarded(path.read_text(), path.name)
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import fcntl\n", ["t.py:1: imports fcntl at the top"]),
        ("def f():\n    os.mkfifo('x')\n", ["t.py:1: f uses mkfifo"]),
        ("def f():\n    return signal.SIGKILL\n", ["t.py:1: f uses sigkill"]),
        ("def f():\n    fcntl.flock(1, 2)\n", ["t.py:1: f uses fcntl"]),
        ("def f():\n    require('euid')\n    os.geteuid()\n", []),
        ("def f():\n    return not missing('euid') and os.geteuid() == 0\n", []),
        ("@needs('fork')\ndef f():\n    os.fork()\n", []),
        ("@needs('fork')\ndef f():\n    os.mkfifo('x')\n", ["t.py:2: f uses mkfifo"]),
        ("pytestmark = needs('sigkill')\ndef f():\n    signal.SIGKILL\n", []),
        ("def f():\n    pty = pytest.importorskip('pty')\n    pty.openpty()\n", []),
        ("X = os.getuid()\n", ["t.py:1: uses euid"]),
        ("def f():\n    '''os.mkfifo in a string is no use'''\n", []),
    ],
)
def test_the_check_finds_unguarded_uses(source: str, expected: list[str]) -> None:
    assert unguarded(source, "t.py") == expected


def test_a_missing_capability_skips_and_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(capabilities.CAPABILITIES, "mkfifo", (False, "os.mkfifo (FIFOs)"))
    mark = needs("mkfifo", "fork")
    assert mark.args == (True,)
    assert mark.kwargs["reason"] == "needs os.mkfifo (FIFOs)"
    with pytest.raises(pytest.skip.Exception, match=r"needs os\.mkfifo \(FIFOs\)"):
        require("mkfifo")


def test_an_unknown_capability_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown capability"):
        needs("teleport")
