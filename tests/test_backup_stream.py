"""The Win32 backup stream codec, FILE_FULL_EA_INFORMATION and REPARSE_DATA_BUFFER:
golden byte vectors (written out by hand from the documented layouts), decoding in
chunks of every size, sparse streams made dense, and malformed input."""

from __future__ import annotations

import base64
import contextlib
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winlayer import InvalidLayer
from winlayer import _hcs as h

# O:BAG:BA from REFERENCE.md section 4.
SD_BA = base64.b64decode("AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAgAgAAAQIAAAAAAAUgAAAAIAIAAA==")


def record(stream_id: int, payload: bytes, name: str = "", attributes: int = 0) -> bytes:
    """One WIN32_STREAM_ID record, written from the layout, independently of the codec."""
    raw_name = name.encode("utf-16-le")
    return (
        struct.pack("<IIQI", stream_id, attributes, len(payload), len(raw_name))
        + raw_name
        + payload
    )


def sparse_block(offset: int, data: bytes) -> bytes:
    return record(9, struct.pack("<q", offset) + data)


# -- golden vectors ---------------------------------------------------------------------


def test_data_record_golden_bytes() -> None:
    got = h.encode_backup_stream([{"path": "Files/a", "type": "file", "data": b"hi"}])
    assert got.hex() == "01000000000000000200000000000000000000006869"


def test_alternate_stream_record_golden_bytes() -> None:
    got = h.encode_backup_stream(
        [
            {"path": "Files/a", "type": "file", "data": b""},
            {"path": "Files/a:s", "type": "alternate_stream", "data": b"x"},
        ]
    )
    main = "0100000000000000000000000000000000000000"
    # id 4, attrs 0, size 1, name ":s:$DATA" = 8 UTF-16 units = 16 bytes
    ads = "0400000000000000010000000000000010000000"
    name = ":s:$DATA".encode("utf-16-le").hex()
    assert got.hex() == main + ads + name + "78"


def test_file_with_every_metadata_stream() -> None:
    eas = [("NAME", b"value")]
    got = h.encode_backup_stream(
        [
            {
                "path": "Files/f.txt",
                "type": "file",
                "security_descriptor": SD_BA,
                "extended_attributes": eas,
                "data": b"hello",
            },
            {
                "path": "Files/f.txt:Zone.Identifier",
                "type": "alternate_stream",
                "data": b"[ZoneTransfer]",
            },
        ]
    )
    ea_payload = struct.pack("<IBBH", 0, 0, 4, 5) + b"NAME\0value"
    want = (
        record(3, SD_BA, attributes=2)  # SECURITY, STREAM_CONTAINS_SECURITY
        + record(2, ea_payload)
        + record(1, b"hello")
        + record(4, b"[ZoneTransfer]", ":Zone.Identifier:$DATA")
    )
    assert got == want


def test_directory_has_no_data_record_and_symlink_has_reparse() -> None:
    assert h.encode_backup_stream([{"path": "Files/d", "type": "directory"}]) == b""
    got = h.encode_backup_stream([{"path": "Files/l", "type": "symlink", "link_target": "x"}])
    assert got == record(8, h.encode_reparse_point("x"))


def test_hard_links_and_whiteouts_have_no_backup_stream() -> None:
    with pytest.raises(ValueError, match="no backup stream"):
        h.encode_backup_stream([{"path": "Files/a", "type": "hard_link", "link_target": "Files/b"}])
    with pytest.raises(ValueError, match="no backup stream"):
        h.encode_backup_stream([{"path": "Files/a", "type": "whiteout"}])


# -- extended attributes ----------------------------------------------------------------


def test_extended_attributes_golden_bytes() -> None:
    got = h.encode_extended_attributes([("A", b"1"), ("BC", b"")])
    # entry 1: 8 + 1 + 1 + 1 = 11 bytes, padded to 12 -> next = 12
    first = "0c0000000001010041003100"
    # entry 2 (last): next 0, no padding
    second = "0000000000020000424300"
    assert got.hex() == first + second
    assert h.decode_extended_attributes(got) == [("A", b"1"), ("BC", b"")]


