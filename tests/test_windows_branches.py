"""The Python facade's Windows branches, run here with the platform faked: the default
folders under ProgramData, the layer lock's use of its locker, the pid check through
kernel32, the hcs backend's vmcompute.dll check, the host's Windows version. What runs
only on Windows is listed in docs/ARCHITECTURE.md ("Windows branches of the Python
facade")."""

from __future__ import annotations

import ctypes
import errno
import importlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path, PureWindowsPath
from typing import Any

import pytest
from portalocker import LockFlags
from portalocker.exceptions import AlreadyLocked, LockException
from portalocker.portalocker import BaseLocker

from winlayer import _locks, _output, pack
from winlayer._common import data_root, win32_path
from winlayer._locks import FileLock, pid_alive, windows_pid_alive
from winlayer._platform import windows_os_version
from winlayer._state import write_denied
from winlayer.driver import default_home
from winlayer.errors import BackendUnavailable

backend = importlib.import_module("winlayer.backend")  # the module, not winlayer.backend


# --- default folders ---------------------------------------------------------------------


@pytest.fixture
def no_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("WINLAYER_HOME", "WINLAYER_BASE_IMAGES", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "user"))
    return tmp_path / "user"


def test_windows_folders_are_the_machines_under_programdata(
    monkeypatch: pytest.MonkeyPatch, no_overrides: Path
) -> None:
    # platformdirs asks the shell for FOLDERID_ProgramData; off Windows its documented
    # override stands in for the answer.
    monkeypatch.setenv("WIN_PD_OVERRIDE_COMMON_APPDATA", r"D:\ProgramData")
    monkeypatch.setattr(sys, "platform", "win32")
    assert PureWindowsPath(str(data_root())) == PureWindowsPath(r"D:\ProgramData\winlayer")
    assert PureWindowsPath(str(default_home())) == PureWindowsPath(
        r"D:\ProgramData\winlayer\windowsfilter"
    )
    assert PureWindowsPath(str(default_home("windowsdiff"))).name == "windowsdiff"
    assert PureWindowsPath(backend.default_base_images()) == PureWindowsPath(
        r"D:\ProgramData\winlayer\base-images"
    )


