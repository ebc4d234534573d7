"""The deterministic PAX writer: byte layout, tarfile reads it back, round trips."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winlayer import _hcs

BLOCK = 512


def write(entries: list[dict[str, Any]]) -> bytes:
    w = _hcs.TarWriter()
    for e in entries:
        data = e.get("data", b"")
        w.add(
            e["name"],
            e.get("type", "0"),
            size=len(data),
            mode=e.get("mode", 0o100644),
            linkname=e.get("linkname", ""),
            mtime=e.get("mtime", 0),
            atime=e.get("atime"),
            ctime=e.get("ctime"),
            pax=e.get("pax", []),
        )
        w.write(data)
    out = w.finish()
    assert out is not None
    return out


def test_plain_entry_layout_is_canonical_ustar() -> None:
    raw = write([{"name": "Files/a.txt", "data": b"hello", "mtime": 1_600_000_000}])
    assert len(raw) == BLOCK + BLOCK + 2 * BLOCK  # no PAX header needed, two end blocks
    h = raw[:BLOCK]
    assert h[0:11] == b"Files/a.txt"
    assert h[100:108] == b"0100644\0"
    assert h[108:116] == b"0000000\0"  # uid
    assert h[116:124] == b"0000000\0"  # gid
    assert h[124:136] == b"00000000005\0"
    assert h[136:148] == b"%011o\0" % 1_600_000_000
    assert h[156:157] == b"0"
    assert h[257:265] == b"ustar\x0000"
    assert h[265:345] == b"\0" * 32 + b"\0" * 32 + b"0000000\0" * 2  # names empty, dev 0
    assert h[345:] == b"\0" * 167  # no prefix split
    assert raw[BLOCK : BLOCK + 5] == b"hello"
    assert raw[BLOCK + 5 :] == b"\0" * (BLOCK - 5 + 2 * BLOCK)


def test_pax_header_only_when_needed_with_sorted_keys() -> None:
    raw = write(
        [
            {
                "name": "Files/" + "n" * 120,
                "data": b"x",
                "mtime": (1_700_000_000, 500_000_000),
                "atime": (1, 0),
                "ctime": (-2, 750_000_000),
                "pax": [("MSWINDOWS.rawsd", "AQAAgA=="), ("LIBARCHIVE.creationtime", "1.5")],
            }
        ]
    )
    assert raw[156:157] == b"x"
    (entry,) = _hcs.read_tar(io.BytesIO(raw)).entries
    keys = [k for k, _ in entry.pax]
    assert keys == sorted(keys)
    assert dict(entry.pax) == {
        b"LIBARCHIVE.creationtime": b"1.5",
        b"MSWINDOWS.rawsd": b"AQAAgA==",
        b"atime": b"1",
        b"ctime": b"-1.25",
        b"mtime": b"1700000000.5",
        b"path": b"Files/" + b"n" * 120,
    }
    assert entry.ctime == (-2, 750_000_000)


def test_same_input_same_bytes() -> None:
    entries = [
        {"name": "Files", "type": "5", "mode": 0o40000},
        {"name": "Files/ü", "data": b"1" * 700, "pax": [("b", "2"), ("a", "1")]},
        {"name": "Files/l", "type": "2", "linkname": "C:\\target", "mode": 0o120000},
    ]
    assert write(entries) == write(entries)


def test_writer_output_read_back_by_tarfile() -> None:
    entries = [
        {"name": "Files", "type": "5", "mode": 0o40000, "mtime": 5},
        {"name": "Files/日本語.txt", "data": b"data", "mtime": (7, 250_000_000)},
        {"name": "Files/" + "d/" * 80 + "f", "data": b"\0" * 1025},
        {"name": "Files/h", "type": "1", "linkname": "Files/日本語.txt"},
        {"name": "Files/s", "type": "2", "linkname": "../" * 50 + "t"},
        {"name": "Files/x", "data": b"", "pax": [("MSWINDOWS.fileattr", "32")]},
    ]
    raw = write(entries)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == [e["name"] for e in entries]
        assert [m.type for m in members] == [e.get("type", "0").encode() for e in entries]
        assert members[1].mtime == 7.25
        assert tf.extractfile(members[1]).read() == b"data"  # type: ignore[union-attr]
        assert tf.extractfile(members[2]).read() == b"\0" * 1025  # type: ignore[union-attr]
        assert members[3].linkname == "Files/日本語.txt"
        assert members[4].linkname == "../" * 50 + "t"
        assert members[5].pax_headers["MSWINDOWS.fileattr"] == "32"
        assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)


def test_huge_sizes_use_pax_and_base256(tmp_path: Path) -> None:
    w = _hcs.TarWriter()
    w.add("Files/huge", size=2**33)
    head = w.getvalue()
    ustar = head[-BLOCK:]
    assert ustar[124] == 0x80  # base-256 so that non-PAX readers get the size too
    assert int.from_bytes(ustar[125:136], "big") == 2**33
    assert b" size=8589934592\n" in head
    with pytest.raises(ValueError, match="missing 8589934592 bytes"):
        w.finish()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "needs a name"),
        ({"name": "a\0b"}, "NUL"),
        ({"name": "d", "type": "5", "size": 1}, "only regular files carry a payload"),
        ({"name": "c", "type": "3"}, "unsupported tar entry type"),
        ({"name": "l", "type": "2"}, "needs a link name"),
        ({"name": "f", "pax": [("path", "x")]}, "written from the header fields"),
        ({"name": "f", "pax": [("mtime", "1")]}, "written from the header fields"),
        ({"name": "f", "pax": [("a=b", "x")]}, "invalid PAX key"),
        ({"name": "f", "pax": [("", "x")]}, "invalid PAX key"),
        ({"name": "f", "pax": [("k", "1"), ("k", "2")]}, "duplicate PAX record"),
        ({"name": "f", "mode": 0o100000000}, "mode does not fit"),
    ],
)
def test_writer_refuses_bad_entries(kwargs: dict[str, Any], message: str) -> None:
    w = _hcs.TarWriter()
    name = kwargs.pop("name")
    type_ = kwargs.pop("type", "0")
    with pytest.raises(ValueError, match=message):
        w.add(name, type_, **kwargs)


def test_writer_enforces_payload_size_and_finish_once(tmp_path: Path) -> None:
    w = _hcs.TarWriter()
    w.add("f", size=3)
    with pytest.raises(ValueError, match="longer than"):
        w.write(b"four")
    w.write(b"abc")
    w.finish()
    with pytest.raises(ValueError, match="after finish"):
        w.add("g")
    path = tmp_path / "out.tar"
    fw = _hcs.TarWriter(path)
    fw.add("f", size=2, mode=0o100644)
    fw.write(b"hi")
    assert fw.finish() is None
    assert path.read_bytes() == write([{"name": "f", "data": b"hi"}])
    with pytest.raises(ValueError, match="memory"):
        fw.getvalue()


names = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"),
    min_size=1,
    max_size=150,
)
times = st.tuples(st.integers(-(2**40), 2**40), st.integers(0, 999_999_999))
pax_keys = st.text(
    alphabet=st.characters(blacklist_characters="=\0", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=20,
).filter(lambda k: k not in {"path", "linkpath", "size", "mtime", "atime", "ctime"})
pax_keys = pax_keys.filter(lambda k: k not in {"uid", "gid", "uname", "gname"})
entry_strategy = st.fixed_dictionaries(
    {
        "name": names,
        "type": st.sampled_from(["0", "0", "5", "1", "2"]),
        "data": st.binary(max_size=1500),
        "mode": st.integers(0, 0o7777777),
        "linkname": names,
        "mtime": times,
        "atime": st.none() | times,
        "ctime": st.none() | times,
        "pax": st.dictionaries(pax_keys, st.binary(max_size=40), max_size=4).map(
            lambda d: sorted(d.items())
        ),
    }
)


@settings(max_examples=150, deadline=None)
@given(st.lists(entry_strategy, max_size=6))
def test_writer_reader_round_trip(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        if e["type"] != "0":
            e["data"] = b""
        if e["type"] not in ("1", "2"):
            e["linkname"] = ""
    raw = write(entries)
    assert raw == write(entries)
    scan = _hcs.read_tar(io.BytesIO(raw), payloads=True)
    assert len(scan.entries) == len(entries)
    for got, e in zip(scan.entries, entries):  # noqa: B905 - lengths asserted above
        assert got.name == e["name"]
        assert got.type == e["type"]
        assert got.linkname == e["linkname"]
        assert got.mode == e["mode"]
        assert got.mtime == e["mtime"]
        assert got.atime == e["atime"]
        assert got.ctime == e["ctime"]
        assert got.data == (e["data"] if e["type"] == "0" else None)
        extra = [(k.encode(), v) for k, v in e["pax"]]
        assert [r for r in got.pax if r in extra] == sorted(extra)
    # tarfile agrees on names and payloads
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        members = tf.getmembers()
        assert len(members) == len(entries)
