"""Layer tar <-> Windows layer entries: every kind of entry and PAX record, defaults,
errors (entry + offset, writer aborted, never committed), the digest check, and the
canonical export."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import tarfile
from typing import Any

import pytest

from winlayer import DigestMismatch, InvalidLayer
from winlayer import _hcs as h
from winlayer.layertar import (
    Account,
    LayerTarEntry,
    LayerTarListing,
    filetime_to_datetime,
    list_layer_tar,
)

from .test_tar_reader import END, pax_header, record, ustar_block

SD_BA = base64.b64decode("AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAgAgAAAQIAAAAAAAUgAAAAIAIAAA==")
SD_BU = base64.b64decode("AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA==")
EPOCH_TICKS = 116444736000000000  # 1970-01-01 in FILETIME ticks
T0 = 1_600_000_000  # a Unix time used by most entries


def ticks(sec: int, nsec: int = 0) -> int:
    return EPOCH_TICKS + sec * 10_000_000 + nsec // 100


def build(*entries: dict[str, Any]) -> bytes:
    """A tar written by the tar codec's writer: dicts with name, type ('0', '1', '2',
    '5'), data, linkname, mtime, atime, ctime, pax (list of pairs)."""
    w = h.TarWriter()
    for e in entries:
        kind = e.get("type", "0")
        data = e.get("data", b"")
        mode = {"5": 0o40000, "2": 0o120000}.get(kind, 0o100000)
        w.add(
            e["name"],
            kind,
            size=len(data),
            mode=e.get("mode", mode),
            linkname=e.get("linkname", ""),
            mtime=e.get("mtime", T0),
            atime=e.get("atime"),
            ctime=e.get("ctime"),
            pax=e.get("pax", []),
        )
        if data:
            w.write(data)
    out = w.finish()
    assert out is not None
    return out


FILES = {"name": "Files/", "type": "5"}


def listing(tar: bytes, **options: Any) -> list[LayerTarEntry]:
    return list(list_layer_tar(io.BytesIO(tar), **options))


def one(tar: bytes) -> LayerTarEntry:
    entries = listing(tar)
    assert entries[0].path == "Files"
    return entries[1]


def error(tar: bytes, **options: Any) -> InvalidLayer:
    with pytest.raises(InvalidLayer) as info:
        listing(tar, **options)
    return info.value


# -- entries and records ----------------------------------------------------------------


def test_defaults_without_windows_records() -> None:
    entries = listing(build(FILES, {"name": "Files/a.txt", "data": b"abc"}))
    d, f = entries
    assert (d.path, d.type, d.attributes, d.size) == ("Files", "directory", 16, 0)
    assert (f.path, f.type, f.attributes, f.size) == ("Files/a.txt", "file", 32, 3)
    assert f.filetimes == (ticks(T0),) * 4  # creation, access and change default to mtime
    assert f.security_descriptor == b""
    assert f.owner is None
    assert f.group is None
    assert f.last_write_time is not None
    assert f.last_write_time.isoformat() == "2020-09-13T12:26:40+00:00"
    assert f.mode == "-a----"
    assert d.mode == "d-----"


def test_every_record_of_a_file() -> None:
    tar = build(
        FILES,
        {
            "name": "Files/f.dll",
            "data": b"MZ",
            "mtime": (1588262400, 123456789),
            "atime": (1588262401, 5),
            "ctime": (-2, 750000000),  # -1.25 s
            "pax": [
                ("MSWINDOWS.fileattr", "39"),  # READONLY | HIDDEN | SYSTEM | ARCHIVE
                ("MSWINDOWS.rawsd", base64.b64encode(SD_BA).decode()),
                ("MSWINDOWS.xattr.$KERNEL.PURGE.ESBCACHE", base64.b64encode(b"\x01\x02").decode()),
                ("MSWINDOWS.xattr.USER", base64.b64encode(b"").decode()),
                ("LIBARCHIVE.creationtime", "1234567890.5"),
                ("SCHILY.unknown", "ignored"),
            ],
        },
    )
    f = one(tar)
    assert f.attributes == 39
    assert f.mode == "-arhs-"
    assert f.filetimes == (
        ticks(1234567890, 500000000),
        ticks(1588262401, 5),  # 5 ns is below a tick: truncated
        ticks(1588262400, 123456700),
        EPOCH_TICKS - 12_500_000,
    )
    assert f.security_descriptor == SD_BA
    assert f.owner == Account("S-1-5-32-544", "BA", "BUILTIN\\Administrators")
    assert f.group == f.owner
    assert str(f.owner) == "BA"
    assert f.extended_attributes == (("$KERNEL.PURGE.ESBCACHE", b"\x01\x02"), ("USER", b""))
    assert f.creation_time is not None
    assert f.creation_time.isoformat() == "2009-02-13T23:31:30.500000+00:00"


def raw_tar(*blocks: bytes) -> bytes:
    """A tar from hand-made blocks (for what the codec's own writer refuses to write)."""
    return ustar_block(b"Files/", type=b"5") + b"".join(blocks) + END


def test_later_xattr_record_overrides() -> None:
    pax = record("MSWINDOWS.xattr.A", "AQ==") + record("MSWINDOWS.xattr.A", "Ag==")
    tar = raw_tar(pax_header(pax), ustar_block(b"Files/a"))
    assert one(tar).extended_attributes == (("A", b"\x02"),)


def test_symlink_without_a_target() -> None:
    err = error(raw_tar(ustar_block(b"Files/l", type=b"2")))
    assert "empty link target" in err.reason
    assert (err.entry, err.offset) == ("Files/l", 512)


def test_legacy_sddl_record() -> None:
    sddl = "O:SYG:SYD:(A;OICI;FA;;;SY)(A;;0x1200a9;;;BU)"
    f = one(build(FILES, {"name": "Files/a", "pax": [("MSWINDOWS.sd", sddl)]}))
    assert f.owner == Account("S-1-5-18", "SY", "NT AUTHORITY\\SYSTEM")
    assert f.security_descriptor == h.sddl_to_security_descriptor(sddl)
    # rawsd wins over the legacy form
    both = [("MSWINDOWS.sd", sddl), ("MSWINDOWS.rawsd", base64.b64encode(SD_BU).decode())]
    assert one(build(FILES, {"name": "Files/a", "pax": both})).security_descriptor == SD_BU


def test_symlink_becomes_reparse_data() -> None:
    calls, err = h.trace_layer_import(
        io.BytesIO(
            build(
                FILES,
                {"name": "Files/rel", "type": "2", "linkname": "../target/file.txt"},
                {"name": "Files/abs", "type": "2", "linkname": "C:\\Windows\\notepad.exe"},
            )
        )
    )
    assert err is None
    entries = listing(
        build(FILES, {"name": "Files/rel", "type": "2", "linkname": "../target/file.txt"})
    )
    rel = entries[1]
    assert (rel.type, rel.link_target, rel.mount_point) == (
        "symlink",
        "..\\target\\file.txt",
        False,
    )
    assert rel.attributes == 0x420  # ARCHIVE | REPARSE_POINT
    assert rel.mode == "-a---l"
    assert [c[:3] for c in calls[1:3]] == [
        ("add", "Files/rel", "symlink"),
        ("add", "Files/abs", "symlink"),
    ]


def test_junction_with_mountpoint_record() -> None:
    j = one(
        build(
            FILES,
            {
                "name": "Files/Documents and Settings",
                "type": "2",
                "linkname": "C:\\Users",
                "pax": [("MSWINDOWS.mountpoint", "1"), ("MSWINDOWS.fileattr", "9238")],
            },
        )
    )
    assert (j.type, j.link_target, j.mount_point) == ("symlink", "C:\\Users", True)
    assert j.attributes == 9238  # 0x2416: DIRECTORY | REPARSE_POINT | ... as recorded


def test_alternate_data_streams_follow_their_file() -> None:
    tar = build(
        FILES,
        {"name": "Files/a.txt", "data": b"main"},
        {"name": "Files/a.txt:Zone.Identifier", "data": b"[ZoneTransfer]"},
        {"name": "Files/a.txt:second", "data": b""},
        {"name": "Files/dir/", "type": "5"},
        {"name": "Files/dir:dirstream", "data": b"x"},
    )
    entries = listing(tar)
    s = entries[2]
    assert (s.type, s.path, s.size, s.stream) == (
        "alternate_stream",
        "Files/a.txt:Zone.Identifier",
        14,
        "Zone.Identifier",
    )
    assert s.last_write_time is None
    assert entries[3].stream == "second"
    assert entries[5].stream == "dirstream"
    calls, err = h.trace_layer_import(io.BytesIO(tar))
    assert err is None
    ops = [(c[0], c[1], c[3]) for c in calls]
    assert ops[1:6] == [
        ("add", "Files/a.txt", b""),
        ("write", "", b"main"),
        ("add", "Files/a.txt:Zone.Identifier", b""),
        ("write", "", b"[ZoneTransfer]"),
        ("add", "Files/a.txt:second", b""),
    ]


@pytest.mark.parametrize(
    "entries",
    [
        [{"name": "Files/a.txt:s", "data": b"x"}],
        [{"name": "Files/b.txt"}, {"name": "Files/a.txt:s"}],
        [
            {"name": "Files/a.txt"},
            {"name": "Files/l", "type": "2", "linkname": "x"},
            {"name": "Files/a.txt:s"},
        ],
        [{"name": "Files/A.TXT"}, {"name": "Files/a.txt:s"}],  # must name its file exactly
    ],
)
def test_stream_not_right_after_its_file(entries: list[dict[str, Any]]) -> None:
    err = error(build(FILES, *entries))
    assert "must follow its file" in err.reason
    assert err.entry.endswith(":s")


def test_hard_links() -> None:
    tar = build(
        FILES,
        {"name": "Files/a", "data": b"x"},
        {"name": "Files/b", "type": "1", "linkname": "Files/a"},
        {"name": "Files/c", "type": "1", "linkname": "Files/B"},  # a link to a link, any case
    )
    b, c = listing(tar)[2:]
    assert (b.type, b.path, b.link_target, b.size) == ("hard_link", "Files/b", "Files/a", 0)
    assert c.link_target == "Files/B"
    calls, err = h.trace_layer_import(io.BytesIO(tar))
    assert err is None
    assert [c[:3] for c in calls if c[0] == "add_link"] == [
        ("add_link", "Files/b", "Files/a"),
        ("add_link", "Files/c", "Files/B"),
    ]


def test_whiteouts() -> None:
    tar = build(
        FILES, {"name": "Files/dir/", "type": "5"}, {"name": "Files/dir/.wh.gone.txt", "mode": 0}
    )
    w = listing(tar)[2]
    assert (w.type, w.path) == ("whiteout", "Files/dir/gone.txt")
    calls, _ = h.trace_layer_import(io.BytesIO(tar))
    assert ("remove", "Files/dir/gone.txt") in [c[:2] for c in calls]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"pax": [("MSWINDOWS.fileattr", "abc")]}, "MSWINDOWS.fileattr is not a 32-bit decimal"),
        ({"pax": [("MSWINDOWS.fileattr", "4294967296")]}, "MSWINDOWS.fileattr is not a 32-bit"),
        ({"pax": [("MSWINDOWS.fileattr", "-1")]}, "MSWINDOWS.fileattr is not a 32-bit"),
        ({"pax": [("MSWINDOWS.fileattr", "48")]}, "a file with FILE_ATTRIBUTE_DIRECTORY"),
        ({"pax": [("MSWINDOWS.rawsd", "not base64!")]}, "MSWINDOWS.rawsd is not valid base64"),
        ({"pax": [("MSWINDOWS.rawsd", "AQA=")]}, "MSWINDOWS.rawsd: malformed security descriptor"),
        ({"pax": [("MSWINDOWS.sd", "O:BAS:(AU;;FA;;;WD)")]}, "SACLs (S:) are not supported"),
        ({"pax": [("MSWINDOWS.sd", "O:DA")]}, "names a domain account"),
        ({"pax": [("MSWINDOWS.xattr.N", "%%%%")]}, "MSWINDOWS.xattr.N is not valid base64"),
        ({"pax": [("MSWINDOWS.xattr." + "N" * 256, "AA==")]}, "name longer than 255 bytes"),
        ({"pax": [("MSWINDOWS.xattr.N", base64.b64encode(bytes(65536)).decode())]}, "65535"),
        (
            {"pax": [("LIBARCHIVE.creationtime", "yesterday")]},
            "LIBARCHIVE.creationtime is not a PAX time",
        ),
        ({"pax": [("LIBARCHIVE.creationtime", ".5")]}, "LIBARCHIVE.creationtime is not a PAX"),
        ({"pax": [("LIBARCHIVE.creationtime", "+-5")]}, "LIBARCHIVE.creationtime is not a PAX"),
        ({"pax": [("MSWINDOWS.fileattr", "+32")]}, "MSWINDOWS.fileattr is not a 32-bit decimal"),
        (
            {"type": "5", "pax": [("MSWINDOWS.fileattr", "32")]},
            "a directory without FILE_ATTRIBUTE_DIRECTORY",
        ),
        (
            {"type": "2", "linkname": "rel", "pax": [("MSWINDOWS.mountpoint", "")]},
            "junction target must be absolute",
        ),
        (
            {
                "type": "2",
                "linkname": "C:\\x",
                "pax": [("MSWINDOWS.mountpoint", ""), ("MSWINDOWS.fileattr", "32")],
            },
            "a junction without FILE_ATTRIBUTE_DIRECTORY",
        ),
    ],
)
def test_bad_records_name_the_entry_and_its_offset(entry: dict[str, Any], message: str) -> None:
    tar = build(FILES, {"name": "Files/ok"}, {"name": "Files/bad", **entry})
    err = error(tar)
    assert message in err.reason
    assert err.entry.rstrip("/") == "Files/bad"
    # the entry's first header block (its PAX header when it has one)
    assert err.offset == 1024


