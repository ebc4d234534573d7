"""A corpus of malformed tars: each must fail with InvalidLayer naming the entry and the
exact byte offset of the faulty header, record or missing byte."""

from __future__ import annotations

import io

import pytest

from winlayer import _hcs
from winlayer.errors import InvalidLayer

from .test_tar_reader import END, file_entry, pax_header, record, ustar_block

GOOD = file_entry(b"Files/a", b"hello")  # 1024 bytes
ENTRY_B = ustar_block(b"Files/b")


def with_record(raw_records: bytes, name: bytes = b"Files/f") -> bytes:
    return pax_header(raw_records) + ustar_block(name) + END


CASES: list[tuple[str, bytes, str, str, int]] = [
    # id, tar bytes, message fragment, entry, offset
    (
        "bad-checksum",
        GOOD + ustar_block(b"Files/b", checksum=b"000000\0 ") + END,
        "bad header checksum",
        "Files/b",
        1024,
    ),
    (
        "checksum-garbage",
        GOOD + ustar_block(b"Files/b", checksum=b"12x456\0 ") + END,
        "invalid checksum field",
        "Files/b",
        1024,
    ),
    ("truncated-header", GOOD + ENTRY_B[:300], "truncated header", "Files/b", 1024),
    (
        "truncated-payload",
        ustar_block(b"Files/b", size=1000) + b"x" * 600,
        "truncated payload",
        "Files/b",
        1112,
    ),
    (
        "truncated-padding",
        ustar_block(b"Files/b", size=5) + b"hello" + b"\0" * 10,
        "truncated padding",
        "Files/b",
        527,
    ),
    ("missing-end", GOOD, "missing end-of-archive", "", 1024),
    ("empty-stream", b"", "missing end-of-archive", "", 0),
    (
        "truncated-end-block",
        GOOD + b"\0" * 600,
        "truncated end-of-archive block",
        "",
        1536,
    ),
    (
        "header-after-end-block",
        GOOD + b"\0" * 512 + ustar_block(b"hidden") + END,
        "entry header after an end-of-archive block",
        "",
        1536,
    ),
    (
        "pax-length-not-decimal",
        with_record(b"xx path=a\n"),
        "length is not a decimal number",
        "Files/f",
        512,
    ),
    (
        "pax-length-overrun",
        with_record(b"99 path=a\n"),
        "runs past the header",
        "Files/f",
        512,
    ),
    ("pax-length-too-short", with_record(b"3 a\n"), "too short", "Files/f", 512),
    (
        "pax-missing-equals",
        with_record(b"15 pathnoequal\n"),
        "no '='",
        "Files/f",
        512,
    ),
    (
        "pax-missing-newline",
        with_record(b"11 path=ab "),
        "does not end with a newline",
        "Files/f",
        512,
    ),
    (
        "pax-second-record",
        with_record(record("MSWINDOWS.fileattr", "32") + b"6 =xy\n"),
        "empty key",
        "Files/f",
        512 + len(record("MSWINDOWS.fileattr", "32")),
    ),
    (
        "pax-path-bad-utf8",
        with_record(record("path", b"Files/\xff\xfe")),
        "path is not valid UTF-8",
        "Files/f",
        512,
    ),
    (
        "pax-linkpath-overlong-utf8",
        with_record(record("linkpath", b"\xc0\xaf")),
        "linkpath is not valid UTF-8",
        "Files/f",
        512,
    ),
    (
        "pax-path-nul",
        with_record(record("path", b"Files/a\0b")),
        "NUL in path",
        "Files/f",
        512,
    ),
    (
        "pax-size-garbage",
        with_record(record("size", "12a")),
        "malformed PAX size '12a'",
        "Files/f",
        0,
    ),
    (
        "pax-mtime-garbage",
        with_record(record("mtime", "1.2.3")),
        "malformed PAX mtime",
        "Files/f",
        0,
    ),
    (
        "pax-uid-out-of-range",
        with_record(record("uid", "99999999999999999999")),
        "malformed PAX uid",
        "Files/f",
        0,
    ),
    (
        "pax-gnu-sparse",
        with_record(record("GNU.sparse.major", "1")),
        "sparse files are not supported",
        "Files/f",
        512,
    ),
    (
        "pax-too-large",
        GOOD + ustar_block(b"././@PaxHeader", type=b"x", size=2 << 20),
        "exceeds the limit",
        "././@PaxHeader",
        1024,
    ),
    (
        "pax-headers-add-up",
        pax_header(record("comment", "a" * 600_000))
        + pax_header(record("comment", "b" * 600_000))
        + ustar_block(b"Files/f")
        + END,
        "extension headers of one entry exceed",
        "././@PaxHeader",
        512 + 600_064,  # the second PAX header block
    ),
    (
        "pax-globals-add-up",
        pax_header(record("a", "x" * 600_000), type=b"g")
        + pax_header(record("b", "y" * 600_000), type=b"g")
        + GOOD
        + END,
        "PAX global records exceed",
        "Files/a",
        512 + 600_064,
    ),
    (
        "pax-negative-size",
        ustar_block(b"././@PaxHeader", type=b"x", size_field=b"\xff" * 12) + GOOD + END,
        "negative size field",
        "././@PaxHeader",
        0,
    ),
    (
        "pax-truncated",
        ustar_block(b"././@PaxHeader", type=b"x", size=100) + b"30 pa",
        "truncated PAX header",
        "././@PaxHeader",
        517,
    ),
    (
        "pax-then-end",
        GOOD + pax_header(record("path", "Files/x")) + END,
        "extension header not followed by an entry",
        "Files/x",
        2048,
    ),
    (
        "pax-global-path",
        pax_header(record("path", "x"), type=b"g") + GOOD + END,
        "PAX global record 'path' is not supported",
        "Files/a",
        0,
    ),
    (
        "gnu-longname-bad-utf8",
        ustar_block(b"././@LongLink", type=b"L", size=3) + b"\xff\xfe\0".ljust(512, b"\0") + GOOD,
        "GNU long name is not valid UTF-8",
        "Files/a",
        0,
    ),
    (
        "size-garbage",
        GOOD + ustar_block(b"Files/b", size_field=b"0000000001x\0") + END,
        "invalid size field",
        "Files/b",
        1024,
    ),
    (
        "mode-garbage",
        GOOD + ustar_block(b"Files/b", mode_field=b"abc\0\0\0\0\0") + END,
        "invalid mode field",
        "Files/b",
        1024,
    ),
    (
        "mtime-garbage",
        ustar_block(b"Files/b", mtime_field=b"0000000+000\0") + END,
        "invalid mtime field",
        "Files/b",
        0,
    ),
    (
        "base256-out-of-range",
        ustar_block(b"Files/b", size_field=b"\x80" + b"\xff" * 11) + END,
        "out-of-range size field",
        "Files/b",
        0,
    ),
    (
        "base256-negative-size",
        ustar_block(b"Files/b", size_field=b"\xff" * 12) + END,
        "negative size field",
        "Files/b",
        0,
    ),
    (
        "base256-bad-marker",
        ustar_block(b"Files/b", size_field=b"\x81" + b"\0" * 11) + END,
        "malformed base-256 size field",
        "Files/b",
        0,
    ),
    ("empty-name", GOOD + ustar_block(b"") + END, "empty name", "", 1024),
    (
        "symlink-without-target",
        ustar_block(b"Files/l", type=b"2") + END,
        "empty link target",
        "Files/l",
        0,
    ),
]

