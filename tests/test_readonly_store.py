"""A store this process may only read (a read-only mount, a user without write permission):
every read works, every change fails with one line saying the store is read-only."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import winlayer.layertar  # noqa: F401 - imported before a test drops its privileges
from winlayer import Driver, cli
from winlayer.images import ImageStore

from .capabilities import require
from .conftest import Cli
from .imagebuild import hello_archive
from .layerbuild import base_layer, d, f, layer_tar

#: Runs the winlayer command line on the store: args -> (exit code, stdout, stderr).
Run = Callable[[list[str]], tuple[int, str, str]]

READS = [["ls"], ["inspect", "b"], ["verify", "a", "b"], ["changes", "b"], ["du", "b"]]
READS += [["images", "ls"], ["images", "inspect", "hello:1"], ["images", "history", "hello:1"]]
READS += [["df"], ["prune", "--dry-run"]]
WRITES = [
    ["import", "c", "{inputs}/a.tar"],
    ["create", "z", "--parent", "a"],
    ["rm", "b"],
    ["mount", "b"],
    ["gc"],
    ["load", "{inputs}/other.tar"],  # new layers: refused by the layer store
    ["load", "{inputs}/hello.tar"],  # layers there already: refused by the image store
    ["images", "restore"],
    ["images", "rm", "hello:1"],
    ["images", "tag", "hello:1", "other:1"],
    ["prune"],
    ["prune", "-a"],
]


def subprocess_cli(c: Cli) -> Run:
    def run(args: list[str]) -> tuple[int, str, str]:
        result = c(*args)
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    return run


def in_process_cli(home: Path) -> Run:
    def run(args: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--home", str(home), *args])
        return code, out.getvalue(), err.getvalue()

    return run


def build_store(run: Run, inputs: Path) -> dict[str, object]:
    """Layers a and b (on a) and image hello:1; returns what the reads show."""
    (inputs / "a.tar").write_bytes(base_layer())
    (inputs / "b.tar").write_bytes(layer_tar([d("Files"), f("Files/b.txt", b"b")]))
    (inputs / "hello.tar").write_bytes(hello_archive(base_layer()))
    (inputs / "other.tar").write_bytes(hello_archive(layer_tar([d("Files"), f("Files/o", b"o")])))
    for args in (
        ["import", "a", f"{inputs}/a.tar"],
        ["import", "b", f"{inputs}/b.tar", "--parent", "a"],
        ["load", f"{inputs}/hello.tar"],
    ):
        code, _out, err = run(args)
        assert code == 0, err
    return reads(run)


def reads(run: Run) -> dict[str, object]:
    shown = {}
    for args in READS:
        code, out, err = run(["--json", *args])
        assert (code, err) == (0, ""), args
        shown[" ".join(args)] = json.loads(out)
    return shown


def check_read_only(
    run: Run, inputs: Path, outputs: Path, before: dict[str, object], denied: int
) -> None:
    """Reads show what they showed on the writable store; exports and saves work; every
    change fails with errno `denied`, in one line saying the store is read-only."""
    assert reads(run) == before
    outputs.mkdir(exist_ok=True)
    for args in (["export", "b"], ["save", "hello:1"]):
        target = outputs / f"{args[1]}.tar"
        code, out, err = run([*args, "-o", str(target)])
        assert (code, out, err) == (0, "", ""), args
        assert target.stat().st_size > 0
    for args in WRITES:
        code, out, err = run([a.format(inputs=inputs) for a in args])
        assert (code, out) == (1, ""), (args, err)
        (line,) = err.splitlines()
        assert line.startswith(f"winlayer: error: [Errno {denied}] "), line
        assert " is read-only here" in line, line


@contextlib.contextmanager
def read_only_mount(folder: Path) -> Iterator[None]:
    """`folder` made read-only in place by a read-only bind mount of itself."""
    steps = (
        ["mount", "--bind", str(folder), str(folder)],
        ["mount", "-o", "remount,ro,bind", str(folder)],
    )
    for n, step in enumerate(steps):
        done = subprocess.run(step, capture_output=True, check=False)
        if done.returncode != 0:
            if n:
                subprocess.run(["umount", str(folder)], check=False)
            pytest.skip(f"cannot make a read-only bind mount: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_mount(cli: Cli, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    run = subprocess_cli(cli)
    before = build_store(run, inputs)
    with read_only_mount(cli.home):
        check_read_only(run, inputs, tmp_path / "outputs", before, errno.EROFS)
        driver = Driver(cli.home, base_images=tmp_path / "base")
        assert driver.write_denied == errno.EROFS
        assert [layer.id for layer in driver.layers()] == [x["id"] for x in before["ls"]]  # type: ignore[attr-defined]
        with pytest.raises(PermissionError) as caught:
            driver.apply_diff("c", "a", inputs / "a.tar")
        assert caught.value.filename == str(cli.home)
        with ImageStore(cli.home) as store:
            assert store.write_denied == errno.EROFS
            assert [i.tags for i in store.images()] == [("hello:1",)]
            with pytest.raises(PermissionError, match="image store is read-only here"):
                store.untag("hello:1")


def as_user(name: str, work: Callable[[], None]) -> None:
    """Run `work` in a forked child that became user `name` (os.setuid); its failure is
    this test's. A fork, not a new interpreter: the user may not be able to run it."""
    require("fork", "euid")
    pwd = pytest.importorskip("pwd", reason="needs the POSIX user database")
    user = pwd.getpwnam(name)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(reader)
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            work()
            status = 0
        except BaseException:
            os.write(writer, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        report = pipe.read().decode()
    _pid, status = os.waitpid(pid, 0)
    if status != 0:
        pytest.fail(f"as {name}: {report or f'exit status {status}'}")


def test_a_user_without_write_permission() -> None:
    require("euid")
    pwd = pytest.importorskip("pwd", reason="needs the POSIX user database")
    if os.geteuid() != 0:
        pytest.skip("becoming another user (os.setuid) needs root")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user 'nobody'")
    # Outside pytest's temp folder, which only root may enter.
    work = Path(tempfile.mkdtemp(prefix="winlayer-readonly-"))
    os.chown(work, nobody.pw_uid, nobody.pw_gid)

    def scenario() -> None:
        os.environ["WINLAYER_BASE_IMAGES"] = str(work / "base")
        home, inputs = work / "home", work / "inputs"
        inputs.mkdir()
        run = in_process_cli(home)
        before = build_store(run, inputs)
        for folder, _dirs, files in os.walk(home):  # the owner takes away its own write bit
            for name in [*files, ""]:
                path = os.path.join(folder, name) if name else folder
                os.chmod(path, os.stat(path).st_mode & 0o555)
        check_read_only(run, inputs, work / "outputs", before, errno.EACCES)

    try:
        as_user("nobody", scenario)
    finally:
        shutil.rmtree(work)


def test_a_read_only_store_that_never_held_an_image(cli: Cli, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    run = subprocess_cli(cli)
    (inputs / "a.tar").write_bytes(base_layer())
    (inputs / "hello.tar").write_bytes(hello_archive(base_layer()))
    assert run(["import", "a", f"{inputs}/a.tar"])[0] == 0
    assert not (cli.home / ".winlayer" / "images.db").exists()
    with read_only_mount(cli.home):
        assert run(["--json", "images", "ls"]) == (0, "[]\n", "")
        assert run(["images", "ls"]) == (0, "TAGS  IMAGE ID  CREATED  SIZE\n", "")
        code, out, err = run(["load", f"{inputs}/hello.tar"])
        assert (code, out) == (1, ""), err
        (line,) = err.splitlines()
        assert line.startswith(f"winlayer: error: [Errno {errno.EROFS}] "), line
        assert " is read-only here" in line, line
    assert not (cli.home / ".winlayer" / "images.db").exists()