def test_whiteout_with_data() -> None:
    assert "carries data" in error(build(FILES, {"name": "Files/.wh.x", "data": b"1"})).reason


# -- the import driver: abort, commit, digest -------------------------------------------


def test_import_commits_with_diff_id_size_and_tar_split() -> None:
    tar = build(FILES, {"name": "Files/a", "data": b"12345"}, {"name": "Files/a:s", "data": b"67"})
    calls, err = h.trace_layer_import(io.BytesIO(tar))
    assert err is None
    op, diff_id, size, split = calls[-1]
    assert op == "commit"
    assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert size == "7"
    total, digest, payloads = h.tar_split_info(split)
    assert (total, digest) == (len(tar), diff_id)
    assert [(p[1], p[2]) for p in payloads] == [("Files/a", 5), ("Files/a:s", 2)]
    assert "abort" not in [c[0] for c in calls]


def test_writer_error_gets_the_entry_and_offset_and_the_writer_is_aborted() -> None:
    tar = build(
        FILES,
        {"name": "Files/a"},
        {"name": "Files/link", "type": "1", "linkname": "Files/elsewhere"},
    )
    calls, err = h.trace_layer_import(io.BytesIO(tar))
    assert isinstance(err, InvalidLayer)
    assert err.reason == "hard link target is in no parent layer"
    assert (err.entry, err.offset) == ("Files/link", 1024)
    assert [c[0] for c in calls][-2:] == ["add_link", "abort"]
    assert "commit" not in [c[0] for c in calls]


