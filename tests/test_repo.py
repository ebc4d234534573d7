"""Repository hygiene that CI relies on: lint, types, and the README's commands."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from .conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_ci_runs_the_readmes_test_command() -> None:
    commands = _readme_commands()
    assert len(commands) >= 2, "README must open with the main-job and the test command"
    ci = (REPO / ".ci" / "run").read_text()
    # .ci/run may follow it with `|| exit` (tests/test_ci.py: a failing step fails the run).
    assert any(line.startswith(commands[1]) for line in ci.splitlines()), (
        ".ci/run must run the README's test command verbatim"
    )


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install '.[dev]')")


def test_ruff_clean() -> None:
    _require("ruff")
    for args in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "python", "tests", "benchmarks"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    _require("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
