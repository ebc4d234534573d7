"""Progress bars as a person at a terminal sees them (a pseudo-terminal of 80 and of 60
columns): short ids, binary units as the results, count and total in the same bytes,
an ETA where the total is known, and nothing of it without a terminal."""

from __future__ import annotations

import gzip
import os
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .capabilities import require
from .conftest import Cli
from .imagebuild import docker_save
from .layerbuild import base_layer, f

BIG = 96 << 20  # enough bytes for the bar to be drawn a few times
LAYER_ID = "ab" * 32
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def on_terminal(cli: Cli, columns: int, *args: str) -> tuple[int, list[str]]:
    """Runs the command with stderr on a pseudo-terminal of `columns` columns; its exit
    code and the lines the terminal showed (escape sequences removed)."""
    require("fcntl", "pty")
    import fcntl  # here: Windows has neither
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**cli.env, "COLUMNS": str(columns), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "winlayer", "--home", str(cli.home), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=env,
            check=False,
            timeout=300,
        )
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    text = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    return done.returncode, lines


def _big_layer() -> bytes:
    return base_layer(f("Files/big.bin", os.urandom(1 << 20) * (BIG >> 20)))


def _fits(lines: list[str], columns: int) -> None:
    assert lines, "no progress was drawn"
    assert all(len(line) <= columns for line in lines), lines
    assert not any(re.search(r"\bMB\b|\bkB\b|\bGB\b", line) for line in lines), lines


@pytest.mark.parametrize("columns", [80, 60])
def test_import_progress_fits_with_a_short_id_and_an_eta(
    cli: Cli, tmp_path: Path, columns: int
) -> None:
    tar = tmp_path / "big.tar"
    tar.write_bytes(_big_layer())
    code, lines = on_terminal(cli, columns, "import", LAYER_ID, str(tar))
    assert code == 0
    _fits(lines, columns)
    bars = [line for line in lines if "importing" in line]
    assert bars
    assert all(f"importing {LAYER_ID[:12]} " in line for line in bars), bars
    assert all(LAYER_ID[:13] not in line for line in bars)
    assert any("MiB" in line for line in bars), bars
    assert any(re.search(r"\d:\d\d:\d\d", line) for line in bars), bars  # the ETA


@pytest.mark.parametrize("columns", [80, 60])
def test_load_of_a_gzipped_archive_counts_and_totals_the_same_bytes(
    cli: Cli, tmp_path: Path, columns: int
) -> None:
    archive, _config = docker_save([_big_layer()], tags=["app:1"])
    path = tmp_path / "app.tar.gz"
    path.write_bytes(gzip.compress(archive, compresslevel=1))
    code, lines = on_terminal(cli, columns, "load", str(path))
    assert code == 0
    _fits(lines, columns)
    amounts = [
        (float(m.group(1)), float(m.group(2)))
        for line in lines
        if (m := re.search(r"([\d.]+)/([\d.]+) MiB", line))
    ]
    assert amounts, lines
    assert all(done <= total for done, total in amounts), amounts
    assert amounts[-1][1] >= BIG / (1 << 20)  # the layer's bytes, not the gzip's
    saved = tmp_path / "saved.tar"
    code, lines = on_terminal(cli, columns, "save", "app:1", "-o", str(saved))
    assert code == 0
    _fits(lines, columns)
    totals = [m.group(1) for line in lines if (m := re.search(r"/([\d.?]+) ?MiB", line))]
    assert totals, lines  # bytes as written, out of a known total


def test_no_progress_without_a_terminal(cli: Cli, tmp_path: Path) -> None:
    tar = tmp_path / "big.tar"
    tar.write_bytes(_big_layer())
    done = cli("import", LAYER_ID, str(tar))
    assert done.returncode == 0
    assert done.stderr == b""
