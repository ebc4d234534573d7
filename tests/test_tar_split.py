"""tar-split: any tar rebuilds byte for byte from its record plus the payloads."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winlayer import _hcs
from winlayer._stream import open_layer
from winlayer.errors import DigestMismatch, InvalidLayer, StoreCorrupt

from .test_tar_reader import END, build, file_entry, info, sample_members


def split_and_payloads(raw: bytes) -> tuple[bytes, dict[str, bytes]]:
    scan = _hcs.read_tar(io.BytesIO(raw), payloads=True, tar_split=True)
    assert scan.tar_split is not None
    payloads = {e.name: e.data for e in scan.entries if e.data}
    return scan.tar_split, payloads  # type: ignore[return-value]


def rebuild(record: bytes, payloads: list[tuple[str, bytes]]) -> bytes:
    """Rebuild, handing out the payloads in archive order (names may repeat in a tar)."""
    queue = iter(payloads)

    def open_payload(name: str, size: int) -> bytes:
        expected_name, data = next(queue)
        assert (name, size) == (expected_name, len(data))
        return data

    with _hcs.tar_split_rebuild(record, open_payload) as stream:
        return stream.read()


def assert_round_trip(raw: bytes) -> bytes:
    scan = _hcs.read_tar(io.BytesIO(raw), payloads=True, tar_split=True)
    record = scan.tar_split
    assert record is not None
    assert rebuild(record, [(e.name, e.data) for e in scan.entries if e.data]) == raw
    total, digest, _ = _hcs.tar_split_info(record)
    assert total == len(raw)
    assert digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    return record


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_tarfile_archives_round_trip(fmt: int) -> None:
    assert_round_trip(build(sample_members(), fmt))


def test_odd_padding_and_trailing_garbage_round_trip() -> None:
    raw = bytearray(file_entry(b"Files/a", b"hello") + file_entry(b"Files/b", b"x" * 600) + END)
    raw[512 + 5 : 512 + 20] = b"padding-garbage"  # padding is not payload: recorded as is
    raw += b"trailing bytes that are not a tar \xff\x00\x01" * 50 + b"\0" * 7000
    assert_round_trip(bytes(raw))
    assert_round_trip(file_entry(b"a", b"1") + b"\0" * 512)  # single end block


def test_record_lists_payloads_and_stays_small() -> None:
    members = [
        (info(f"Files/dir/file-{i:05d}.dll", size=3000), bytes([i % 256]) * 3000)
        for i in range(2000)
    ]
    for ti, _ in members:
        ti.pax_headers = {"MSWINDOWS.fileattr": "32", "MSWINDOWS.rawsd": "AQAAgBQAAAAkAAAA" * 4}
    raw = build(members, tarfile.PAX_FORMAT)
    record = assert_round_trip(raw)
    _, _, payloads = _hcs.tar_split_info(record)
    assert payloads[:2] == [
        (0, "Files/dir/file-00000.dll", 3000),
        (1, "Files/dir/file-00001.dll", 3000),
    ]
    assert len(payloads) == 2000
    header_bytes = len(raw) - 2000 * 3000
    # Headers are ~1.5 KiB per entry here; zero runs, shared name prefixes and repeated
    # header bytes (back-references) go away.
    assert len(record) < header_bytes / 15


def test_empty_files_have_no_payload_marker() -> None:
    raw = file_entry(b"a", b"") + file_entry(b"b", b"z") + END
    record = assert_round_trip(raw)
    assert _hcs.tar_split_info(record)[2] == [(1, "b", 1)]


def test_fixtures_round_trip(fixtures_dir: Path) -> None:
    for name in ("windows-container-rootfs.tar", "some-windows-layer.tar"):
        assert_round_trip((fixtures_dir / name).read_bytes())
    stream, _ = open_layer(fixtures_dir / "windows-mini-image.tar.gz")
    with stream:  # type: ignore[union-attr]
        outer = stream.read()  # type: ignore[union-attr]
    assert_round_trip(outer)


def test_payload_store_returning_paths_and_files(tmp_path: Path) -> None:
    raw = file_entry(b"Files/a", b"A" * 3000) + file_entry(b"Files/b", b"B" * 10) + END
    record, payloads = split_and_payloads(raw)
    (tmp_path / "a").write_bytes(payloads["Files/a"])
    opened: list[tuple[str, int]] = []

    def open_payload(name: str, size: int) -> object:
        opened.append((name, size))
        return tmp_path / "a" if name == "Files/a" else io.BytesIO(payloads[name])

    with _hcs.tar_split_rebuild(record, open_payload) as stream:  # type: ignore[arg-type]
        assert stream.read() == raw
    assert opened == [("Files/a", 3000), ("Files/b", 10)]


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b"short", StoreCorrupt, "has 5 bytes, the tar had 3000"),
        (b"A" * 3001, StoreCorrupt, "longer than the 3000 bytes"),
        (b"X" * 3000, DigestMismatch, "digest mismatch"),
    ],
)
def test_rebuild_detects_wrong_payloads(
    payload: bytes, error: type[Exception], message: str
) -> None:
    raw = file_entry(b"Files/a", b"A" * 3000) + END
    record, _ = split_and_payloads(raw)
    with (
        _hcs.tar_split_rebuild(record, lambda n, s: payload) as stream,
        pytest.raises(error, match=message),
    ):
        stream.read()


def test_payload_callback_errors_surface_from_read() -> None:
    record, _ = split_and_payloads(file_entry(b"Files/a", b"A") + END)

    def missing(name: str, size: int) -> bytes:
        raise KeyError(name)

    with (
        _hcs.tar_split_rebuild(record, missing) as stream,
        pytest.raises(KeyError, match="Files/a"),
    ):
        stream.read()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def test_version_1_records_are_still_read() -> None:
    # Version 1: LITERAL / ZEROS / PAYLOAD / END, no back-references.
    raw = file_entry(b"Files/a", b"hello") + END
    header = raw[:512]
    v1 = (
        b"WLTS\x01"
        + b"\x01" + _varint(len(header.rstrip(b"\0"))) + header.rstrip(b"\0")
        + b"\x02" + _varint(512 - len(header.rstrip(b"\0")))
        + b"\x03" + _varint(0) + _varint(0) + _varint(7) + b"Files/a" + _varint(5)
        + b"\x02" + _varint(len(raw) - 512 - 5)
        + b"\x00" + _varint(len(raw)) + hashlib.sha256(raw).digest()
    )  # fmt: skip
    assert _hcs.tar_split_info(v1) == (
        len(raw),
        "sha256:" + hashlib.sha256(raw).hexdigest(),
        [(0, "Files/a", 5)],
    )
    assert rebuild(v1, [("Files/a", b"hello")]) == raw
    match = b"WLTS\x01\x01\x01A\x04\x01\x01\x00\x02" + hashlib.sha256(b"AA").digest()
    with pytest.raises(StoreCorrupt, match="unknown record tag 4"):
        _hcs.tar_split_info(match)
    assert _hcs.tar_split_info(b"WLTS\x02" + match[5:])[0] == 2  # a v2 MATCH: "A" + copy


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: b"XXXX" + r[4:],
        lambda r: r[:4] + b"\x09" + r[5:],
        lambda r: r[:-1],
        lambda r: r[:-33],
        lambda r: r + b"\0",
        lambda r: r[:5] + b"\x07" + r[5:],
        lambda r: r[:5],
    ],
)
def test_damaged_records_are_store_corrupt(damage: object) -> None:
    record, _ = split_and_payloads(file_entry(b"Files/a", b"A") + END)
    bad = damage(record)  # type: ignore[operator]
    with pytest.raises(StoreCorrupt, match="tar-split"):
        _hcs.tar_split_info(bad)
    with pytest.raises(StoreCorrupt, match="tar-split"):
        _hcs.tar_split_rebuild(bad, lambda n, s: b"A")


def test_no_record_for_a_tar_that_fails() -> None:
    with pytest.raises(InvalidLayer):
        _hcs.read_tar(io.BytesIO(file_entry(b"a", b"1")), tar_split=True)


# --- property: arbitrary tars ------------------------------------------------------------

member_strategy = st.tuples(
    st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"),
        min_size=1,
        max_size=130,
    ),
    st.sampled_from(
        [tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]
    ),
    st.binary(max_size=2000),
    st.dictionaries(
        st.sampled_from(
            ["MSWINDOWS.fileattr", "MSWINDOWS.rawsd", "LIBARCHIVE.creationtime", "comment"]
        ),
        st.text(max_size=30),
        max_size=3,
    ),
    # tarfile writes float mtimes with str(): keep them in plain decimal notation.
    st.integers(0, 2**43).map(lambda ms: ms / 1000),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(member_strategy, max_size=6),
    st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
    st.binary(max_size=600),
    st.integers(0, 20),
)
def test_any_tar_rebuilds_exactly(
    members: list[tuple[str, bytes, bytes, dict[str, str], float]],
    fmt: int,
    trailing: bytes,
    record_blocks: int,
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, type_, data, pax, mtime in members:
            ti = tarfile.TarInfo(name)
            ti.type = type_
            ti.mtime = mtime
            if type_ in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                ti.linkname = "target/" + name
            if fmt == tarfile.PAX_FORMAT:
                ti.pax_headers = pax
            if type_ == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    # tarfile pads to a 10 KiB record; other writers add more zero blocks or bytes.
    assert_round_trip(buf.getvalue() + b"\0" * 512 * record_blocks + trailing)


def test_headers_past_the_match_window_round_trip_and_stay_compressed() -> None:
    # About 2 MiB of PAX headers, far more than the writer keeps as history: matches found
    # after the history is trimmed must still point at the right bytes, and repeats must
    # still be found (the record stays a fraction of the headers).
    import random

    rng = random.Random(7)
    descriptors = [bytes(rng.randrange(256) for _ in range(300)).hex() for _ in range(5)]
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for n in range(1500):
        ti = info(f"Files/dir{n % 37}/file-{n:05}-{rng.randrange(10**9)}.dat", size=3)
        ti.pax_headers = {
            "MSWINDOWS.rawsd": descriptors[n % len(descriptors)],
            "MSWINDOWS.fileattr": "32",
            "LIBARCHIVE.creationtime": f"{1_600_000_000 + n}.{rng.randrange(10**9)}",
        }
        members.append((ti, b"abc"))
    raw = build(members, tarfile.PAX_FORMAT)
    record = assert_round_trip(raw)
    assert len(raw) - 1500 * 512 > 2 << 20  # header bytes, beyond the payload blocks
    assert len(record) < len(raw) // 10