def test_extended_attributes_round_trip_and_empty() -> None:
    eas: list[tuple[str | bytes, str | bytes]] = [("X" * 255, b"\0" * 1000), ("Y", b"")]
    assert h.decode_extended_attributes(h.encode_extended_attributes(eas)) == [
        ("X" * 255, b"\0" * 1000),
        ("Y", b""),
    ]
    assert h.encode_extended_attributes([]) == b""
    assert h.decode_extended_attributes(b"") == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\0" * 7, "truncated entry header"),
        (struct.pack("<IBBH", 0, 0, 3, 0) + b"AB", "runs past the end"),
        (struct.pack("<IBBH", 0, 0, 2, 0) + b"ABC", "not NUL-terminated"),
        (struct.pack("<IBBH", 0, 0, 0, 0) + b"\0", "empty name"),
        (struct.pack("<IBBH", 6, 0, 1, 0) + b"A\0" + b"\0" * 8, "bad next-entry offset"),
        (struct.pack("<IBBH", 0, 0, 1, 0) + b"A\0" + b"\0\0\0\0", "data after the last entry"),
        (struct.pack("<IBBH", 12, 0, 1, 0) + b"A\0\0\0", "last entry has a next offset"),
    ],
)
def test_malformed_extended_attributes(data: bytes, message: str) -> None:
    with pytest.raises(InvalidLayer, match=message):
        h.decode_extended_attributes(data)


def test_extended_attribute_limits_on_encode() -> None:
    with pytest.raises(ValueError, match="1-255 bytes"):
        h.encode_extended_attributes([("", b"x")])
    with pytest.raises(ValueError, match="1-255 bytes"):
        h.encode_extended_attributes([("N" * 256, b"x")])
    with pytest.raises(ValueError, match="65535"):
        h.encode_extended_attributes([("N", b"x" * 65536)])


# -- reparse points ---------------------------------------------------------------------


def reparse(tag: int, sub: str, prn: str, flags: int | None) -> bytes:
    s, p = sub.encode("utf-16-le"), prn.encode("utf-16-le")
    names = struct.pack("<HHHH", 0, len(s), len(s) + 2, len(p))
    body = (
        names + (struct.pack("<I", flags) if flags is not None else b"") + s + b"\0\0" + p + b"\0\0"
    )
    return struct.pack("<IHH", tag, len(body), 0) + body


def test_relative_symlink_golden() -> None:
    got = h.encode_reparse_point("..\\target.txt")
    assert got == reparse(0xA000000C, "..\\target.txt", "..\\target.txt", 1)
    assert h.decode_reparse_point(got) == ("..\\target.txt", False, True)


def test_absolute_symlink_and_unc_and_junction() -> None:
    assert h.encode_reparse_point("C:\\Windows") == reparse(
        0xA000000C, "\\??\\C:\\Windows", "C:\\Windows", 0
    )
    assert h.encode_reparse_point("\\\\srv\\share") == reparse(
        0xA000000C, "\\??\\UNC\\srv\\share", "\\\\srv\\share", 0
    )
    junction = h.encode_reparse_point("C:\\ProgramData", mount_point=True)
    assert junction == reparse(0xA0000003, "\\??\\C:\\ProgramData", "C:\\ProgramData", None)
    assert h.decode_reparse_point(junction) == ("C:\\ProgramData", True, False)


def test_decode_falls_back_to_substitute_name() -> None:
    data = reparse(0xA0000003, "\\??\\C:\\x", "", None)
    assert h.decode_reparse_point(data) == ("C:\\x", True, False)
    unc = reparse(0xA000000C, "\\??\\UNC\\s\\x", "", 0)
    assert h.decode_reparse_point(unc)[0] == "\\\\s\\x"


def test_reparse_errors() -> None:
    with pytest.raises(InvalidLayer, match="0x80000017 is not a symlink or junction"):
        h.decode_reparse_point(struct.pack("<IHH", 0x80000017, 0, 0))
    good = h.encode_reparse_point("abc")
    with pytest.raises(InvalidLayer, match="data length"):
        h.decode_reparse_point(good[:-2])
    bad_offset = bytearray(good)
    bad_offset[12:14] = struct.pack("<H", 500)  # print name offset far outside
    with pytest.raises(InvalidLayer, match="outside the path buffer"):
        h.decode_reparse_point(bytes(bad_offset))
    with pytest.raises(ValueError, match="junction target must be absolute"):
        h.encode_reparse_point("relative", mount_point=True)
    with pytest.raises(ValueError, match="empty"):
        h.encode_reparse_point("")
    with pytest.raises(ValueError, match="too long"):
        h.encode_reparse_point("C:\\" + "x" * 9000)


