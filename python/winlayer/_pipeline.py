"""The import pipeline: a layer blob in, the plain tar bytes the native importer reads out.

Every import takes this one path - ``Driver.apply_diff`` (``winlayer import``), an
archive ``load``, ``install_base_image`` - in the shape of containerd's applier::

    blob (path, stream, archive member)
      -> HashingReader        counts the blob bytes; tees its digest when one is to be checked
      -> decompressor         chosen once by the caller: from the media type, else one sniff
      -> read-ahead thread    produces the plain tar into a bounded _hcs.BytePipe
      -> native importer      reads the pipe without the GIL; parses, hashes the diffID, writes

So reading, hashing and decompressing a layer run on one core while the importer parses
and writes it on another (zlib, zstandard and hashlib release the GIL). The blob's
digest and size are checked when its last byte has been read, before the importer sees
the end of the tar: a mismatch makes the importer's last read raise, so nothing is
committed. A plain tar file given by path, with nothing to check, is the one source that
skips the pipe: the importer reads the file itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ._common import CHUNK
from ._native import _hcs
from ._stream import (
    DEFAULT_MAX_UNCOMPRESSED,
    Compression,
    checked_bytes,
    decompressor,
    detect,
)
from .errors import DigestMismatch, InvalidLayer

#: Uncompressed bytes the read-ahead thread may produce ahead of the importer.
READ_AHEAD = 16 << 20
#: The read-ahead of each import when several run at once (a parallel load or pull): they
#: overlap each other, so each needs less to keep its importer busy, and the load's peak
#: memory stays that of one import (measured: a 4-layer load --jobs 2 peaked at 137 MiB
#: with 16 MiB each, 79 MiB with 4 MiB; a single import is as fast with either).
PARALLEL_READ_AHEAD = 4 << 20


def read_ahead(workers: int) -> int:
    """The read-ahead of each of `workers` imports running at once."""
    return READ_AHEAD if workers <= 1 else PARALLEL_READ_AHEAD


class Readable(Protocol):
    """What a blob is read from: a binary file, a raw stream, a tar member."""

    def read(self, size: int = ..., /) -> bytes | None: ...


class HashingReader(io.RawIOBase):
    """Reads `raw`, counting every byte and, when `hashed`, hashing it (SHA-256): the one
    way the package hashes data while it reads it. The first bytes can be looked at with
    :meth:`peek` without losing them (the compression sniff). `on_bytes` is called with
    the size of each chunk read."""

    def __init__(
        self,
        raw: Readable,
        *,
        hashed: bool = True,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._hash: Any = hashlib.sha256() if hashed else None
        self._on_bytes = on_bytes
        self._pushback = b""
        self.count = 0

    def readable(self) -> bool:
        return True

    def peek(self, n: int) -> bytes:
        while len(self._pushback) < n:
            data = checked_bytes(self._raw.read(n - len(self._pushback)))
            if not data:
                break
            self._account(data)
            self._pushback += data
        return self._pushback[:n]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes: what `raw` gave, not a copy (see ``_stream``'s readers)."""
        if size is None or size < 0:
            return self.readall()
        if self._pushback:
            data, self._pushback = self._pushback[:size], self._pushback[size:]
            return data
        data = checked_bytes(self._raw.read(size))
        self._account(data)
        return data

    def _account(self, data: bytes) -> None:
        if not data:
            return
        self.count += len(data)
        if self._hash is not None:
            self._hash.update(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))

    def stop_hashing(self) -> None:
        self._hash = None

    @property
    def digest(self) -> str | None:
        """``sha256:<hex>`` of what was read so far (None when not hashing)."""
        return f"sha256:{self._hash.hexdigest()}" if self._hash is not None else None

    def drain(self) -> HashingReader:
        """Read to the end (counted and hashed); returns self."""
        while self.readinto(bytearray(CHUNK)):
            pass
        return self


def digest_of(f: Readable) -> tuple[str, int]:
    """(``sha256:<hex>``, size) of everything `f` has left to read."""
    reader = HashingReader(f).drain()
    return str(reader.digest), reader.count


#: Opens a blob for the read-ahead thread; the thread closes what it returns.
BlobOpener = Callable[[], AbstractContextManager[Readable]]


class _Cancelled(Exception):
    """The importer closed the pipe; the read-ahead thread stops."""


