"""Layer blobs as uncompressed tar streams.

:func:`open_layer` takes what a user has - a path or a binary file object, plain, gzip or
zstd - detects the compression by its magic bytes (never by file name) and returns what
the native tar reader should read: the path itself for a plain file on disk (read natively,
without the GIL), else a readable binary stream of the uncompressed tar. Non-seekable input
such as a pipe is peeked without losing bytes.

Decompression is streaming and bounded: a gzip or zstd bomb stops with
:class:`~winlayer.errors.InvalidLayer` once the output passes ``max_uncompressed`` bytes,
and corrupt or truncated compressed data raises :class:`InvalidLayer` naming the
compression and the compressed offset.
"""

from __future__ import annotations

import abc
import io
import os
import zlib
from typing import Any, Literal, Protocol, Union

from .errors import InvalidLayer

__all__ = [
    "DEFAULT_MAX_UNCOMPRESSED",
    "Compression",
    "Source",
    "checked_bytes",
    "decompressor",
    "detect",
    "open_layer",
]

Compression = Literal["none", "gzip", "zstd"]

#: Default cap on the uncompressed size of one layer (1 TiB).
DEFAULT_MAX_UNCOMPRESSED = 1 << 40

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_READ_SIZE = 1 << 16
# zstd input is fed this many bytes at a time: one call can expand at most ~32768x
# (RLE blocks), so a bomb holds at most ~32 MiB at once.
_ZSTD_FEED = 1 << 10
# gzip output per call (zlib's max_length bounds it exactly).
_GZIP_OUT = 1 << 20


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


Source = Union[str, "os.PathLike[str]", _Readable]


def detect(head: bytes) -> Compression:
    """The compression of a stream that starts with ``head`` (at least 4 bytes if any)."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC) or _is_zstd_skippable(head):
        return "zstd"
    return "none"


def _is_zstd_skippable(head: bytes) -> bool:
    # Skippable frames (magic 0x184D2A50-5F, little-endian) may open a zstd stream: pzstd
    # writes one first.
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


def open_layer(
    source: Source, *, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED
) -> tuple[str | io.RawIOBase | _Readable, Compression]:
    """Open a layer blob for the native tar reader.

    Returns ``(tar, compression)``. ``tar`` is the path (as ``str``) for an uncompressed
    file given by path, the caller's own object when it can be peeked without consuming
    (``peek()``), else a new stream. A stream this function opened closes what it opened
    when closed; it never closes the caller's object.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(os.fspath(source))
        f = open(path, "rb")  # noqa: SIM115 - ownership passes to the returned stream
        try:
            compression = detect(_read_exact(f, 4))
            if compression == "none":
                f.close()
                return path, "none"
            f.seek(0)
            return decompressor(f, compression, max_uncompressed, close_raw=True), compression
        except BaseException:
            f.close()
            raise

    peek = getattr(source, "peek", None)
    if callable(peek):
        head = checked_bytes(peek(4))[:4]
        if len(head) >= 4 or not head:
            compression = detect(head)
            if compression == "none":
                return source, "none"
            return decompressor(source, compression, max_uncompressed, close_raw=False), compression
    # Read the magic and put it back in front of the rest.
    head = _read_exact(source, 4)
    compression = detect(head)
    prefixed = _Prefixed(head, source)
    if compression == "none":
        return prefixed, "none"
    return decompressor(prefixed, compression, max_uncompressed, close_raw=False), compression