def test_invalid_entry_aborts_and_never_commits() -> None:
    tar = build(FILES, {"name": "Files/a", "data": b"x"}, {"name": "root/evil"})
    calls, err = h.trace_layer_import(io.BytesIO(tar))
    assert isinstance(err, InvalidLayer)
    assert err.entry == "root/evil"
    assert [c[0] for c in calls] == ["add", "add", "write", "abort"]


def test_truncated_tar_aborts() -> None:
    tar = build(FILES, {"name": "Files/a", "data": b"x" * 2000})
    calls, err = h.trace_layer_import(io.BytesIO(tar[:1500]))
    assert isinstance(err, InvalidLayer)
    assert calls[-1][0] == "abort"
    assert "commit" not in [c[0] for c in calls]


def test_digest_is_checked_before_commit() -> None:
    tar = build(FILES, {"name": "Files/a", "data": b"x"})
    good = "sha256:" + hashlib.sha256(tar).hexdigest()
    calls, err = h.trace_layer_import(io.BytesIO(tar), expected_digest=good)
    assert err is None
    assert calls[-1][0] == "commit"
    bad = "sha256:" + "0" * 64
    calls, err = h.trace_layer_import(io.BytesIO(tar), expected_digest=bad)
    assert isinstance(err, DigestMismatch)
    assert (err.expected, err.actual) == (bad, good)
    assert calls[-1][0] == "abort"
    assert "commit" not in [c[0] for c in calls]
    calls, err = h.trace_layer_import(io.BytesIO(tar), expected_digest="sha256:XYZ")
    assert isinstance(err, ValueError)
    assert "64 lowercase hex" in str(err)
    assert calls == []  # refused before reading anything


