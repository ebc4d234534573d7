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

import hashlib
import io
from collections.abc import Callable
from typing import Any, Protocol

from ._common import CHUNK


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
            data = self._raw.read(n - len(self._pushback))
            if not data:
                break
            self._account(data)
            self._pushback += data
        return self._pushback[:n]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pushback:
            n = min(len(view), len(self._pushback))
            view[:n] = self._pushback[:n]
            self._pushback = self._pushback[n:]
            return n
        data = self._raw.read(len(view)) or b""
        self._account(data)
        view[: len(data)] = data
        return len(data)

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
