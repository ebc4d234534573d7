"""The members of an image archive: a plain tar read in place, a compressed or
non-seekable one read as a stream, or a directory (an OCI image layout) read in place;
small members (metadata) are read whole, layer blobs are opened for the import pipeline.
Nothing here knows images or the driver.
"""

from __future__ import annotations

import abc
import io
import os
import posixpath
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from ._common import CHUNK
from ._pipeline import BlobOpener, digest_of
from ._stream import DEFAULT_MAX_UNCOMPRESSED, Compression, decompressor, detect
from .errors import WinlayerError

METADATA_LIMIT = 16 << 20  # a manifest, index or config larger than this is refused
_CACHE_LIMIT = 256 << 20  # small members held in memory while a stream is scanned
_MAX_LINK_HOPS = 16
ArchiveSource = str | os.PathLike[str] | IO[bytes]


class InvalidArchive(WinlayerError, ValueError):
    """An image archive is malformed; ``member`` names the archive member at fault."""

    def __init__(self, message: str, member: str = "") -> None:
        super().__init__(f"{message} (member {member!r})" if member else message)
        self.reason = message
        self.member = member


# -- archive members ------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    offset: int  # of the data in the uncompressed outer tar
    target: str = ""  # for links: the archive path linked to
    link: bool = False


def clean_name(name: str) -> str:
    """An archive path as a canonical key: no leading "./" or "/", no "." or ".." parts."""
    path = posixpath.normpath("/" + name.replace("\\", "/"))
    return path.lstrip("/")


def outside(name: str) -> bool:
    """Whether an archive path names something outside the archive (absolute, or up)."""
    return name.startswith("/") or posixpath.normpath(name.replace("\\", "/")).startswith("..")


def two_copies(name: str) -> InvalidArchive:
    return InvalidArchive("the archive holds two different members of this name", name)


class Index:
    """The regular files and links of an archive, by canonical name.

    A name may appear more than once only for the same member: an extraction would keep
    the last copy, a stream reader the first, so copies that differ are refused. A link
    must name the same target; a file must have the same size (:meth:`add`) and the same
    bytes, which the archive compares (`repeats`). The first copy is the one used.
    """

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.repeats: dict[str, list[Member]] = {}  # later copies of a file, to compare

    def add(self, info: tarfile.TarInfo) -> bool:
        """Index a member; True if it repeats a file of the same name and size, whose
        bytes the caller must compare with the first copy's."""
        name = clean_name(info.name)
        if info.isreg():
            member = Member(name, info.size, info.offset_data)
        elif info.issym():
            target = clean_name(posixpath.join(posixpath.dirname(name), info.linkname))
            member = Member(name, 0, 0, target, link=True)
        elif info.islnk():
            member = Member(name, 0, 0, clean_name(info.linkname), link=True)
        else:
            return False
        first = self.members.setdefault(name, member)
        if first is member:
            return False
        if (first.link, first.target, first.size) != (member.link, member.target, member.size):
            raise two_copies(name)
        if member.link:
            return False  # the same link again
        self.repeats.setdefault(name, []).append(member)
        return True

    def resolve(self, name: str, referrer: str) -> Member:
        """The regular file `name` is (following links inside the archive)."""
        path = clean_name(name)
        if outside(name):
            raise InvalidArchive(f"{referrer} names a path outside the archive: {name!r}", referrer)
        for _ in range(_MAX_LINK_HOPS):
            member = self.members.get(path)
            if member is None:
                raise InvalidArchive(
                    f"{referrer} names {name!r}, which is not in the archive", referrer
                )
            if not member.link:
                return member
            path = member.target
        raise InvalidArchive(f"too many links resolving {name!r}", referrer)

    def has(self, name: str) -> bool:
        return clean_name(name) in self.members


class Archive(abc.ABC):
    """Access to an archive's members; subclasses differ in how blobs are reached."""

    index: Index

    def read(self, name: str, referrer: str) -> bytes:
        member = self.index.resolve(name, referrer)
        if member.size > METADATA_LIMIT:
            raise InvalidArchive(
                f"{member.name} is too large for metadata ({member.size} bytes)", member.name
            )
        return self._read_small(member)

    @abc.abstractmethod
    def _read_small(self, member: Member) -> bytes:
        """The bytes of a small member (metadata: JSON, manifests)."""

    def in_place(self, member: Member) -> tuple[str, int, int] | None:
        """(path, offset, size) of the member in a file, for native code to read it there;
        None where it must be read through Python (a stream, a file checked as it opens)."""
        return None

    def close(self) -> None:  # noqa: B027 - most archives hold nothing to release
        pass