def _read_exact(f: _Readable, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = checked_bytes(f.read(n - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def checked_bytes(chunk: Any) -> bytes:
    """What read() returned, if it is bytes: None (a non-blocking stream with nothing to
    read) or str (a text stream) would otherwise pass for the end of the layer."""
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    if chunk is None:
        raise ValueError("non-blocking streams are not supported (read() returned None)")
    raise TypeError(f"a layer must be a binary stream, read() returned {type(chunk).__name__}")


def decompressor(
    raw: Any, compression: Compression, limit: int, *, close_raw: bool
) -> io.RawIOBase:
    """A reader of the uncompressed data of `raw` (gzip or zstd), at most `limit` bytes."""
    if compression == "gzip":
        return _GzipReader(raw, limit, close_raw)
    return _ZstdReader(raw, limit, close_raw)


class _Prefixed(io.RawIOBase):
    """``head`` followed by the rest of ``raw`` (bytes already read to detect the format)."""

    def __init__(self, head: bytes, raw: _Readable) -> None:
        self._head = memoryview(head)
        self._raw = raw
        self._readinto = getattr(raw, "readinto", None)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        if self._head:
            n = min(len(out), len(self._head))
            out[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._readinto is not None:
            got = self._readinto(out)
            if got is None:
                raise ValueError(
                    "non-blocking streams are not supported (readinto() returned None)"
                )
            return int(got)
        data = checked_bytes(self._raw.read(len(out)))
        out[: len(data)] = data
        return len(data)


class _Decompressing(io.RawIOBase):
    """Common part of the decompressing readers: output buffering, limit, offsets."""

    name: str

    def __init__(self, raw: Any, limit: int, close_raw: bool) -> None:
        self._raw = raw
        self._limit = limit
        self._close_raw = close_raw
        self._pending = b""  # produced; read up to _pending_at
        self._pending_at = 0
        self._out_total = 0  # uncompressed bytes produced
        self._in_total = 0  # compressed bytes read from raw
        self._done = False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed and self._close_raw:
            self._raw.close()
        super().close()

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        data = self.read(len(out))
        out[: len(data)] = data
        return len(data)

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes; the decompressor's own chunk when it fits, not a copy (the
        bytes go on to the hash and the importer: each copy costs as much as hashing)."""
        if size is None or size < 0:
            return self.readall()
        while self._pending_at == len(self._pending) and not self._done:
            produced = self._produce()
            if produced:
                self._out_total += len(produced)
                if self._out_total > self._limit:
                    raise InvalidLayer(
                        f"{self.name} data expands past the limit of {self._limit} "
                        "uncompressed bytes (max_uncompressed)",
                        offset=self._limit,
                    )
                self._pending, self._pending_at = produced, 0
        at, pending = self._pending_at, self._pending
        if at == 0 and len(pending) <= size:
            self._pending = b""
            return pending
        self._pending_at = min(len(pending), at + size)
        return bytes(memoryview(pending)[at : self._pending_at])

    def _read_raw(self) -> bytes:
        data = checked_bytes(self._raw.read(_READ_SIZE))
        self._in_total += len(data)
        return data

    def _corrupt(self, why: str, at: int) -> InvalidLayer:
        # `at` is where the compressed chunk being decoded starts: codecs do not say
        # which byte of a chunk was wrong.
        return InvalidLayer(
            f"corrupt {self.name} data at or after compressed offset {at}: {why}",
            offset=self._out_total,
        )

    @abc.abstractmethod
    def _produce(self) -> bytes:
        """The next chunk of uncompressed data (empty at the end)."""


def gzip_inflater() -> Any:
    """The zlib-compatible module gzip layers are inflated with: zlib-ng's (about 1.8x
    zlib's speed, measured in docs/ARCHITECTURE.md; it releases the GIL as zlib does),
    else the standard library's zlib when zlib-ng is not installed. Imported here, not at
    the top: only gzip layers pay for its import."""
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        return zlib
    return zlib_ng


class _GzipReader(_Decompressing):
    """gzip, any number of members back to back (as ``cat a.gz b.gz``); NUL padding after
    the last member is ignored, as gzip(1) does."""

    name = "gzip"

    def __init__(self, raw: Any, limit: int, close_raw: bool) -> None:
        super().__init__(raw, limit, close_raw)
        self._inflate = gzip_inflater()
        self._dec: Any = None  # the current member's decompressobj, None between members
        self._input = b""  # compressed bytes not yet given to zlib
        self._input_at = 0  # compressed offset of self._input[0]

    def _produce(self) -> bytes:
        if not self._input:
            self._input_at = self._in_total
            self._input = self._read_raw()
            if not self._input:
                if self._dec is not None:
                    raise self._corrupt("the stream ends inside a gzip member", self._in_total)
                self._done = True
                return b""
        if self._dec is None:
            stripped = self._input.lstrip(b"\0")
            self._input_at += len(self._input) - len(stripped)
            self._input = stripped
            if not self._input:
                return b""
            self._dec = self._inflate.decompressobj(wbits=31)
        data = self._input
        try:
            out: bytes = self._dec.decompress(data, _GZIP_OUT)
        except self._inflate.error as e:
            raise self._corrupt(str(e), self._input_at) from None
        if self._dec.eof:
            rest = self._dec.unused_data
            self._dec = None
        else:
            rest = self._dec.unconsumed_tail
        self._input_at += len(data) - len(rest)
        self._input = rest
        return out


class _ZstdReader(_Decompressing):
    """zstd, any number of frames back to back."""

    name = "zstd"

    def __init__(self, raw: Any, limit: int, close_raw: bool) -> None:
        super().__init__(raw, limit, close_raw)
        import zstandard  # here, not at the top: only zstd layers pay for its import

        self._zstd = zstandard
        self._dctx = zstandard.ZstdDecompressor()
        self._dec: Any = None
        self._input = memoryview(b"")
        self._input_at = 0

    def _produce(self) -> bytes:
        if not self._input:
            self._input_at = self._in_total
            self._input = memoryview(self._read_raw())
            if not self._input:
                if self._dec is not None:
                    raise self._corrupt("the stream ends inside a zstd frame", self._in_total)
                self._done = True
                return b""
        if self._dec is None:
            self._dec = self._dctx.decompressobj()
        chunk = self._input[:_ZSTD_FEED]
        at = self._input_at
        self._input = self._input[_ZSTD_FEED:]
        self._input_at += len(chunk)
        try:
            out: bytes = self._dec.decompress(chunk)
        except self._zstd.ZstdError as e:
            raise self._corrupt(str(e), at) from None
        if self._dec.eof:
            rest = self._dec.unused_data
            if rest:
                self._input = memoryview(bytes(rest) + bytes(self._input))
                self._input_at -= len(rest)
            self._dec = None
        return out
