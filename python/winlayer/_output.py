"""Writing a command's output file (``export -o``, ``save -o``, ``pack -o``).

- An existing file that is not a regular file (a character device such as ``/dev/null``,
  a FIFO, a socket), or a symlink to one, is opened for writing and written in place, as
  ``tar -f`` does: never truncated, never replaced.
- A regular file or a new path gets its new content in a partial file in the same folder,
  renamed over it once complete: the old file stays whole until then. A symlink is
  followed, as ``tar -f`` does: the file it names gets the new content and the link stays.
- A partial file has no name while it is written where the OS allows it (Linux
  ``O_TMPFILE``; a killed process leaves nothing), else a hidden one,
  ``.<name>.<token>.winlayer-partial``, locked by its writer while it lives; every output
  into a folder first removes that folder's partial files whose writer is gone.
- A failed write names the user's path (e.g. ``ENOSPC`` on ``out.tar``), not the partial.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from ._common import lazy_module, win32_path

if TYPE_CHECKING:
    import pathlib
    import secrets
    import shutil
    import tempfile
    from pathlib import Path
else:  # only when an output is written
    pathlib = lazy_module("pathlib")
    secrets = lazy_module("secrets")
    shutil = lazy_module("shutil")
    tempfile = lazy_module("tempfile")

PARTIAL_SUFFIX = ".winlayer-partial"
_BUFFER = 1 << 20

if sys.platform == "win32":
    # A file open in another process cannot be deleted on Windows: the writer's open
    # handle is its lock.
    def _try_lock(fd: int) -> bool:
        return True

    def _remove_if_abandoned(path: Path) -> None:
        path.unlink()

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _remove_if_abandoned(path: Path) -> None:
        # Removed under the lock: a writer that locks a new partial checks afterwards
        # that it still has its name.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if _try_lock(fd) and os.path.samestat(os.fstat(fd), os.lstat(path)):
                path.unlink()
        finally:
            os.close(fd)


def _writes_in_place(path: Path) -> bool:
    """Whether `path` (symlinks followed) is an existing file that must not be replaced;
    IsADirectoryError for a folder."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    return not stat.S_ISREG(mode)


class _Named(io.RawIOBase):
    """A raw writer on `fd` whose OSErrors name `path`, the user's output path."""

    def __init__(self, fd: int, path: str) -> None:
        super().__init__()
        self._file = io.FileIO(fd, "wb", closefd=True)
        self._path = path

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with named(self._path, None):
            return self._file.write(data) or 0

    def close(self) -> None:
        self._file.close()
        super().close()


@contextlib.contextmanager
def named(path: str, *aliases: str | None) -> Iterator[None]:
    """Re-raise an OSError of the block that names one of `aliases` (None: no file) as
    one naming `path`, the user's output path (not the partial file behind it)."""
    try:
        yield
    except OSError as exc:
        if exc.filename not in aliases:
            raise
        raise OSError(exc.errno, exc.strerror, path) from None


def _sweep(folder: Path) -> None:
    """Remove the partial files of `folder` whose writer is gone (their lock is free)."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(PARTIAL_SUFFIX)]
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):  # alive, or another output swept it first
            _remove_if_abandoned(folder / name)


class _Partial:
    """The partial file of one output, in `folder`; see the module docstring. OSErrors
    of its own steps name `shown`, the user's path."""

    def __init__(self, folder: Path, name: str, shown: str) -> None:
        self.folder = folder
        self.name = name
        self.shown = shown
        self.hidden: Path | None = None  # the partial's name, once it has one
        _sweep(folder)
        with named(shown, None, str(folder)):
            fd = _open_anonymous(folder)
            self.fd = fd if fd is not None else self._create_hidden()

    @property
    def path(self) -> str:
        """A path that opens this file, for code that opens files by name."""
        return str(self.hidden) if self.hidden is not None else f"/proc/self/fd/{self.fd}"

    def _new_name(self) -> Path:
        return self.folder / f".{self.name}.{secrets.token_hex(8)}{PARTIAL_SUFFIX}"

    def _create_hidden(self) -> int:
        while True:
            path = self._new_name()
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            with named(self.shown, str(path)):
                fd = os.open(path, flags, 0o666)
            # A sweep may have removed the file between its creation and the lock.
            if _try_lock(fd) and os.path.samestat(os.fstat(fd), os.lstat(path)):
                self.hidden = path
                return fd
            os.close(fd)

    def commit(self, target: Path) -> None:
        """Flush the file to disk and rename it over `target` (in the same folder)."""
        with named(self.shown, None, self.path, str(target)):
            os.fsync(self.fd)
            if self.hidden is None:  # O_TMPFILE: give it a name (linkat cannot replace)
                hidden = self._new_name()
                folder = os.open(self.folder, os.O_RDONLY)
                try:
                    os.link(self.path, hidden.name, dst_dir_fd=folder, follow_symlinks=True)
                finally:
                    os.close(folder)
                self.hidden = hidden
            os.replace(self.hidden, target)
            self.hidden = None

    def close(self) -> None:
        os.close(self.fd)
        if self.hidden is not None:
            self.hidden.unlink(missing_ok=True)


def _open_anonymous(folder: Path) -> int | None:
    """An unnamed file in `folder` (Linux ``O_TMPFILE``), or None where there is none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_RDWR, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None  # this filesystem has no O_TMPFILE
        raise


def _target(path: str | os.PathLike[str]) -> tuple[str, Path, bool]:
    """(the path as the user gave it, the file it names, whether to write it in place)."""
    shown = os.fspath(path)
    # On Windows the `\\?\` form: the partial file's name beside the output adds about
    # 30 characters, and neither may need LongPathsEnabled.
    target = pathlib.Path(win32_path(os.path.realpath(shown)))
    with named(shown, str(target)):
        return shown, target, _writes_in_place(target)


@contextlib.contextmanager
def output_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A buffered binary file whose content becomes `path`'s when the block ends without
    an error (see the module docstring)."""
    shown, target, in_place = _target(path)
    if in_place:
        with named(shown, str(target)):
            fd = os.open(target, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
        with io.BufferedWriter(_Named(fd, shown), _BUFFER) as f:
            yield f
        return
    partial = _Partial(target.parent, target.name, shown)
    try:
        with io.BufferedWriter(_Named(os.dup(partial.fd), shown), _BUFFER) as f:
            yield f
        partial.commit(target)
    finally:
        partial.close()


@contextlib.contextmanager
def output_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A path to write `path`'s new content into, for writers that open it by name (the
    native tar writer); the content goes to `path` when the block ends without an error.
    A file written in place (a device, a FIFO) gets it only then, copied from a scratch
    file in the system's temp folder."""
    shown, target, in_place = _target(path)
    folder = pathlib.Path(tempfile.gettempdir()) if in_place else target.parent
    partial = _Partial(folder, target.name, shown)
    try:
        with named(shown, partial.path):
            yield partial.path
        if in_place:
            with output_file(shown) as out, open(partial.path, "rb") as f:
                shutil.copyfileobj(f, out, _BUFFER)
        else:
            partial.commit(target)
    finally:
        partial.close()