def test_listing_checks_the_expected_digest_at_the_end() -> None:
    tar = build(FILES)
    with pytest.raises(DigestMismatch):
        listing(tar, expected_digest="sha256:" + "1" * 64)
    listed = list_layer_tar(
        io.BytesIO(tar), expected_digest="sha256:" + hashlib.sha256(tar).hexdigest()
    )
    assert [e.path for e in listed] == ["Files"]
    assert listed.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()


def test_listing_is_iterated_once_and_closes_what_it_opened(tmp_path: Any) -> None:
    path = tmp_path / "layer.tar"
    path.write_bytes(build(FILES))
    listed = list_layer_tar(path)
    assert [e.path for e in listed] == ["Files"]
    assert listed.diff_id is not None
    assert listed.data_size == 0
    with pytest.raises(RuntimeError, match="only once"):
        iter(listed)
    caller_stream = io.BytesIO(build(FILES))
    with list_layer_tar(caller_stream) as layer:
        pass
    assert layer.diff_id is None  # closed before it was read
    assert not caller_stream.closed  # the caller's object is never closed


def test_filetime_to_datetime_limits() -> None:
    assert filetime_to_datetime(0) is not None
    assert filetime_to_datetime(2**63 - 1) is None  # year 30828: past datetime's range


# -- export -----------------------------------------------------------------------------