# -- decoder ----------------------------------------------------------------------------


def sample_stream() -> bytes:
    eas = struct.pack("<IBBH", 0, 0, 1, 1) + b"E\0v"
    return (
        record(3, SD_BA, attributes=2)
        + record(2, eas)
        + record(1, b"main data")
        + record(7, b"o" * 64)  # OBJECT_ID: skipped
        + record(4, b"alt", ":s1:$DATA")
        + record(4, b"", ":empty:$DATA")
        + record(8, h.encode_reparse_point("C:\\t"))
    )


def expected_events() -> list[tuple[object, ...]]:
    return [
        ("security", SD_BA),
        ("ea", [("E", b"v")]),
        ("data", "", 9, 9, b"main data"),
        ("data", "s1", 3, 3, b"alt"),
        ("data", "empty", 0, 0, b""),
        ("reparse", h.encode_reparse_point("C:\\t")),
    ]


@pytest.mark.parametrize("chunk", [0, 1, 2, 3, 7, 19, 20, 21, 64, 1000])
def test_decoder_gives_the_same_events_in_any_chunking(chunk: int) -> None:
    assert h.decode_backup_stream(sample_stream(), chunk) == expected_events()


def test_encoder_output_decodes_back() -> None:
    entries: list[dict[str, object]] = [
        {
            "path": "Files/f",
            "type": "file",
            "security_descriptor": SD_BA,
            "extended_attributes": [("K", b"v")],
            "data": b"x" * 100_000,
        },
        {"path": "Files/f:a", "type": "alternate_stream", "data": b"alt"},
    ]
    events = h.decode_backup_stream(h.encode_backup_stream(entries), 4096)
    assert events == [
        ("security", SD_BA),
        ("ea", [("K", b"v")]),
        ("data", "", 100_000, 100_000, b"x" * 100_000),
        ("data", "a", 3, 3, b"alt"),
    ]


def test_sparse_stream_is_made_dense() -> None:
    data = (
        record(1, b"", attributes=8)  # sparse DATA: length known only at the end
        + sparse_block(0, b"ab")
        + sparse_block(10, b"cd")
        + sparse_block(20, b"")  # terminator: offset = size
        + record(4, b"z", ":s:$DATA")
    )
    for chunk in (0, 1, 5):
        assert h.decode_backup_stream(data, chunk) == [
            ("data", "", None, 20, b"ab" + b"\0" * 8 + b"cd" + b"\0" * 8),
            ("data", "s", 1, 1, b"z"),
        ]


# The four forms BackupRead gives a sparse file (go-winio backuptar/tar.go lists them):
# empty; no allocated range (a DATA header of size 0, then one terminating block); one
# allocated range (the data inline in the DATA header, no blocks); several ranges (a DATA
# header of size 0, a block per range, then the terminator).
@pytest.mark.parametrize(
    ("stream", "want"),
    [
        (record(1, b"", attributes=8), ("data", "", None, 0, b"")),
        (record(1, b"", attributes=8) + sparse_block(6, b""), ("data", "", None, 6, b"\0" * 6)),
        (record(1, b"inline", attributes=8), ("data", "", 6, 6, b"inline")),
        (
            record(1, b"", attributes=8)
            + sparse_block(1, b"a")
            + sparse_block(4, b"b")
            + sparse_block(6, b""),
            ("data", "", None, 6, b"\0a\0\0b\0"),
        ),
    ],
    ids=["empty", "no-range", "one-range", "ranges"],
)
def test_every_sparse_representation_keeps_the_data(
    stream: bytes, want: tuple[object, ...]
) -> None:
    for chunk in (0, 1, 7):
        got = h.decode_backup_stream(stream + record(4, b"z", ":s:$DATA"), chunk, sparse_limit=6)
        assert got == [want, ("data", "s", 1, 1, b"z")]


