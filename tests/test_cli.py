from __future__ import annotations

import subprocess
import sys

import winlayer


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winlayer", *args], capture_output=True, text=True, check=False
    )


def test_version_names_backend() -> None:
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"winlayer {winlayer.__version__} (backend: {winlayer.backend})"


def test_missing_command_is_usage_error() -> None:
    result = _cli()
    assert result.returncode == 2
    assert "COMMAND is required" in result.stderr
    assert result.stdout == ""


def test_unknown_option_is_usage_error() -> None:
    result = _cli("--no-such-flag")
    assert result.returncode == 2