def sample_entries() -> list[dict[str, object]]:
    times = (ticks(1234567890, 500000000), ticks(T0, 100), ticks(T0, 123456700), ticks(T0 + 1))
    return [
        {
            "path": "Files",
            "type": "directory",
            "attributes": 16,
            "times": times,
            "security_descriptor": SD_BA,
        },
        {"path": "Files/dir", "type": "directory", "attributes": 16, "times": times},
        {"path": "Files/dir/gone", "type": "whiteout"},
        {
            "path": "Files/dir/file.txt",
            "type": "file",
            "attributes": 33,
            "times": times,
            "security_descriptor": SD_BU,
            "extended_attributes": [("EA1", b"\x00\x01")],
            "data": b"hello",
        },
        {"path": "Files/dir/file.txt:Zone.Identifier", "type": "alternate_stream", "data": b"zone"},
        {"path": "Files/dir/link", "type": "hard_link", "link_target": "Files/dir/file.txt"},
        {
            "path": "Files/dir/sym",
            "type": "symlink",
            "attributes": 0x420,
            "times": times,
            "link_target": "..\\x",
        },
        {
            "path": "Files/junction",
            "type": "symlink",
            "attributes": 0x410,
            "times": times,
            "link_target": "C:\\Users",
            "mount_point": True,
        },
    ]


def test_export_writes_the_canonical_records() -> None:
    tar = h.export_layer_entries(sample_entries())
    assert tar == h.export_layer_entries(sample_entries())  # deterministic
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        members = t.getmembers()
        names = [m.name for m in members]
        assert names == [
            "Files",
            "Files/dir",
            "Files/dir/.wh.gone",
            "Files/dir/file.txt",
            "Files/dir/file.txt:Zone.Identifier",
            "Files/dir/link",
            "Files/dir/sym",
            "Files/junction",
        ]
        root, _, whiteout, file, stream, link, sym, junction = members
        assert root.isdir()
        assert root.mode == 0o40000
        assert root.pax_headers["MSWINDOWS.rawsd"] == base64.b64encode(SD_BA).decode()
        assert root.pax_headers["LIBARCHIVE.creationtime"] == "1234567890.5"
        assert file.pax_headers["MSWINDOWS.fileattr"] == "33"
        assert file.pax_headers["MSWINDOWS.xattr.EA1"] == "AAE="
        assert file.pax_headers["mtime"] == "1600000000.1234567"
        assert file.pax_headers["atime"] == "1600000000.0000001"
        assert file.pax_headers["ctime"] == "1600000001"
        assert t.extractfile(file).read() == b"hello"  # type: ignore[union-attr]
        assert t.extractfile(stream).read() == b"zone"  # type: ignore[union-attr]
        assert stream.pax_headers == {}
        assert whiteout.pax_headers == {}
        assert (whiteout.mode, whiteout.mtime, whiteout.size, whiteout.type) == (
            0,
            0,
            0,
            tarfile.REGTYPE,
        )
        assert link.islnk()
        assert link.linkname == "Files/dir/file.txt"
        assert sym.issym()
        assert sym.linkname == "..\\x"
        assert "MSWINDOWS.mountpoint" not in sym.pax_headers
        assert junction.pax_headers["MSWINDOWS.mountpoint"] == "1"
    # PAX keys sorted by byte value inside the file's extended header
    pax_block = tar[tar.index(b"MSWINDOWS.fileattr=33") - 40 : tar.index(b"ctime=") + 200]
    keys = [line.split(b"=")[0].split(b" ")[1] for line in pax_block.split(b"\n") if b"=" in line]
    assert keys == sorted(keys)
    # the whiteout is a bare ustar header: no 'x' header right before it
    at = tar.index(b"Files/dir/.wh.gone")
    assert tar[at + 156 : at + 157] == b"0"
    assert tar[at - 512 + 156 : at - 512 + 157] == b"5"  # the block before is the directory