class SeekableArchive(Archive):
    """A plain tar with random access: headers indexed once, blobs read in place."""

    def __init__(self, source: ArchiveSource) -> None:
        if isinstance(source, (str, os.PathLike)):
            self._path: str | None = os.fspath(source)
            self._file: IO[bytes] = open(self._path, "rb")  # noqa: SIM115 - closed by close()
        else:
            self._path, self._file = None, source
        self._lock = threading.Lock()  # guards the shared file's position
        self.index = Index()
        try:
            with tarfile.open(fileobj=self._file, mode="r:") as tar:
                for info in tar:
                    self.index.add(info)
            for name, copies in self.index.repeats.items():
                first = self._digest(self.index.members[name])
                if any(self._digest(copy) != first for copy in copies):
                    raise two_copies(name)
        except tarfile.TarError as exc:
            self.close()
            raise InvalidArchive(f"not a valid tar archive ({exc})") from None
        except BaseException:
            self.close()
            raise

    def _read_small(self, member: Member) -> bytes:
        with self._section(member) as f:
            return f.read()

    def _digest(self, member: Member) -> str:
        with self._section(member) as f:
            return digest_of(f)[0]

    def opener(self, member: Member) -> BlobOpener:
        return lambda: self._section(member)

    def in_place(self, member: Member) -> tuple[str, int, int] | None:
        return None if self._path is None else (os.fsdecode(self._path), member.offset, member.size)

    def _section(self, member: Member) -> IO[bytes]:
        if self._path is not None:
            f = open(self._path, "rb")  # noqa: SIM115 - the feed closes it
            f.seek(member.offset)
            return io.BufferedReader(_Section(f, member.size, None, owned=True), CHUNK)
        shared = (self._lock, member.offset)
        return io.BufferedReader(_Section(self._file, member.size, shared, owned=False), CHUNK)

    def close(self) -> None:
        if self._path is not None:
            self._file.close()


class _Section(io.RawIOBase):
    """`size` bytes of a file from its current position (or, for a shared file, from an
    offset, seeking under a lock before every read)."""

    def __init__(
        self, f: IO[bytes], size: int, shared: tuple[threading.Lock, int] | None, *, owned: bool
    ) -> None:
        super().__init__()
        self._f = f
        self._left = size
        self._shared = shared
        self._owned = owned

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        if self._shared is not None:
            lock, offset = self._shared
            with lock:
                self._f.seek(offset)
                data = self._f.read(want)
            self._shared = (lock, offset + len(data))
        else:
            data = self._f.read(want)
        if not data:
            raise InvalidArchive("archive ends inside a member")
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        if self._owned and not self.closed:
            self._f.close()
        super().close()


