"""Look inside a Windows layer tar without a layer store.

:func:`list_layer_tar` reads a layer tar (a path or a binary file object; plain, gzip or
zstd, detected by magic bytes) and yields its entries with their Windows metadata decoded:
attributes, owner and group of the security descriptor, the four Windows times, link
targets, alternate data streams, extended attributes and whiteouts. Once every entry has
been yielded, :attr:`LayerTarListing.diff_id` holds the layer's diffID.

The listing runs the same native validation as an import (path rules, PAX records,
hard links, whiteouts), so a tar that lists cleanly is one that imports, and a tar that
would be refused raises the same :class:`~winlayer.errors.InvalidLayer`, naming the entry
and byte offset. Parsing and hashing run in native code with the GIL released; entries
cross into Python in batches, so memory stays bounded whatever the layer's size.

Example::

    with list_layer_tar("layer.tar.gz") as layer:
        for entry in layer:
            print(entry.type, entry.path, entry.owner)
        print(layer.diff_id)

:func:`write_listing_json` writes the same listing as one JSON document (what ``winlayer
--json tar ls`` prints) without making a Python object per entry.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import IO, Any, Literal, NamedTuple

from ._native import _hcs
from ._stream import Compression, Source, open_layer

__all__ = [
    "Account",
    "EntryType",
    "LayerTarEntry",
    "LayerTarListing",
    "filetime_to_datetime",
    "list_layer_tar",
    "write_listing_json",
]

EntryType = Literal["directory", "file", "symlink", "alternate_stream", "hard_link", "whiteout"]

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=timezone.utc)

# FILE_ATTRIBUTE_* bits shown by `mode` (PowerShell's letters).
_MODE_BITS = (
    (0x10, "d"),  # DIRECTORY
    (0x20, "a"),  # ARCHIVE
    (0x01, "r"),  # READONLY
    (0x02, "h"),  # HIDDEN
    (0x04, "s"),  # SYSTEM
    (0x400, "l"),  # REPARSE_POINT
)


@functools.lru_cache(maxsize=256)  # a layer uses a handful of attribute combinations
def _mode(attributes: int) -> str:
    return "".join(c if attributes & bit else "-" for bit, c in _MODE_BITS)


def filetime_to_datetime(ticks: int) -> datetime | None:
    """A Windows FILETIME (100 ns ticks since 1601, UTC) as an aware datetime, truncated
    to microseconds; None when it lies past what datetime can hold (year 9999)."""
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None


class Account(NamedTuple):
    """A security identifier: ``sid`` ("S-1-5-32-544"), its SDDL ``alias`` ("BA", or "")
    and its well-known ``name`` ("BUILTIN\\Administrators", or "")."""

    sid: str
    alias: str
    name: str

    def __str__(self) -> str:
        return self.alias or self.name or self.sid


class LayerTarEntry(NamedTuple):
    """One entry of a layer tar, as an import sees it (an immutable named tuple).

    ``type`` is ``directory``, ``file``, ``symlink`` (a symlink or, with ``mount_point``,
    a junction), ``alternate_stream`` (``path`` is ``<file>:<stream>``), ``hard_link``
    (``link_target`` is the first path of the group) or ``whiteout`` (``path`` is what the
    layer deletes from its parents). ``filetimes`` are the creation, last-access,
    last-write and change times in FILETIME ticks (exact); the ``*_time`` properties give
    them as datetimes. Hard links, whiteouts and streams carry no metadata of their own
    (attributes 0, times 0, no owner).
    """

    path: str
    type: EntryType
    size: int
    attributes: int
    filetimes: tuple[int, int, int, int]
    security_descriptor: bytes
    owner: Account | None
    group: Account | None
    link_target: str
    mount_point: bool
    extended_attributes: tuple[tuple[str, bytes], ...]

    @property
    def creation_time(self) -> datetime | None:
        """When the file was created (UTC); None for a stream, link or whiteout."""
        return self._time(0)

    @property
    def last_access_time(self) -> datetime | None:
        """When the file was last read (UTC); None for a stream, link or whiteout."""
        return self._time(1)

    @property
    def last_write_time(self) -> datetime | None:
        """When the file's data was last written (UTC); None for a stream, link or whiteout."""
        return self._time(2)

    @property
    def change_time(self) -> datetime | None:
        """When the file's metadata last changed (UTC); None for a stream, link or whiteout."""
        return self._time(3)

    @property
    def stream(self) -> str | None:
        """The alternate data stream's name (for ``type == "alternate_stream"``), else None."""
        if self.type != "alternate_stream":
            return None
        return self.path[self.path.rindex("/") + 1 :].partition(":")[2]

    @property
    def mode(self) -> str:
        """The attributes as PowerShell shows them: ``darhsl`` letters or ``-``."""
        return _mode(self.attributes)

    def _time(self, index: int) -> datetime | None:
        if self.type in ("alternate_stream", "hard_link", "whiteout"):
            return None
        return filetime_to_datetime(self.filetimes[index])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings, bytes as hex)."""

        def account(a: Account | None) -> dict[str, str] | None:
            return None if a is None else {"sid": a.sid, "alias": a.alias, "name": a.name}

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat().replace("+00:00", "Z")

        return {
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "attributes": self.attributes,
            "owner": account(self.owner),
            "group": account(self.group),
            "creation_time": iso(self.creation_time),
            "last_access_time": iso(self.last_access_time),
            "last_write_time": iso(self.last_write_time),
            "change_time": iso(self.change_time),
            "link_target": self.link_target or None,
            "mount_point": self.mount_point,
            "stream": self.stream,
            "extended_attributes": {name: value.hex() for name, value in self.extended_attributes},
            "security_descriptor": self.security_descriptor.hex() or None,
        }


class LayerTarListing:
    """The entries of one layer tar, iterated once (see :func:`list_layer_tar`)."""

    def __init__(
        self,
        source: Source,
        *,
        allow_parent_links: bool = False,
        expected_digest: str | None = None,
        batch_size: int = 1024,
    ) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        tar, compression = open_layer(source)
        #: "none", "gzip" or "zstd", detected from the first bytes.
        self.compression: Compression = compression
        self._owned = _opened(tar, source)
        self._started = False
        try:
            self._lister: _hcs.LayerTarLister | None = _hcs.LayerTarLister(
                tar,
                allow_parent_links=allow_parent_links,
                expected_digest=expected_digest or "",
                batch_size=batch_size,
                entry_type=LayerTarEntry,
                account_type=Account,
            )
        except BaseException:
            self.close()
            raise
        self._diff_id: str | None = None
        self._data_size: int | None = None

    @property
    def diff_id(self) -> str | None:
        """``sha256:<hex>`` of the uncompressed tar, once every entry has been read."""
        return self._diff_id

    @property
    def data_size(self) -> int | None:
        """Bytes of file data (main and alternate streams), once every entry has been read."""
        return self._data_size

    def __iter__(self) -> Iterator[LayerTarEntry]:
        if self._started:
            raise RuntimeError("a LayerTarListing can be iterated only once")
        self._started = True
        return self._entries()

    def _entries(self) -> Iterator[LayerTarEntry]:
        lister = self._lister
        if lister is None:
            raise ValueError("the listing is closed")
        try:
            # The native side makes the LayerTarEntry and Account tuples itself (one
            # Account per distinct security descriptor).
            while batch := lister.next_batch():
                yield from batch
            self._diff_id = lister.diff_id
            self._data_size = lister.data_size
        finally:
            self.close()

    def close(self) -> None:
        """Stops the listing and releases the input (files it opened are closed). An
        iteration in progress then raises ValueError."""
        lister, self._lister = self._lister, None
        if lister is not None:
            lister.close()  # the reading thread stops before the input is closed
        owned, self._owned = self._owned, None
        _close(owned)

    def __enter__(self) -> LayerTarListing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def list_layer_tar(
    source: Source,
    *,
    allow_parent_links: bool = False,
    expected_digest: str | None = None,
) -> LayerTarListing:
    """List a layer tar's entries with their Windows metadata, then its diffID.

    ``source`` is a path or a readable binary file object, plain, gzip or zstd. A hard link
    whose target is not in the tar is an :class:`~winlayer.errors.InvalidLayer` unless
    ``allow_parent_links`` (the target may then be in a parent layer). With
    ``expected_digest`` ("sha256:<hex>") a tar that hashes otherwise raises
    :class:`~winlayer.errors.DigestMismatch` at the end of the iteration.
    """
    return LayerTarListing(
        source, allow_parent_links=allow_parent_links, expected_digest=expected_digest
    )


def write_listing_json(
    source: Source,
    out: IO[bytes],
    *,
    allow_parent_links: bool = False,
    expected_digest: str | None = None,
) -> None:
    """Write the listing of a layer tar to the binary stream ``out`` as one JSON document:
    ``{"entries": [...], "compression": ..., "data_size": ..., "diff_id": ...}``, each
    entry the :meth:`LayerTarEntry.to_json` of :func:`list_layer_tar` with sorted keys,
    ASCII only (what ``json.dumps(..., sort_keys=True)`` writes), one entry a line.

    The entries are formatted natively and reach ``out`` in chunks of about 1 MiB. Errors
    are those of :func:`list_layer_tar`, raised after the chunks before them were written:
    write to a spool to keep a failure from leaving part of a document behind.
    """
    tar, compression = open_layer(source)
    try:
        _hcs.write_layer_tar_json(
            tar,
            out,
            compression=compression,
            allow_parent_links=allow_parent_links,
            expected_digest=expected_digest or "",
        )
    finally:
        _close(_opened(tar, source))


def _opened(tar: object, source: Source) -> object:
    """What open_layer opened for ``source`` (to close when done), or None."""
    return tar if tar is not source and not isinstance(tar, str) else None


def _close(stream: object) -> None:
    close = getattr(stream, "close", None)
    if callable(close):
        close()
