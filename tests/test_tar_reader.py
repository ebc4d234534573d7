"""The native tar reader against Python's tarfile, the fixtures and hand-built headers."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from winlayer import _hcs
from winlayer._stream import open_layer

BLOCK = 512
END = b"\0" * 1024


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def ustar_block(
    name: bytes = b"file",
    *,
    type: bytes = b"0",
    size: int = 0,
    size_field: bytes | None = None,
    mode_field: bytes = b"0000644\0",
    mtime_field: bytes = b"00000000000\0",
    linkname: bytes = b"",
    prefix: bytes = b"",
    magic: bytes = b"ustar\x0000",
    checksum: bytes | None = None,
) -> bytes:
    """One ustar header block; the checksum is computed unless given."""
    b = bytearray(BLOCK)
    b[0 : len(name)] = name
    b[100:108] = mode_field
    b[108:116] = octal(0, 8)
    b[116:124] = octal(0, 8)
    b[124:136] = size_field if size_field is not None else octal(size, 12)
    b[136:148] = mtime_field
    b[156:157] = type
    b[157 : 157 + len(linkname)] = linkname
    b[257:265] = magic
    b[345 : 345 + len(prefix)] = prefix
    b[148:156] = b" " * 8
    b[148:156] = checksum if checksum is not None else b"%06o\0 " % sum(b)
    return bytes(b)


def pax_header(records: bytes, *, type: bytes = b"x") -> bytes:
    return ustar_block(b"././@PaxHeader", type=type, size=len(records)) + pad(records)


def record(key: str, value: str | bytes) -> bytes:
    v = value.encode() if isinstance(value, str) else value
    body = b" " + key.encode() + b"=" + v + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def file_entry(name: bytes, data: bytes, **kw: object) -> bytes:
    return ustar_block(name, size=len(data), **kw) + pad(data)  # type: ignore[arg-type]


def build(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def info(name: str, type: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def sample_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    long_dir = "Files/" + "/".join(["a-fairly-long-directory-name"] * 6)
    return [
        (info("Files", tarfile.DIRTYPE, mode=0o755, mtime=1_600_000_000), None),
        (info("Files/hello.txt", size=5, mode=0o644, mtime=1_600_000_001), b"hello"),
        (info(long_dir + "/deep.bin", size=1000, uid=1000, gid=1000, uname="u"), b"x" * 1000),
        (info("Files/empty", size=0), b""),
        (info("Files/link", tarfile.SYMTYPE, linkname="hello.txt"), None),
        (info("Files/hard", tarfile.LNKTYPE, linkname="Files/hello.txt"), None),
        (info("Files/long-link", tarfile.SYMTYPE, linkname="../" * 60 + "target"), None),
        (info("Files/exactly-512", size=512), b"\x01" * 512),
    ]


def compare_with_tarfile(raw: bytes) -> list[_hcs.TarEntry]:
    scan = _hcs.read_tar(io.BytesIO(raw), payloads=True)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        expected = tf.getmembers()
        datas = [tf.extractfile(m).read() if m.isreg() else None for m in expected]  # type: ignore[union-attr]
    # tarfile drops a directory's trailing slash; the reader keeps names as stored.
    names = [e.name.rstrip("/") if e.type == "5" else e.name for e in scan.entries]
    assert names == [m.name for m in expected]
    for i, member in enumerate(expected):
        entry, data = scan.entries[i], datas[i]
        assert entry.type == member.type.decode().replace("\0", "0"), member.name
        assert entry.linkname == member.linkname
        assert entry.size == (member.size if member.isreg() else 0)
        assert entry.mode == member.mode
        assert (entry.uid, entry.gid, entry.uname, entry.gname) == (
            member.uid,
            member.gid,
            member.uname,
            member.gname,
        )
        assert entry.mtime[0] == int(member.mtime // 1)
        assert entry.offset == member.offset, member.name
        assert entry.data_offset == member.offset_data, member.name
        if member.isreg():
            assert entry.data == data
    assert scan.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert scan.size == len(raw)
    return scan.entries


@pytest.mark.parametrize(
    "fmt",
    [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT],
    ids=["pax", "gnu", "ustar"],
)
def test_agrees_with_tarfile(fmt: int) -> None:
    members = sample_members()
    if fmt == tarfile.USTAR_FORMAT:  # no long link names in plain ustar
        members = [m for m in members if len(m[0].linkname) <= 100]
    compare_with_tarfile(build(members, fmt))


def test_pax_records_kept_in_order_with_exact_fractional_times() -> None:
    ti = info("Files/ü-名前.txt", size=3, mtime=1_700_000_000.123456789)
    ti.pax_headers = {
        "MSWINDOWS.fileattr": "32",
        "LIBARCHIVE.creationtime": "1700000000.5",
        "atime": "-1.25",
        "ctime": "1700000000.000000001999",
    }
    raw = build([(ti, b"abc")], tarfile.PAX_FORMAT)
    (entry,) = _hcs.read_tar(io.BytesIO(raw)).entries
    assert entry.name == "Files/ü-名前.txt"
    keys = [k for k, _ in entry.pax]
    assert keys[:4] == [b"MSWINDOWS.fileattr", b"LIBARCHIVE.creationtime", b"atime", b"ctime"]
    assert dict(entry.pax)[b"path"] == "Files/ü-名前.txt".encode()
    assert entry.atime == (-2, 750_000_000)
    assert entry.ctime == (1_700_000_000, 1)  # digits past nanoseconds are dropped...
    assert dict(entry.pax)[b"ctime"] == b"1700000000.000000001999"  # ...but kept raw
    assert entry.mtime[0] == 1_700_000_000


def test_pax_overrides_and_empty_values() -> None:
    records = (
        record("path", "Files/from-pax")
        + record("linkpath", "target-from-pax")
        + record("uid", "4294967296")
        + record("uname", "someone")
        + record("mtime", "1.5")
        + record("gname", "")
    )
    raw = pax_header(records) + ustar_block(b"short", type=b"2", linkname=b"t") + END
    (entry,) = _hcs.read_tar(io.BytesIO(raw)).entries
    assert (entry.name, entry.linkname, entry.uid, entry.uname) == (
        "Files/from-pax",
        "target-from-pax",
        4294967296,
        "someone",
    )
    assert entry.mtime == (1, 500_000_000)
    assert (entry.offset, entry.header_offset, entry.data_offset) == (0, 1024, 1536)


def test_global_pax_headers_are_defaults_and_exposed() -> None:
    glob = pax_header(record("mtime", "42") + record("comment", "global"), type=b"g")
    raw = glob + file_entry(b"a", b"1") + pax_header(record("mtime", "7")) + file_entry(b"b", b"2")
    raw += END
    scan = _hcs.read_tar(io.BytesIO(raw))
    a, b = scan.entries
    assert scan.global_pax == [(b"mtime", b"42"), (b"comment", b"global")]
    assert a.mtime == (42, 0)  # global default over the ustar field
    assert b.mtime == (7, 0)  # the entry's own record wins
    assert a.offset == len(glob)  # a global header is not part of the next entry
    # A later global record replaces the earlier value; an empty value removes the key.
    again = pax_header(record("mtime", "43") + record("comment", ""), type=b"g")
    scan = _hcs.read_tar(io.BytesIO(glob + again + file_entry(b"c", b"3") + END))
    assert scan.global_pax == [(b"mtime", b"43")]
    assert scan.entries[0].mtime == (43, 0)


def test_gnu_base256_fields_and_ustar_prefix() -> None:
    big_uid = info("Files/u", size=1, uid=8**8 + 5, mtime=-100)
    raw = build([(big_uid, b"z")], tarfile.GNU_FORMAT)
    (entry,) = _hcs.read_tar(io.BytesIO(raw)).entries
    assert entry.uid == 8**8 + 5
    assert entry.mtime == (-100, 0)
    prefixed = ustar_block(b"name.txt", prefix=b"Files/some/dir") + END
    (entry,) = _hcs.read_tar(io.BytesIO(prefixed)).entries
    assert entry.name == "Files/some/dir/name.txt"


def test_sizes_of_8_gib_and_more_from_headers_only() -> None:
    big = 10 * 2**30 + 3
    # PAX size (what the writer and tarfile emit) ...
    writer = _hcs.TarWriter()
    writer.add("Files/huge.vhdx", size=big)
    reader = _hcs.TarReader(io.BytesIO(writer.getvalue() + b"\0" * 4096))
    entry = next(reader)
    assert entry.size == big
    assert dict(entry.pax)[b"size"] == str(big).encode()
    assert reader.remaining == big
    assert reader.read(10) == b"\0" * 10
    # ... and a GNU base-256 size field without PAX.
    field = b"\x80" + big.to_bytes(11, "big")
    reader = _hcs.TarReader(io.BytesIO(ustar_block(b"big", size_field=field)))
    assert next(reader).size == big
    # tarfile sees the same size in our header.
    with tarfile.open(fileobj=io.BytesIO(writer.getvalue()), mode="r:") as tf:
        assert tf.next().size == big  # type: ignore[union-attr]


def test_trailing_bytes_are_hashed_and_single_end_block_accepted() -> None:
    body = file_entry(b"a", b"data")
    for tail in (END, END + b"trailing garbage" * 100, b"\0" * 512, END + b"\0" * 9000):
        raw = body + tail
        scan = _hcs.read_tar(io.BytesIO(raw))
        assert scan.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert scan.size == len(raw)
        assert _hcs.tar_digest(io.BytesIO(raw)) == scan.diff_id


def test_contiguous_and_old_regular_types_read_as_files() -> None:
    raw = file_entry(b"c", b"1", type=b"7") + file_entry(b"o", b"2", type=b"\0") + END
    assert [(e.name, e.type, e.size) for e in _hcs.read_tar(io.BytesIO(raw)).entries] == [
        ("c", "0", 1),
        ("o", "0", 1),
    ]


def test_header_only_types_have_no_payload_whatever_the_size_field() -> None:
    # A directory whose size field says 512: the next block is the next header (as in Go
    # and tarfile), not data.
    raw = ustar_block(b"d/", type=b"5", size=512) + file_entry(b"d/f", b"x") + END
    scan = _hcs.read_tar(io.BytesIO(raw), payloads=True)
    assert [(e.name, e.size, e.data) for e in scan.entries] == [("d/", 0, None), ("d/f", 1, b"x")]


def test_streaming_reader_chunks_and_python_sources() -> None:
    data = bytes(range(256)) * 4099
    raw = build([(info("Files/big", size=len(data)), data)], tarfile.PAX_FORMAT)

    class Dribble:
        """read() only, a few bytes at a time: the reader must not depend on chunking."""

        def __init__(self, raw: bytes) -> None:
            self.f = io.BytesIO(raw)
            self.calls = 0

        def read(self, n: int) -> bytes:
            self.calls += 1
            return self.f.read(min(n, 1 + self.calls % 7))

    reader = _hcs.TarReader(Dribble(raw))
    entry = next(reader)
    got = b""
    while chunk := reader.read(3333):
        got += chunk
    assert got == data
    assert entry.size == len(data)
    assert reader.remaining == 0
    with pytest.raises(StopIteration):
        next(reader)
    assert reader.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    with pytest.raises(StopIteration):
        next(reader)


def test_reads_a_path(tmp_path: Path) -> None:
    raw = build(sample_members(), tarfile.PAX_FORMAT)
    path = tmp_path / "layer.tar"
    path.write_bytes(raw)
    for source in (path, str(path), bytes(path)):
        assert _hcs.tar_digest(source) == "sha256:" + hashlib.sha256(raw).hexdigest()
    with pytest.raises(FileNotFoundError) as exc:
        _hcs.tar_digest(tmp_path / "missing.tar")
    assert exc.value.filename == str(tmp_path / "missing.tar")


def test_python_source_errors_propagate_unchanged() -> None:
    class Boom(Exception):
        pass

    class Failing:
        def __init__(self) -> None:
            self.n = 0

        def readinto(self, b: memoryview) -> int:
            self.n += 1
            if self.n > 1:
                raise Boom("disk on fire")
            b[:BLOCK] = ustar_block(b"a", size=10_000)
            return BLOCK

    with pytest.raises(Boom, match="disk on fire"):
        _hcs.read_tar(Failing())

    class NonBlocking:
        def readinto(self, b: memoryview) -> None:
            return None

    with pytest.raises(ValueError, match="non-blocking"):
        _hcs.tar_digest(NonBlocking())
    with pytest.raises(TypeError, match="path or a binary file object"):
        _hcs.tar_digest(42)  # type: ignore[arg-type]


# --- fixtures ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["windows-container-rootfs.tar", "some-windows-layer.tar"])
def test_fixture_tars(fixtures_dir: Path, name: str) -> None:
    raw = (fixtures_dir / name).read_bytes()
    entries = compare_with_tarfile(raw)
    assert entries
    assert _hcs.tar_digest(fixtures_dir / name) == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_fixture_docker_save_archive(fixtures_dir: Path) -> None:
    stream, compression = open_layer(fixtures_dir / "windows-mini-image.tar.gz")
    assert compression == "gzip"
    with stream:  # type: ignore[union-attr]
        outer = _hcs.read_tar(stream, payloads=True)
    # layer.tar is a symlink to the layer blob "<diffid>.tar" (newer docker save layout).
    layers = [e for e in outer.entries if e.name.endswith(".tar") and e.type == "0"]
    assert len(layers) == 1
    for layer in layers:
        assert layer.data is not None
        inner = compare_with_tarfile(layer.data)
        names = [e.name for e in inner]
        assert any(n.startswith("Files/") for n in names)
        assert any(e.type == "1" for e in inner)  # the fixture's hard links