class DirectoryArchive(Archive):
    """A directory holding an image layout (``oci-layout``, ``index.json``, ``blobs/``),
    read in place as a tar of the same files would be.

    The directory is walked once, without following symbolic links: a link whose target
    stays inside the directory is a link member (resolved by the index, as a tar's), one
    that leads out of it is refused. Each file is opened again by its path when it is
    read, and must still be the file indexed (same device, inode and size): a file
    replaced (by a link, say) or resized since is refused.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self.index = Index()
        self._identity: dict[str, tuple[int, int]] = {}
        for folder, dirs, files in os.walk(self.root, onerror=self._unreadable):
            for entry in sorted(dirs + files):
                path = os.path.join(folder, entry)
                name = os.path.relpath(path, self.root).replace(os.sep, "/")
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    self._add_link(name, os.readlink(path))
                elif stat.S_ISREG(info.st_mode):
                    self.index.members[name] = Member(name, info.st_size, 0)
                    self._identity[name] = (info.st_dev, info.st_ino)

    def _unreadable(self, exc: OSError) -> None:
        where = os.path.relpath(exc.filename, self.root) if exc.filename else "."
        raise InvalidArchive(
            f"cannot read the directory ({exc.strerror})", where.replace(os.sep, "/")
        )

    def _add_link(self, name: str, target: str) -> None:
        joined = posixpath.normpath(
            posixpath.join(posixpath.dirname(name), target.replace("\\", "/"))
        )
        if os.path.isabs(target) or target.startswith(("/", "\\")) or joined.split("/")[0] == "..":
            raise InvalidArchive(f"symbolic link to {target!r}, outside the directory", name)
        self.index.members[name] = Member(name, 0, 0, joined, link=True)

    def _open(self, member: Member) -> IO[bytes]:
        f = open(os.path.join(self.root, *member.name.split("/")), "rb")  # noqa: SIM115
        info = os.fstat(f.fileno())
        if (info.st_dev, info.st_ino) != self._identity[member.name] or info.st_size != member.size:
            f.close()
            raise InvalidArchive(
                f"the file changed while it was loaded (it was {member.size} bytes, "
                f"it is {info.st_size})"
                if info.st_size != member.size
                else "the file was replaced while it was loaded",
                member.name,
            )
        return f

    def _read_small(self, member: Member) -> bytes:
        with self._open(member) as f:
            data = f.read(member.size + 1)
        if len(data) != member.size:
            raise InvalidArchive("the file changed while it was loaded", member.name)
        return data

    def opener(self, member: Member) -> BlobOpener:
        return lambda: io.BufferedReader(
            _Section(self._open(member), member.size, None, owned=True), CHUNK
        )


def open_outer(source: ArchiveSource) -> tuple[IO[bytes], Compression, bool]:
    """(file, compression, seekable) for an archive path or stream; the file is
    positioned at its start."""
    if isinstance(source, (str, os.PathLike)):
        f: IO[bytes] = open(source, "rb")  # noqa: SIM115 - returned to the caller
        seekable = True
    else:
        f = source
        seekable = _seekable(f)
        if not seekable and not hasattr(f, "peek"):
            f = io.BufferedReader(f)  # type: ignore[type-var]
    if seekable:
        start = f.tell()
        head = f.read(4)
        f.seek(start)
    else:
        head = f.peek(4)[:4]  # type: ignore[attr-defined]
    return f, detect(head), seekable


def _seekable(f: IO[bytes]) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def stream_tar(
    f: IO[bytes], compression: Compression, max_member: int
) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """The members of a (compressed) tar read as a stream, each with a reader of its data
    valid until the next member is fetched. A member of a compressed tar may be at most
    `max_member` bytes (the layer size limit: no blob is larger than its layer's tar)."""
    # The compression was sniffed once, by open_outer.
    plain: Any = (
        f
        if compression == "none"
        else decompressor(f, compression, DEFAULT_MAX_UNCOMPRESSED, close_raw=False)
    )
    try:
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            for info in tar:
                if compression != "none" and info.isreg() and info.size > max_member:
                    raise InvalidArchive(
                        f"member of {info.size} bytes in a {compression} archive: more than "
                        f"a layer may expand to ({max_member} bytes, max_layer_size)",
                        clean_name(info.name),
                    )
                yield info, (tar.extractfile(info) if info.isreg() else None)
    except tarfile.TarError as exc:
        raise InvalidArchive(f"not a valid tar archive ({exc})") from None
    except (OSError, EOFError) as exc:
        raise InvalidArchive(f"the archive is damaged or truncated ({exc})") from None


class StreamedArchive(Archive):
    """A compressed or non-seekable archive: small members cached while scanning."""

    def __init__(self) -> None:
        self.index = Index()
        self.cache: dict[str, bytes] = {}
        self._cached = 0

    def note(self, info: tarfile.TarInfo, data: IO[bytes] | None) -> bool:
        """Index a member and cache its data if it is small; False if it was not cached
        (call before anything else reads the data). A repeat of a cached file is
        compared with it here; the caller compares the others (:meth:`uncompared`)."""
        repeat = self.index.add(info)
        if data is None:
            return True
        name = clean_name(info.name)
        if repeat:
            if name not in self.cache:
                return False
            if data.read() != self.cache[name]:
                raise two_copies(name)
            self.index.repeats[name].pop()
            return True
        if info.size > METADATA_LIMIT or self._cached + info.size > _CACHE_LIMIT:
            return False
        self.cache[name] = data.read()
        self._cached += info.size
        return True

    def uncompared(self) -> set[str]:
        """Names of repeated files whose copies :meth:`note` could not compare."""
        return {name for name, copies in self.index.repeats.items() if copies}

    def _read_small(self, member: Member) -> bytes:
        try:
            return self.cache[member.name]
        except KeyError:
            raise InvalidArchive(
                "too much metadata in the archive to hold it in memory", member.name
            ) from None