def test_export_then_import_gives_the_same_entries() -> None:
    entries = sample_entries()
    listed = listing(h.export_layer_entries(entries))
    assert [(e.path, e.type) for e in listed] == [(str(e["path"]), str(e["type"])) for e in entries]
    file = listed[3]
    assert file.filetimes == entries[3]["times"]
    assert (file.attributes, file.security_descriptor) == (33, SD_BU)
    assert file.extended_attributes == (("EA1", b"\x00\x01"),)
    assert listed[7].mount_point
    assert listed[7].link_target == "C:\\Users"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"path": "root/x", "type": "file"}], "outside the layer's top-level folders"),
        ([{"path": "Files/a:s", "type": "alternate_stream"}], "does not follow its file"),
        ([{"path": "Files/CON", "type": "directory"}], "reserved Windows device name"),
        ([{"path": "Files", "type": "directory"}], "a directory without FILE_ATTRIBUTE_DIRECTORY"),
        (
            [{"path": "Files/s", "type": "symlink", "attributes": 0x20, "link_target": "x"}],
            "a symlink without FILE_ATTRIBUTE_REPARSE_POINT",
        ),
        ([{"path": "Files/l", "type": "hard_link", "link_target": "../x"}], "'..' path component"),
        ([{"path": "Files", "type": "whiteout"}], "whiteout of a top-level folder"),
        (
            [
                {
                    "path": "Files/s",
                    "type": "symlink",
                    "reparse_data": struct.pack("<IHH", 0x80000017, 0, 0),
                }
            ],
            "is not a symlink or junction",
        ),
        (
            [{"path": "Files/a", "type": "file", "security_descriptor": b"\x01"}],
            "malformed security descriptor",
        ),
    ],
)
def test_export_refuses_what_it_cannot_write(
    entries: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(InvalidLayer, match="cannot export") as info:
        h.export_layer_entries(entries)
    assert message in info.value.reason


def test_closing_early_stops_the_producer() -> None:
    tar = build(FILES, *({"name": f"Files/f{i}", "data": b"x" * 100} for i in range(5000)))
    listed = LayerTarListing(io.BytesIO(tar), batch_size=16)
    it = iter(listed)
    assert next(it).path == "Files"
    listed.close()  # joins the producer thread, which is blocked on the full queue
    assert listed.diff_id is None
    with pytest.raises(ValueError, match="closed"):
        list(it)  # not a silent, truncated listing
    abandoned = iter(LayerTarListing(io.BytesIO(tar), batch_size=16))
    next(abandoned)
    del abandoned  # garbage collection alone must not hang either


class FailingStream(io.RawIOBase):
    def __init__(self, data: bytes, fail_at: int) -> None:
        self._data = io.BytesIO(data)
        self._fail_at = fail_at

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._data.tell() >= self._fail_at:
            raise OSError(5, "device went away")
        return self._data.readinto(memoryview(b)[:4096])


def test_errors_of_a_python_stream_propagate_after_the_entries_before_them() -> None:
    tar = build(FILES, *({"name": f"Files/f{i}", "data": b"x" * 1000} for i in range(100)))
    seen: list[str] = []

    def collect() -> None:
        for entry in LayerTarListing(FailingStream(tar, 50_000), batch_size=8):
            seen.append(entry.path)

    with pytest.raises(OSError, match="device went away"):
        collect()
    assert 0 < len(seen) < 101
    assert seen[0] == "Files"
