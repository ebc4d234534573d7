from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import winlayer
from winlayer import _hcs
from winlayer.errors import BackendUnavailable

from .conftest import run_python

# `winlayer.backend` is the name in use; the module is reached through sys.modules.
backend = importlib.import_module("winlayer.backend")


def test_backend_attribute_is_the_name_in_use() -> None:
    assert winlayer.backend == backend.selected_name()


def test_version_matches_native_module() -> None:
    assert winlayer.__version__ == _hcs.__version__
    assert winlayer.__version__.count(".") >= 2


def test_default_backend_is_platform_default() -> None:
    expected = "hcs" if sys.platform == "win32" else "portable"
    result = run_python("import winlayer; print(winlayer.backend)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_env_var_overrides_backend() -> None:
    result = run_python(
        "import winlayer; print(winlayer.backend)", env={"WINLAYER_BACKEND": "portable"}
    )
    assert result.stdout.strip() == "portable", result.stderr


def test_unknown_backend_name_is_refused_where_it_is_used() -> None:
    result = run_python("import winlayer", env={"WINLAYER_BACKEND": "overlay"})
    assert result.returncode == 0, result.stderr  # the CLI must be able to report it
    for use in ("winlayer.backend", "winlayer.Driver()"):
        result = run_python(f"import winlayer; {use}", env={"WINLAYER_BACKEND": "overlay"})
        assert result.returncode != 0
        assert "unknown winlayer backend 'overlay'" in result.stderr
        assert "BackendUnavailable" in result.stderr


HEAVY = ("winlayer._hcs", "sqlite3", "urllib3", "rich", "zstandard")
SHOW_HEAVY = f"import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


@pytest.mark.parametrize(
    "code", ["import winlayer", "import winlayer.cli", "import winlayer.__main__"]
)
def test_import_and_the_cli_parser_load_no_heavy_module(code: str) -> None:
    """Start-up (docs/ARCHITECTURE.md): the native module, SQLite, the HTTP client, rich
    and zstandard wait for a command that needs them. (`winlayer.__main__` with no
    arguments builds the parser and prints usage.)"""
    if code.endswith("__main__"):
        code = "import sys; sys.argv = ['winlayer', '--version']\ntry:\n    " + code
        code += "\nexcept SystemExit:\n    pass"
    result = run_python(f"{code}\n{SHOW_HEAVY}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


#: Whether module `m` was imported (a `lazy_module` stand-in is not in sys.modules).
LOADED = "m in sys.modules"

#: What the commands that only start up (--version, --help) must not import: standard
#: library modules some commands need (docs/ARCHITECTURE.md, "Start-up"), beyond HEAVY.
DEFERRED = (
    "json", "dataclasses", "inspect", "pathlib", "urllib.parse", "logging", "datetime",
    "secrets", "tempfile", "difflib", "sqlite3", "tarfile", "platformdirs", "winlayer.driver",
    "winlayer.layertar", "winlayer.images",
)  # fmt: skip


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_no_deferred_module(args: list[str]) -> None:
    code = (
        f"import sys; sys.argv = ['winlayer', *{args!r}]\n"
        "try:\n    import winlayer.__main__\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY + DEFERRED!r} if {LOADED}))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_ls_on_an_empty_store_imports_no_network_or_terminal_module(tmp_path: Path) -> None:
    """`ls` opens the store (the driver, SQLite) but nothing of pulls, pushes, terminals,
    zstd, docs or suggestions."""
    code = (
        "import sys; sys.argv = ['winlayer', 'ls']\n"
        "try:\n    import winlayer.__main__\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('urllib3', 'rich', 'zstandard', 'difflib', 'winlayer.registry',"
        f" 'winlayer.images', 'winlayer.layertar', 'winlayer.pack') if {LOADED}))"
    )
    result = run_python(code, env={"WINLAYER_HOME": str(tmp_path / "store")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_public_names_resolve_lazily_to_their_modules() -> None:
    result = run_python(
        "import sys, winlayer\n"
        "assert 'winlayer.driver' not in sys.modules\n"
        "assert 'Driver' in dir(winlayer) and 'pull' in dir(winlayer)\n"
        "from winlayer import Driver, load, save, pull, push\n"
        "import winlayer.driver, winlayer.images, winlayer.registry\n"
        "assert Driver is winlayer.driver.Driver\n"
        "assert (load, save) == (winlayer.images.load, winlayer.images.save)\n"
        "assert (pull, push) == (winlayer.registry.pull, winlayer.registry.push)\n"
        "missing = [n for n in winlayer.__all__ if not hasattr(winlayer, n)]\n"
        "assert missing == [], missing\n"
        "print(winlayer.backend)"
    )
    assert result.returncode == 0, result.stderr
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        winlayer.nosuch  # noqa: B018


def test_lazy_table_matches_the_type_checking_imports() -> None:
    """The names type checkers see (`if TYPE_CHECKING:` in __init__) are the lazy ones."""
    tree = ast.parse(Path(winlayer.__file__).read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If))
    typed = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == winlayer._LAZY


def test_selected_name_explicit_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINLAYER_BACKEND", "hcs")
    assert backend.selected_name("portable") == "portable"
    assert backend.selected_name(" HCS ") == "hcs"
    with pytest.raises(BackendUnavailable, match="from backend argument"):
        backend.selected_name("nope")


def test_hcs_backend_unavailable_off_windows_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")  # so that it runs on Windows too
    with pytest.raises(BackendUnavailable, match="WINLAYER_BACKEND=portable") as info:
        backend.check_available("hcs", from_env=True)
    assert isinstance(info.value, ImportError)
    assert "Containers feature" in str(info.value)
    with pytest.raises(BackendUnavailable, match=r"\(--backend portable\)") as asked:
        backend.check_available("hcs")  # asked for by name: the variable is not the cause
    assert "WINLAYER_BACKEND" not in str(asked.value)


def test_portable_is_available_everywhere() -> None:
    backend.check_available("portable")


@pytest.mark.skipif(sys.platform == "win32", reason="hcs may exist on Windows")
def test_driver_on_hcs_off_windows_raises_backend_unavailable(tmp_path: Path) -> None:
    result = run_python(
        "import winlayer; winlayer.Driver()",
        env={"WINLAYER_BACKEND": "hcs", "WINLAYER_HOME": str(tmp_path / "home")},
    )
    assert result.returncode != 0
    assert "BackendUnavailable" in result.stderr
    assert "WINLAYER_BACKEND=portable" in result.stderr
    assert not (tmp_path / "home").exists()  # refused before touching the store
