"""Locks that hold across threads and processes sharing a store.

A :class:`FileLock` is an exclusive lock on a file, taken through portalocker: ``flock``
on POSIX, ``LockFileEx`` on Windows (pywin32). Both wait in the kernel until the lock is
free (no polling) and both are released by the kernel when a process dies, so a crash
never leaves a store locked. Each acquisition opens the file anew and both kinds of lock
belong to an open file, so two threads of one process exclude each other as two
processes do.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portalocker.portalocker import BaseLocker

_STILL_ACTIVE = 259  # GetExitCodeProcess's code for a process that has not ended
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000

# portalocker is imported at the first lock, not at the top: its import reads package
# metadata (about 30 ms), which commands that take no lock need not pay.


@functools.cache
def platform_locker() -> BaseLocker:
    """portalocker's locker for this platform: ``LockFileEx`` through pywin32 on Windows
    (not portalocker's default there, msvcrt.locking, whose blocking mode retries once a
    second and gives up after 10 tries), ``flock`` elsewhere."""
    if sys.platform == "win32":
        from portalocker.portalocker import Win32Locker

        return Win32Locker()
    from portalocker.portalocker import FlockLocker

    return FlockLocker()


def _lock(locker: BaseLocker, fd: int, blocking: bool) -> bool:
    """Lock `fd` exclusively with `locker`; False if it is held and not `blocking`.
    A failure that is not contention is raised as the OSError behind it."""
    from portalocker import LockFlags
    from portalocker.exceptions import AlreadyLocked, LockException

    flags = LockFlags.EXCLUSIVE if blocking else LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING
    try:
        locker.lock(fd, flags)
    except AlreadyLocked:  # contention: only a non-blocking lock reports it
        return False
    except LockException as exc:
        cause = exc.__cause__
        raise cause if isinstance(cause, OSError) else exc from None
    return True


class FileLock:
    """Exclusive lock on `path` (created on first use); a context manager.

    On a store this process may only read (`read_only`), the lock file is opened for
    reading and never created: a reader then still waits for a writer working through
    another mount of the store, and a lock file that is missing or unreadable (nobody
    ever locked it, or it belongs to another user) is no lock at all.
    """

    def __init__(
        self, path: Path, *, read_only: bool = False, locker: BaseLocker | None = None
    ) -> None:
        self.path = path
        self.read_only = read_only
        self._locker = locker  # None: the platform's (tests pass a fake one)
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False`` return False at once if it is held."""
        if self.read_only:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return True
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            taken = _lock(self._locker or platform_locker(), fd, blocking)
        except BaseException:
            os.close(fd)
            raise
        if not taken:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (nothing if it is not held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                (self._locker or platform_locker()).unlock(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> FileLock:
        """Take the lock, waiting for it."""
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Give the lock up."""
        self.release()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id is running (a stale pid may be reused: callers
    only use this to drop holders, never to grant access)."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        import ctypes  # only Windows needs it

        return windows_pid_alive(pid, ctypes.windll.kernel32)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def windows_pid_alive(pid: int, kernel32: Any) -> bool:
    """:func:`pid_alive` on Windows, through `kernel32` (``ctypes.windll.kernel32``):
    a process that cannot be opened is gone (OpenProcess fails for an unused id), one
    that can is alive until it has an exit code."""
    import ctypes  # only Windows (and its tests) need it

    handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