class TarFeed:
    """The plain tar of one layer blob, made on a read-ahead thread of its own.

    `open_blob` opens the blob (on that thread). `compression` is what the caller knows
    (a media type); None sniffs the blob's magic bytes once. `blob_digest`
    (``sha256:...``) and `blob_size`, when given, are checked before the importer sees the
    end of the tar; `trust_diff_id` skips hashing a blob that turns out uncompressed (its
    digest is then the diffID, which the importer verifies). A compressed blob may expand
    to `max_uncompressed` bytes. `on_bytes` is called, on the thread, with the size of
    each chunk of blob bytes read. `name` (an archive member) is named in errors.

    `in_place` is where the blob is stored as it is: ``(path, offset, size)`` in a file (a
    plain archive's member). When it is an uncompressed tar whose digest is its diffID, no
    thread is started: the importer reads that part of the file itself, and verifies the
    diffID, which is then the blob's digest; its progress comes through :meth:`imported`.

    The importer reads :meth:`reader` (a ``_hcs.BytePipe``: native code reads it without
    the GIL; or a ``_hcs.FileSlice``); :meth:`finish` then raises what went wrong, if the
    importer did not; the owner calls :meth:`close` in any case.
    """

    def __init__(
        self,
        open_blob: BlobOpener,
        *,
        name: str = "",
        compression: Compression | None = None,
        blob_digest: str | None = None,
        blob_size: int | None = None,
        trust_diff_id: bool = False,
        max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
        on_bytes: Callable[[int], None] | None = None,
        capacity: int = READ_AHEAD,
        in_place: tuple[str, int, int] | None = None,
    ) -> None:
        self.name = name
        self._open_blob = open_blob
        self._compression = compression
        self._blob_digest = blob_digest
        self._blob_size = blob_size
        self._trust_diff_id = trust_diff_id
        self._max_uncompressed = max_uncompressed
        self._on_bytes = on_bytes
        self._error: BaseException | None = None
        self.handed_over = False  # an importer was given the tar
        self.tar_size = 0  # uncompressed bytes produced
        self._reported = 0  # bytes of a slice the importer said it read
        self._slice = self._in_place(in_place) if trust_diff_id else None
        if self._slice is not None:
            return
        self._pipe = _hcs.BytePipe(capacity)
        self._thread = threading.Thread(target=self._run, name=f"winlayer-feed-{name}", daemon=True)
        self._thread.start()

    def _in_place(self, in_place: tuple[str, int, int] | None) -> _hcs.FileSlice | None:
        if in_place is None or self._compression not in (None, "none"):
            return None
        path, offset, size = in_place
        if self._blob_size is not None and size != self._blob_size:
            return None  # the thread reports it
        with open(path, "rb") as f:
            f.seek(offset)
            if detect(f.read(4)) != "none":
                return None
        return _hcs.FileSlice(path, offset, size)

    def reader(self) -> _hcs.BytePipe | _hcs.FileSlice:
        self.handed_over = True
        return self._slice if self._slice is not None else self._pipe

    def imported(self, done: int) -> None:
        """The importer has read `done` bytes (counted here for a slice it reads itself)."""
        if self._slice is not None and self._on_bytes is not None and done > self._reported:
            self._on_bytes(done - self._reported)
            self._reported = done

    def finish(self) -> None:
        """Read what the importer left unread, wait for the thread and raise its error,
        if any: the blob is fully verified when this returns."""
        if self._slice is not None:  # read to its end, and the digest checked, natively
            self.imported(self._slice.size)
            self.tar_size = self._slice.size
            return
        while self._pipe.read(CHUNK):
            pass
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread (closing the pipe makes its next write fail) and wait for it."""
        if self._slice is not None:
            return
        self._pipe.close()
        if self._thread is not threading.current_thread():
            self._thread.join()

    # -- the read-ahead thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._open_blob() as raw:
                self._pump(raw)
        except _Cancelled:
            return
        except BaseException as exc:
            self._error = exc
            self._pipe.fail(exc)
            return
        self._pipe.finish()

    def _pump(self, raw: Readable) -> None:
        hashed = HashingReader(raw, hashed=self._blob_digest is not None, on_bytes=self._on_bytes)
        try:
            compression = self._compression or detect(hashed.peek(4))
            if compression == "none" and self._trust_diff_id:
                hashed.stop_hashing()
            plain: Any = (
                hashed
                if compression == "none"
                else decompressor(hashed, compression, self._max_uncompressed, close_raw=False)
            )
            while data := plain.read(CHUNK):
                self._feed(data)
            while hashed.read(CHUNK):  # bytes after the compressed stream still count
                pass
        except InvalidLayer as exc:
            if not self.name:
                raise
            raise InvalidLayer(f"layer blob: {exc.reason}", self.name, exc.offset) from None
        except (OSError, EOFError, tarfile.TarError) as exc:
            if not self.name:
                raise
            raise InvalidLayer(f"layer blob is unreadable ({exc})", self.name) from None
        self._verify(hashed)

    def _feed(self, data: bytes) -> None:
        try:
            self._pipe.feed(data)
        except BrokenPipeError:
            raise _Cancelled from None
        except ValueError:  # closed before this write began
            raise _Cancelled from None
        self.tar_size += len(data)

    def _verify(self, hashed: HashingReader) -> None:
        if self._blob_size is not None and hashed.count != self._blob_size:
            raise InvalidLayer(
                f"layer blob has {hashed.count} bytes, its descriptor says {self._blob_size}",
                self.name,
            )
        actual = hashed.digest
        if self._blob_digest is not None and actual is not None and actual != self._blob_digest:
            raise DigestMismatch(self._blob_digest, actual, f"blob {self.name!r}")


@contextlib.contextmanager
def plain_tar(
    source: Any, *, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED
) -> Iterator[str | _hcs.BytePipe | _hcs.FileSlice]:
    """What the native importer should read for `source`: a layer tar given by path or
    binary stream (plain, gzip or zstd), or a :class:`TarFeed` (passed through: its owner
    closes it). A plain tar file by path is read by the importer itself; anything else
    comes through a :class:`TarFeed`. Leaving the block raises what the feed found
    wrong, if the importer did not; a caller's stream is never closed."""
    if isinstance(source, TarFeed):
        yield source.reader()
        return
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(os.fspath(source))
        with open(path, "rb") as f:
            compression = detect(f.read(4))
        if compression == "none":
            yield path
            return
        opener: BlobOpener = functools.partial(_open_file, path)
    else:
        compression = None  # sniffed once, on the feed's thread
        opener = functools.partial(_borrowed, source)
    feed = TarFeed(opener, compression=compression, max_uncompressed=max_uncompressed)
    try:
        yield feed.reader()
        feed.finish()
    finally:
        feed.close()


def _open_file(path: str) -> AbstractContextManager[Readable]:
    return open(path, "rb")


def _borrowed(source: Readable) -> AbstractContextManager[Readable]:
    return contextlib.nullcontext(source)  # the caller's stream: not closed