UNSUPPORTED = [
    (b"3", "character device"),
    (b"4", "block device"),
    (b"6", "FIFO"),
    (b"S", "GNU sparse file"),
    (b"D", "GNU dump directory"),
    (b"V", "GNU volume label"),
    (b"M", "GNU multi-volume continuation"),
    (b"Z", "unknown type"),
]


@pytest.mark.parametrize(
    ("raw", "message", "entry", "offset"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_tar_gives_clear_error(raw: bytes, message: str, entry: str, offset: int) -> None:
    for read in (
        lambda: _hcs.read_tar(io.BytesIO(raw), payloads=True, tar_split=True),
        lambda: _hcs.tar_digest(io.BytesIO(raw)),
    ):
        with pytest.raises(InvalidLayer) as exc:
            read()
        assert message in exc.value.reason
        assert (exc.value.entry, exc.value.offset) == (entry, offset)
        assert message in str(exc.value)


@pytest.mark.parametrize(("type", "what"), UNSUPPORTED, ids=[t.decode() for t, _ in UNSUPPORTED])
def test_unsupported_entry_types_are_rejected(type: bytes, what: str) -> None:
    raw = GOOD + ustar_block(b"Files/dev", type=type) + END
    with pytest.raises(InvalidLayer) as exc:
        _hcs.read_tar(io.BytesIO(raw))
    assert exc.value.reason == f"unsupported entry type '{type.decode()}' ({what})"
    assert (exc.value.entry, exc.value.offset) == ("Files/dev", 1024)


def test_trailing_data_is_bounded_only_when_recording_tar_split() -> None:
    raw = GOOD + END + b"\x01" * (1 << 20) + b"\x01" * 1000
    assert _hcs.read_tar(io.BytesIO(raw)).size == len(raw)  # no record: any length
    with pytest.raises(InvalidLayer) as exc:
        _hcs.read_tar(io.BytesIO(raw), tar_split=True)
    assert "non-zero data after the end of the archive" in exc.value.reason
    assert exc.value.offset == len(GOOD + END)
    zeros = GOOD + END + b"\0" * (8 << 20)  # zero padding is counted, not stored
    assert _hcs.read_tar(io.BytesIO(zeros), tar_split=True).tar_split is not None


def test_entries_before_the_error_are_delivered() -> None:
    raw = GOOD + ustar_block(b"Files/b", checksum=b"000000\0 ") + END
    reader = _hcs.TarReader(io.BytesIO(raw))
    first = next(reader)
    assert first.name == "Files/a"
    assert reader.read() == b"hello"
    with pytest.raises(InvalidLayer, match="bad header checksum"):
        next(reader)


def test_signed_checksum_is_accepted() -> None:
    # Old writers summed the header as signed chars; a name byte >= 0x80 tells them apart.
    block = bytearray(ustar_block(b"Files/\xe9"))
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b >= 128 else b for b in block)
    block[148:156] = b"%06o\0 " % signed
    (entry,) = _hcs.read_tar(io.BytesIO(bytes(block) + END)).entries
    assert entry.name == "Files/\udce9"  # not UTF-8: surrogate-escaped