def test_sparse_alternate_stream_with_its_data_inline() -> None:
    data = record(4, b"abc", ":s:$DATA", attributes=8)
    assert h.decode_backup_stream(data) == [("data", "s", 3, 3, b"abc")]


def test_sparse_blocks_after_inline_data_are_refused() -> None:
    # go-winio refuses them too ("unknown stream ID 9 after data"): the data would be
    # read as the inline bytes by one reader and as the blocks by another.
    data = record(1, b"inline", attributes=8) + sparse_block(6, b"x")
    with pytest.raises(InvalidLayer, match="sparse block without an open sparse stream") as info:
        h.decode_backup_stream(data)
    assert info.value.offset == 26


def test_sparse_stream_without_terminator_ends_at_last_block() -> None:
    data = record(1, b"", attributes=8) + sparse_block(4, b"xy")
    assert h.decode_backup_stream(data) == [("data", "", None, 6, b"\0\0\0\0xy")]


def test_sparse_blocks_past_the_size_limit() -> None:
    hole = record(1, b"", attributes=8) + sparse_block(2**40, b"x")
    with pytest.raises(InvalidLayer, match="past the stream's size limit of 1000 bytes") as info:
        h.decode_backup_stream(hole, sparse_limit=1000)
    assert info.value.offset == 40
    data = record(1, b"", attributes=8) + sparse_block(998, b"xyz")
    with pytest.raises(InvalidLayer, match="size limit"):
        h.decode_backup_stream(data, sparse_limit=1000)
    assert h.decode_backup_stream(data, sparse_limit=1001)[0][3] == 1001


def test_sparse_alternate_stream_is_made_dense() -> None:
    data = record(4, b"", ":s:$DATA", attributes=8) + sparse_block(2, b"q") + sparse_block(5, b"")
    assert h.decode_backup_stream(data) == [("data", "s", None, 5, b"\0\0q\0\0")]


@pytest.mark.parametrize(
    ("data", "message", "offset"),
    [
        (record(1, b"abc")[:-1], "ends inside a record", 22),
        (record(1, b"")[:10], "ends inside a record", 10),
        (record(42, b""), "unknown stream id 42", 0),
        (record(1, b"") + sparse_block(0, b"x"), "without an open sparse stream", 20),
        (
            record(1, b"", attributes=8) + sparse_block(10, b"xy") + sparse_block(3, b"z"),
            "before the end of the previous block",
            70,
        ),
        (record(1, b"", attributes=8) + record(9, b"\0" * 4), "shorter than its offset", 28),
        (record(4, b"x", "bad"), re.escape("is not ':<name>:$DATA'"), 20),
        (record(4, b"x", ":a:b:$DATA"), "alternate stream name", 20),
        (record(1, b"x", "name"), "data stream with a name", 20),
        (struct.pack("<IIQI", 1, 0, 0, 3), "bad stream name size 3", 16),
        (record(3, b"\0" * ((1 << 20) + 1)), "metadata stream of", 8),
        (record(2, b"\0" * 3), "truncated entry header", 20),
    ],
)
def test_malformed_backup_streams(data: bytes, message: str, offset: int) -> None:
    with pytest.raises(InvalidLayer, match=message) as info:
        h.decode_backup_stream(data)
    assert info.value.offset == offset


# -- hostile bytes: every decoder answers InvalidLayer or a result, never anything else ----


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 40))
def test_decoders_survive_random_bytes(data: bytes, chunk: int) -> None:
    for decode in (
        lambda: h.decode_backup_stream(data, chunk),
        lambda: h.decode_extended_attributes(data),
        lambda: h.decode_reparse_point(data),
        lambda: h.describe_security_descriptor(data),
    ):
        with contextlib.suppress(InvalidLayer):
            decode()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10), st.binary(max_size=40)), max_size=6), st.data())
def test_decoder_survives_mutated_streams(
    records: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = bytearray(b"".join(record(i, p, ":s:$DATA" if i == 4 else "") for i, p in records))
    for _ in range(data.draw(st.integers(0, 4))):
        if stream:
            at = data.draw(st.integers(0, len(stream) - 1))
            stream[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(InvalidLayer):
        h.decode_backup_stream(bytes(stream), data.draw(st.integers(0, 8)))
