"""docs/cli.md is the CLI reference generated from the parser: it must match the parser,
and every command must say what its --json prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from winlayer._cli_common import COMMANDS
from winlayer._cli_docs import JSON_OUTPUT

from .conftest import REPO

REGENERATE = "python -m winlayer._cli_docs docs/cli.md"


def test_the_reference_matches_the_parser() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "winlayer._cli_docs"], capture_output=True, check=True
    ).stdout.decode()
    stored = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert generated == stored, f"docs/cli.md is out of date: run {REGENERATE}"


def test_every_command_is_in_the_reference_with_its_json() -> None:
    assert sorted(JSON_OUTPUT) == sorted(COMMANDS)
    stored = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in COMMANDS:
        assert f"\n## winlayer {name}\n" in stored
        assert f"usage: winlayer {name} " in stored


def test_the_generator_writes_the_file_it_is_given(tmp_path: Path) -> None:
    out = tmp_path / "cli.md"
    subprocess.run([sys.executable, "-m", "winlayer._cli_docs", str(out)], check=True)
    assert out.read_text(encoding="utf-8") == (REPO / "docs" / "cli.md").read_text("utf-8")
