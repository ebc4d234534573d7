"""Where `export -o`, `save -o` and `pack -o` write: devices and FIFOs in place, regular
files replaced once complete, nothing left behind by a killed command, errors naming the
user's path."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .capabilities import require
from .conftest import Cli
from .imagebuild import hello_archive
from .layerbuild import base_layer, d, f, layer_tar

BIG = layer_tar([d("Files"), f("Files/big.bin", os.urandom(3 << 20))])


@pytest.fixture
def store(cli: Cli, tmp_path: Path) -> Cli:
    """A store holding layer `base`, layer `big` (3 MiB) and image `hello:1`."""
    (tmp_path / "base.tar").write_bytes(base_layer())
    (tmp_path / "big.tar").write_bytes(BIG)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("a")
    (tmp_path / "hello.tar").write_bytes(hello_archive(base_layer()))
    for args in (
        ("import", "base", str(tmp_path / "base.tar")),
        ("import", "big", str(tmp_path / "big.tar")),
        ("load", str(tmp_path / "hello.tar")),
    ):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
    return cli


# The commands that take -o FILE, given the test's tmp_path and FILE.
COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "export": lambda tmp, out: ["export", "base", "--original", "-o", str(out)],
    "save": lambda tmp, out: ["save", "hello:1", "-o", str(out)],
    "pack": lambda tmp, out: ["pack", str(tmp / "tree"), "-o", str(out)],
}


def expected_output(store: Cli, tmp_path: Path, command: str) -> bytes:
    """What `command` writes into a new regular file."""
    out = tmp_path / "reference" / f"{command}.tar"
    out.parent.mkdir(exist_ok=True)
    result = store(*COMMANDS[command](tmp_path, out))
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def device(path: Path, minor: int) -> Path:
    """A memory character device (major 1: 3 is null, 7 is full) made in the test's own
    folder: the system's /dev is never a test's target."""
    require("euid", "mknod")
    if os.geteuid() != 0:
        pytest.skip("making a character device (mknod) needs root")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    return path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_character_device_is_written_not_replaced(
    store: Cli, tmp_path: Path, command: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    null = device(out / "null", 3)
    before = os.stat(null)
    result = store(*COMMANDS[command](tmp_path, null))
    assert result.returncode == 0, result.stderr
    after = os.stat(null)
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert sorted(os.listdir(out)) == ["null"]  # no partial file beside it


@contextlib.contextmanager
def fifo_reader(path: Path) -> Iterator[list[bytes]]:
    """A FIFO at `path` with a thread reading it to the end; yields what it read."""
    require("mkfifo")
    os.mkfifo(path)
    got: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as fifo:
            got.append(fifo.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    yield got
    reader.join(timeout=60)
    assert not reader.is_alive()


@pytest.mark.parametrize("via_symlink", [False, True], ids=["fifo", "symlink-to-fifo"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_fifo_is_written_in_place(
    store: Cli, tmp_path: Path, command: str, via_symlink: bool
) -> None:
    expected = expected_output(store, tmp_path, command)
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "fifo"
    with fifo_reader(fifo) as got:
        target = fifo
        if via_symlink:
            target = out / "link"
            target.symlink_to("fifo")
        result = store(*COMMANDS[command](tmp_path, target))
        assert result.returncode == 0, result.stderr
    assert got == [expected]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if via_symlink:
        assert os.readlink(out / "link") == "fifo"
    assert sorted(os.listdir(out)) == ["fifo", "link"] if via_symlink else ["fifo"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_symlink_to_a_file_keeps_the_link_and_replaces_the_file(
    store: Cli, tmp_path: Path, command: str
) -> None:
    expected = expected_output(store, tmp_path, command)
    out = tmp_path / "out"
    out.mkdir()
    (out / "real.tar").write_bytes(b"old")
    (out / "link.tar").symlink_to("real.tar")
    result = store(*COMMANDS[command](tmp_path, out / "link.tar"))
    assert result.returncode == 0, result.stderr
    assert os.readlink(out / "link.tar") == "real.tar"
    assert (out / "real.tar").read_bytes() == expected
    assert sorted(os.listdir(out)) == ["link.tar", "real.tar"]


def test_a_failed_export_leaves_the_old_file_whole(store: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.tar").write_bytes(b"old")
    result = store("export", "nope", "-o", str(out / "x.tar"))
    assert result.returncode == 1
    assert (out / "x.tar").read_bytes() == b"old"
    assert os.listdir(out) == ["x.tar"]


# An export that SIGKILLs itself once 2 MiB of the 3 MiB layer went to its output file.
KILLED_EXPORT = """
import os, signal, sys
import winlayer._output, winlayer.driver
from winlayer.cli import main
if sys.argv[1] == "named":
    winlayer._output._open_anonymous = lambda folder: None
real = winlayer.driver.DiffStream.readinto
sent = 0
def readinto(self, buffer):
    global sent
    if sent >= 2 << 20:
        os.kill(os.getpid(), signal.SIGKILL)
    n = real(self, buffer)
    sent += n
    return n
winlayer.driver.DiffStream.readinto = readinto
sys.exit(main(sys.argv[2:]))
"""


def killed_export(store: Cli, out: Path, how: str) -> None:
    require("sigkill")
    args = ["--home", str(store.home), "export", "big", "-o", str(out)]
    result = subprocess.run(
        [sys.executable, "-c", KILLED_EXPORT, how, *args],
        env=store.env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr


def test_a_killed_export_leaves_no_partial_file(store: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "big.tar").write_bytes(b"old")
    killed_export(store, out / "big.tar", "anonymous")
    assert sorted(os.listdir(out)) == ["big.tar"]
    assert (out / "big.tar").read_bytes() == b"old"


def test_partial_files_of_dead_writers_are_swept_by_the_next_output(
    store: Cli, tmp_path: Path
) -> None:
    # Where there is no O_TMPFILE the partial file has a name while it is written.
    out = tmp_path / "out"
    out.mkdir()
    killed_export(store, out / "big.tar", "named")
    (left,) = os.listdir(out)
    assert left.startswith(".big.tar.")
    assert left.endswith(".winlayer-partial")
    assert (out / left).stat().st_size >= 1 << 20
    alive = out / ".other.tar.0123456789abcdef.winlayer-partial"
    alive.write_bytes(b"being written")
    fcntl = pytest.importorskip("fcntl", reason="needs flock (the lock of a live writer)")
    with open(alive, "rb") as held:  # its writer is alive: it holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        result = store("export", "base", "-o", str(out / "base.tar"))
        assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == [alive.name, "base.tar"]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    require("mount")
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_names_the_output_path(store: Cli, small_tmpfs: Path) -> None:
    out = small_tmpfs / "big.tar"
    result = store("export", "big", "-o", str(out))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"winlayer: error: [Errno 28] No space left on device: '{out}'"
    ]
    assert os.listdir(small_tmpfs) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_full_device_names_the_output_path(store: Cli, tmp_path: Path, command: str) -> None:
    full = device(tmp_path / "full", 7)  # /dev/full's numbers: every write is ENOSPC
    result = store(*COMMANDS[command](tmp_path, full))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"winlayer: error: [Errno 28] No space left on device: '{full}'"
    ]
    assert stat.S_ISCHR(os.stat(full).st_mode)
