"""A plain directory -> a Windows layer tar, so that any build machine can make one.

The directory becomes the container's ``C:\\`` (the layer's ``Files/``); an empty
``Hives/`` is added, as Linux-side layer writers do. Every entry gets the default Windows
metadata that the portable backend gives new files of a sandbox:

- attributes 16 (directory) or 32 (archive) for files;
- the security descriptor ``O:BAG:BA`` (owner and group: BUILTIN\\Administrators);
- all four Windows times (creation, last access, last write, change) set to the file's
  modification time, truncated to the 100 ns ticks of a Windows FILETIME (a layer keeps
  no finer time), so that packing the same tree twice gives the same bytes;
- with `source_date_epoch` (``SOURCE_DATE_EPOCH`` on the command line), a time later
  than that second is clamped to it, as reproducible-builds.org recommends: a tree
  checked out or generated afresh packs to the same tar as long as its files are the
  same;
- a symbolic link becomes a Windows symlink (its target with backslashes); files that share
  an inode become a hard-link group (the first name in sorted order holds the data).

Entries are written in canonical order (a directory before its children, byte order) by
the native deterministic PAX writer, with the records the canonical export writes (times
as PAX ``sec[.fraction]`` of whole ticks, a hard link with no times of its own), so that
exporting an imported packed layer gives back the packed tar byte for byte. The result is
checked with the same validation as an import before it is kept: a name Windows cannot
hold fails naming the entry.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ._common import win32_path
from ._native import _hcs
from ._output import output_path
from .layertar import list_layer_tar

# Self-relative security descriptor O:BAG:BA, base64 (MSWINDOWS.rawsd).
DEFAULT_SD = "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAgAgAAAQIAAAAAAAUgAAAAIAIAAA=="
ATTR_DIRECTORY = 16
ATTR_ARCHIVE = 32
_CHUNK = 1 << 20


def pack_directory(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    source_date_epoch: int | None = None,
) -> str:
    """Write the layer tar of directory `source` to `output`; return its diffID.

    `output` gets the tar only once it is whole and validated: a regular file is replaced
    then, a device or FIFO written then (see :mod:`winlayer._output`). With
    `source_date_epoch` (seconds since 1970), later file times are written as that time.
    """
    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(root))
    if not root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(root))
    clamp = None if source_date_epoch is None else source_date_epoch * 1_000_000_000
    with output_path(output) as partial:
        writer = _hcs.TarWriter(partial)
        root_time = _ticks_ns(root.stat().st_mtime_ns, clamp)
        _add_dir(writer, "Files", root_time)
        seen_inodes: dict[tuple[int, int], str] = {}
        # Every file below the folder is opened by Python: on Windows through `\\?\`
        # paths, so that a tree deeper than MAX_PATH packs without LongPathsEnabled.
        for name, path, st in _walk(Path(win32_path(root))):
            _add(writer, "Files/" + name, path, st, _ticks_ns(st.st_mtime_ns, clamp), seen_inodes)
        _add_dir(writer, "Hives", root_time)
        writer.finish()
        with list_layer_tar(partial) as listing:
            for _entry in listing:
                pass
            diff_id = listing.diff_id
    assert diff_id is not None
    return diff_id


def _walk(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(layer-relative name, path, lstat) of everything under `root`, parents first, in
    byte order of the names (the canonical layer order)."""
    entries = sorted(os.scandir(root), key=lambda e: os.fsencode(e.name))
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        yield entry.name, Path(entry.path), st
        if stat.S_ISDIR(st.st_mode):
            for name, path, child in _walk(Path(entry.path)):
                yield f"{entry.name}/{name}", path, child


def _ticks_ns(mtime_ns: int, clamp_ns: int | None) -> int:
    """A file time as a layer keeps it: whole 100 ns ticks (rounded down, as the import
    converts), no later than `clamp_ns`."""
    if clamp_ns is not None:
        mtime_ns = min(mtime_ns, clamp_ns)
    return mtime_ns - mtime_ns % 100


def _times(mtime_ns: int) -> tuple[int, int]:
    return divmod(mtime_ns, 1_000_000_000)


def _pax_time(time_ns: int) -> str:
    """A time as a PAX record writes it (native ``format_pax_time``): ``sec``, or
    ``sec.fraction`` without trailing zeros, negative times as ``-sec.fraction``."""
    sign = "-" if time_ns < 0 else ""
    sec, nsec = divmod(abs(time_ns), 1_000_000_000)
    return f"{sign}{sec}" + (f".{nsec:09d}".rstrip("0") if nsec else "")


def _pax(attributes: int, mtime_ns: int) -> list[tuple[str | bytes, str | bytes]]:
    return [
        ("LIBARCHIVE.creationtime", _pax_time(mtime_ns)),
        ("MSWINDOWS.fileattr", str(attributes)),
        ("MSWINDOWS.rawsd", DEFAULT_SD),
    ]


def _add_dir(writer: _hcs.TarWriter, name: str, mtime_ns: int) -> None:
    t = _times(mtime_ns)
    writer.add(
        name, "5", mode=0o40000, mtime=t, atime=t, ctime=t, pax=_pax(ATTR_DIRECTORY, mtime_ns)
    )


def _add(
    writer: _hcs.TarWriter,
    name: str,
    path: Path,
    st: os.stat_result,
    mtime_ns: int,
    seen_inodes: dict[tuple[int, int], str],
) -> None:
    t = _times(mtime_ns)
    if stat.S_ISDIR(st.st_mode):
        _add_dir(writer, name, mtime_ns)
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(path).replace("/", "\\")
        attrs = ATTR_ARCHIVE | 0x400  # REPARSE_POINT
        pax = _pax(attrs, mtime_ns)
        writer.add(name, "2", mode=0o120000, linkname=target, mtime=t, atime=t, ctime=t, pax=pax)
    elif stat.S_ISREG(st.st_mode):
        inode = (st.st_dev, st.st_ino)
        first = seen_inodes.get(inode) if st.st_nlink > 1 else None
        if first is not None:
            writer.add(name, "1", mode=0o100000, linkname=first)  # its times are the file's
            return
        seen_inodes[inode] = name
        pax = _pax(ATTR_ARCHIVE, mtime_ns)
        writer.add(name, "0", size=st.st_size, mode=0o100000, mtime=t, atime=t, ctime=t, pax=pax)
        with open(path, "rb") as f:
            written = 0
            while chunk := f.read(_CHUNK):
                writer.write(chunk[: st.st_size - written])
                written += len(chunk)
                if written >= st.st_size:
                    break
        if written < st.st_size:
            raise OSError(f"{path} shrank while it was being packed")
    else:
        raise ValueError(f"cannot pack {path}: only files, folders and symlinks fit a layer")