def test_linux_folders_follow_xdg(monkeypatch: pytest.MonkeyPatch, no_overrides: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert data_root() == no_overrides / ".local" / "share" / "winlayer"
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/data")
    assert data_root() == Path("/srv/data/winlayer")
    assert default_home() == Path("/srv/data/winlayer/windowsfilter")
    assert backend.default_base_images() == str(Path("/srv/data/winlayer/base-images"))


def test_macos_folder(monkeypatch: pytest.MonkeyPatch, no_overrides: Path) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert data_root() == no_overrides / "Library" / "Application Support" / "winlayer"


def test_the_variables_win_on_every_platform(
    monkeypatch: pytest.MonkeyPatch, no_overrides: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("WINLAYER_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("WINLAYER_BASE_IMAGES", str(tmp_path / "b"))
    for platform in ("win32", "linux", "darwin"):
        monkeypatch.setattr(sys, "platform", platform)
        assert default_home() == tmp_path / "h"
        assert backend.default_base_images() == str(tmp_path / "b")


# --- the layer lock ------------------------------------------------------------------------


class FakeLocker(BaseLocker):
    """Records the calls; `refuse` makes a lock fail with that exception."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.calls: list[tuple[str, int, Any]] = []
        self.refuse = refuse

    def lock(self, file_obj: Any, flags: LockFlags) -> None:
        self.calls.append(("lock", file_obj, flags))
        if self.refuse is not None:
            raise self.refuse

    def unlock(self, file_obj: Any) -> None:
        self.calls.append(("unlock", file_obj, None))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_lock_asks_its_locker_for_an_exclusive_lock(tmp_path: Path) -> None:
    locker = FakeLocker()
    lock = FileLock(tmp_path / "locks" / "a.lock", locker=locker)
    assert lock.acquire()
    ((_, fd, flags),) = locker.calls
    assert flags == LockFlags.EXCLUSIVE  # blocking: the locker waits in the kernel
    assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "locks" / "a.lock"))
    lock.release()
    assert locker.calls[1] == ("unlock", fd, None)
    assert not _is_open(fd)
    lock.release()  # released already: nothing
    assert len(locker.calls) == 2


def test_a_held_lock_is_refused_without_waiting(tmp_path: Path) -> None:
    locker = FakeLocker(AlreadyLocked("held"))
    lock = FileLock(tmp_path / "a.lock", locker=locker)
    assert lock.acquire(blocking=False) is False
    ((_, fd, flags),) = locker.calls
    assert flags == LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING
    assert not _is_open(fd)
    lock.release()
    assert len(locker.calls) == 1  # nothing to unlock


def test_a_lock_failure_is_the_os_error_behind_it(tmp_path: Path) -> None:
    cause = OSError(errno.ENOLCK, "No locks available")
    failure = LockException(cause)
    failure.__cause__ = cause
    locker = FakeLocker(failure)
    lock = FileLock(tmp_path / "a.lock", locker=locker)
    with pytest.raises(OSError, match="No locks available") as info:
        lock.acquire()
    assert info.value.errno == errno.ENOLCK
    assert not _is_open(locker.calls[0][1])


def test_a_read_only_lock_opens_without_creating(tmp_path: Path) -> None:
    locker = FakeLocker()
    missing = FileLock(tmp_path / "none.lock", read_only=True, locker=locker)
    assert missing.acquire()  # no lock file: nobody ever locked it
    assert locker.calls == []
    assert not (tmp_path / "none.lock").exists()
    (tmp_path / "there.lock").touch()
    present = FileLock(tmp_path / "there.lock", read_only=True, locker=locker)
    with present:
        ((_, fd, flags),) = locker.calls
        assert flags == LockFlags.EXCLUSIVE
        with pytest.raises(OSError, match="Bad file descriptor"):  # opened for reading only
            os.write(fd, b"x")
    assert locker.calls[-1][0] == "unlock"


def test_the_platforms_locker() -> None:
    """LockFileEx (pywin32) on Windows, where portalocker's msvcrt default gives up on a
    blocking lock after ten one-second retries; flock elsewhere."""
    expected = "Win32Locker" if sys.platform == "win32" else "FlockLocker"
    assert type(_locks.platform_locker()).__name__ == expected


def test_a_waiting_thread_wakes_when_the_lock_is_released(tmp_path: Path) -> None:
    """Two locks on one file in one process exclude each other, and the one waiting gets
    the lock as soon as it is given up, with no polling interval."""
    first = FileLock(tmp_path / "a.lock")
    first.acquire()
    assert FileLock(tmp_path / "a.lock").acquire(blocking=False) is False
    got: list[float] = []

    def wait() -> None:
        with FileLock(tmp_path / "a.lock"):
            got.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    assert got == []
    released = time.monotonic()
    first.release()
    thread.join(10)
    assert len(got) == 1
    assert got[0] >= released


# --- `\\?\` paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (r"C:\src\app", r"\\?\C:\src\app"),
        ("C:/src/app", r"\\?\C:\src\app"),  # '/' is a name character after the prefix
        (r"C:\src\.\lib\..\app" + "\\", r"\\?\C:\src\app"),  # so is '..': resolved first
        (r"\\server\share\src", r"\\?\UNC\server\share\src"),
        ("//server/share/src", r"\\?\UNC\server\share\src"),
        (r"\\?\C:\already", r"\\?\C:\already"),
        (r"\\?\UNC\server\share", r"\\?\UNC\server\share"),
        ("//?/C:/already", r"\\?\C:\already"),
        (r"\\.\pipe\name", r"\\.\pipe\name"),  # a device path stays one
        ("C:\\" + "d" * 300 + "\\f.txt", "\\\\?\\C:\\" + "d" * 300 + "\\f.txt"),
    ],
    ids=[
        "drive",
        "slashes",
        "dots",
        "unc",
        "unc-slashes",
        "prefixed",
        "prefixed-unc",
        "prefixed-slashes",
        "device",
        "past-max-path",
    ],
)
def test_windows_paths_get_the_long_path_prefix(given: str, expected: str) -> None:
    assert win32_path(given, "win32") == expected


def test_a_relative_windows_path_is_made_absolute_before_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "getcwd", lambda: r"D:\work")
    assert win32_path(r"src\app", "win32") == r"\\?\D:\work\src\app"
    assert win32_path(r"\top", "win32") == r"\\?\D:\top"  # rooted: the current drive's


def test_paths_elsewhere_are_kept_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert win32_path("rel/../x", "linux") == "rel/../x"
    assert win32_path(Path("/a/b"), "darwin") == "/a/b"
    monkeypatch.setattr(sys, "platform", "win32")  # read at the call by default
    assert win32_path(r"C:\x") == r"\\?\C:\x"


def test_pack_walks_the_folder_through_its_long_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Python opens every file below the folder (the native module is given none of
    # them): on Windows the walk starts at the `\\?\` form, so the whole tree has it.
    source = tmp_path / "src"
    deep = source / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    (deep / "file.txt").write_bytes(b"deep")
    asked: list[str] = []

    def spy(path: str | os.PathLike[str], platform: str | None = None) -> str:
        asked.append(os.fspath(path))
        return str(source)  # what Windows would be given, here as it is

    monkeypatch.setattr(pack, "win32_path", spy)
    pack.pack_directory(source, tmp_path / "layer.tar")
    assert asked == [str(source)]
    with pack.list_layer_tar(tmp_path / "layer.tar") as listing:
        names = [entry.path for entry in listing]
    assert f"Files/{'d' * 120}/{'e' * 120}/file.txt" in names


def test_an_output_file_is_written_through_its_long_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The output and its partial file beside it are opened by Python: on Windows through
    # the `\\?\` form of the output's real path.
    asked: list[str] = []

    def spy(path: str | os.PathLike[str], platform: str | None = None) -> str:
        asked.append(os.fspath(path))
        return os.fspath(path)

    monkeypatch.setattr(_output, "win32_path", spy)
    (tmp_path / "real" / "sub").mkdir(parents=True)
    with _output.output_file(tmp_path / "real" / "sub" / ".." / "out.tar") as f:
        f.write(b"tar")
    assert asked == [str(tmp_path / "real" / "out.tar")]
    assert (tmp_path / "real" / "out.tar").read_bytes() == b"tar"


# --- pid_alive on Windows ----------------------------------------------------------------


class FakeKernel32:
    def __init__(self, handle: int, exit_code: int) -> None:
        self.handle = handle
        self.exit_code = exit_code
        self.closed: list[int] = []
        self.opened: list[tuple[int, bool, int]] = []

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        self.opened.append((access, inherit, pid))
        return self.handle

    def GetExitCodeProcess(self, handle: int, code: Any) -> int:
        ctypes.cast(code, ctypes.POINTER(ctypes.c_ulong)).contents.value = self.exit_code
        return 1

    def CloseHandle(self, handle: int) -> int:
        self.closed.append(handle)
        return 1


def test_windows_pid_alive() -> None:
    running = FakeKernel32(handle=42, exit_code=259)  # STILL_ACTIVE
    assert windows_pid_alive(1234, running)
    assert running.opened == [(0x1000, False, 1234)]  # PROCESS_QUERY_LIMITED_INFORMATION
    assert running.closed == [42]
    ended = FakeKernel32(handle=43, exit_code=0)
    assert not windows_pid_alive(1234, ended)
    assert ended.closed == [43]
    gone = FakeKernel32(handle=0, exit_code=259)  # OpenProcess failed: no such process
    assert not windows_pid_alive(1234, gone)
    assert gone.closed == []


# --- the hcs backend's checks --------------------------------------------------------------


def test_hcs_is_the_windows_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    assert backend.default_name() == "hcs"
    monkeypatch.setattr(sys, "platform", "linux")
    assert backend.default_name() == "portable"


def test_hcs_without_vmcompute_names_the_dll_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("SYSTEMROOT", str(tmp_path / "Windows"))
    dll = tmp_path / "Windows" / "System32" / "vmcompute.dll"
    assert backend.vmcompute_path() == dll
    with pytest.raises(BackendUnavailable, match="Containers feature") as info:
        backend.check_available("hcs")
    assert str(dll) in str(info.value)
    assert "(--backend portable)" in str(info.value)
    assert "WINLAYER_BACKEND" not in str(info.value)
    with pytest.raises(BackendUnavailable, match="unset WINLAYER_BACKEND"):
        backend.check_available("hcs", from_env=True)
    backend.check_available("portable")  # the portable backend needs no DLL
    dll.parent.mkdir(parents=True)
    dll.write_bytes(b"MZ")
    backend.check_available("hcs")


def test_vmcompute_is_looked_for_in_the_default_windows_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SYSTEMROOT", raising=False)
    assert PureWindowsPath(str(backend.vmcompute_path())) == PureWindowsPath(
        r"C:\Windows\System32\vmcompute.dll"
    )


@pytest.mark.skipif(sys.platform != "win32", reason="asks the Windows shell")
def test_windows_data_root_is_programdata() -> None:
    assert data_root() == Path(os.environ["PROGRAMDATA"]) / "winlayer"


def test_pid_alive_follows_a_child() -> None:
    """The real call of this platform (OpenProcess on Windows, kill(0) elsewhere)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)


# --- read-only homes without statvfs -------------------------------------------------------


def test_a_home_not_writable_without_statvfs_is_eacces(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Windows has no statvfs: a folder it may not write is EACCES, never EROFS."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.delattr(os, "statvfs", raising=False)
    assert write_denied(tmp_path) == errno.EACCES


# --- the host's Windows version --------------------------------------------------------------


def test_windows_os_version_adds_the_registrys_revision() -> None:
    assert windows_os_version((10, 0, 20348), lambda: 2227) == "10.0.20348.2227"


def test_windows_os_version_without_a_readable_revision() -> None:
    def unreadable() -> int:
        raise FileNotFoundError(2, "The system cannot find the file specified")

    assert windows_os_version((10, 0, 17763), unreadable) == "10.0.17763"
