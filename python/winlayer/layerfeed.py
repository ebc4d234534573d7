"""Feeding one layer blob of an image archive to :meth:`Driver.apply_diff`.

A :class:`LayerFeed` reads the blob on its own thread: it counts and (when needed) hashes
the blob bytes as they come out of the archive, decompresses them (gzip or zstd, found by
their magic bytes), and hands the uncompressed tar to the importer through a bounded
buffer. So reading, hashing and decompressing a layer run on one core while the driver
parses and writes it on another; zlib, zstandard and hashlib release the GIL.

The blob's digest and size are checked when its last byte has been read, *before* the
importer sees the end of the tar: a mismatch makes the importer's last read raise, so the
driver aborts the import and commits nothing.
"""

from __future__ import annotations

import io
import tarfile
import threading
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from ._pipeline import HashingReader
from ._stream import DEFAULT_MAX_UNCOMPRESSED, open_layer
from .errors import DigestMismatch, InvalidLayer

CHUNK = 1 << 20
DEFAULT_BUFFER = 32 << 20  # uncompressed bytes a feed may read ahead of its importer

BlobOpener = Callable[[], IO[bytes]]


class _Cancelled(Exception):
    """The importer closed the feed; the reader thread stops."""


class LayerFeed(io.RawIOBase):
    """The uncompressed tar of one layer blob, read ahead on a thread (a binary reader).

    `open_blob` opens the blob; `blob_digest` (``sha256:...``) and `blob_size`, when
    given, are checked. `trust_diff_id` skips hashing a blob that turns out uncompressed:
    its digest is then the diffID, which the importer verifies itself. A compressed blob
    may expand to `max_uncompressed` bytes (the driver's ``max_layer_size``). `on_bytes`
    is called (on the feed's thread) with the count of each chunk of blob bytes read.
    """

    def __init__(
        self,
        name: str,
        open_blob: BlobOpener,
        *,
        blob_digest: str | None = None,
        blob_size: int | None = None,
        trust_diff_id: bool = False,
        max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
        on_bytes: Callable[[int], None] | None = None,
        buffer_bytes: int = DEFAULT_BUFFER,
    ) -> None:
        super().__init__()
        self.name = name
        self._open_blob = open_blob
        self._blob_digest = blob_digest
        self._blob_size = blob_size
        self._trust_diff_id = trust_diff_id
        self._max_uncompressed = max_uncompressed
        self._on_bytes = on_bytes or (lambda _n: None)
        self._limit = buffer_bytes
        self._cond = threading.Condition()
        self._chunks: deque[memoryview] = deque()
        self._buffered = 0
        self._done = False  # the reader thread has put its last chunk
        self._error: BaseException | None = None
        self._cancelled = False
        self.started_reading = False  # the importer asked for data
        self.tar_size = 0  # uncompressed bytes produced
        self._thread = threading.Thread(target=self._run, name=f"winlayer-feed-{name}", daemon=True)
        self._thread.start()

    # -- importer side --------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._cond:
            self.started_reading = True
            while not self._chunks and not self._done:
                self._cond.wait()
            if not self._chunks:
                if self._error is not None:
                    raise self._error
                return 0
            chunk = self._chunks[0]
            n = min(len(view), len(chunk))
            view[:n] = chunk[:n]
            if n == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[n:]
            self._buffered -= n
            self._cond.notify_all()
            return n

    def finish(self) -> None:
        """Read what the importer left unread and raise the feed's error, if any: the
        blob is fully verified when this returns."""
        while self.readinto(bytearray(CHUNK)):
            pass
        self._thread.join()

    def close(self) -> None:
        """Stop the reader thread (it closes the blob) and wait for it."""
        with self._cond:
            self._cancelled = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        super().close()

    # -- reader thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._open_blob() as raw:
                self._pump(raw)
        except _Cancelled:
            pass
        except BaseException as exc:
            with self._cond:
                self._error = exc
                self._done = True
                self._cond.notify_all()

    def _pump(self, raw: IO[bytes]) -> None:
        counter = HashingReader(raw, hashed=self._blob_digest is not None, on_bytes=self._on_bytes)
        try:
            plain: Any
            plain, compression = open_layer(counter, max_uncompressed=self._max_uncompressed)
            if compression == "none" and self._trust_diff_id:
                counter.stop_hashing()
            while data := plain.read(CHUNK):
                self._put(data)
            while counter.read(CHUNK):  # bytes after the compressed stream still count
                pass
        except InvalidLayer as exc:
            raise InvalidLayer(f"layer blob: {exc.reason}", self.name, exc.offset) from None
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise InvalidLayer(f"layer blob is unreadable ({exc})", self.name) from None
        self._verify(counter)
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def _verify(self, counter: HashingReader) -> None:
        if self._blob_size is not None and counter.count != self._blob_size:
            raise InvalidLayer(
                f"layer blob has {counter.count} bytes, its descriptor says {self._blob_size}",
                self.name,
            )
        actual = counter.digest
        if self._blob_digest is not None and actual is not None and actual != self._blob_digest:
            raise DigestMismatch(self._blob_digest, actual, f"blob {self.name!r}")

    def _put(self, data: bytes) -> None:
        with self._cond:
            while self._buffered >= self._limit and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise _Cancelled
            self._chunks.append(memoryview(data))
            self._buffered += len(data)
            self.tar_size += len(data)
            self._cond.notify_all()
