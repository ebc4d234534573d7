from __future__ import annotations

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


def test_unknown_backend_name_is_refused_at_import() -> None:
    result = run_python("import winlayer", env={"WINLAYER_BACKEND": "overlay"})
    assert result.returncode != 0
    assert "unknown winlayer backend 'overlay'" in result.stderr
    assert "BackendUnavailable" in result.stderr


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
