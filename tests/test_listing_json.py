"""layertar.write_listing_json (the document `winlayer --json tar ls` prints), against the
listing's own to_json() through json.dumps, which it must match byte for byte, and against
an independent reading of the tar with tarfile and hashlib."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import zstandard

from winlayer import DigestMismatch, InvalidLayer
from winlayer.layertar import list_layer_tar, write_listing_json

from .test_cli_tar import sample_layer, winlayer
from .test_layertar import FILES, SD_BA, build
from .test_tar_reader import END, pad, pax_header, record, ustar_block

REPO = Path(__file__).resolve().parent.parent


def reference(source: Any, **options: Any) -> bytes:
    """The document as json.dumps writes it from list_layer_tar's entries."""
    out = io.StringIO()
    with list_layer_tar(source, **options) as listing:
        out.write('{\n  "entries": [')
        for i, entry in enumerate(listing):
            out.write(("," if i else "") + "\n    " + json.dumps(entry.to_json(), sort_keys=True))
        summary = {
            "compression": listing.compression,
            "data_size": listing.data_size,
            "diff_id": listing.diff_id,
        }
    out.write("\n  ],\n" + json.dumps(summary, indent=2, sort_keys=True)[1:].lstrip("\n") + "\n")
    return out.getvalue().encode("ascii")


def native(source: Any, **options: Any) -> bytes:
    out = io.BytesIO()
    write_listing_json(source, out, **options)
    return out.getvalue()


def same(source_bytes: bytes, **options: Any) -> bytes:
    doc = native(io.BytesIO(source_bytes), **options)
    assert doc == reference(io.BytesIO(source_bytes), **options)
    return doc


@pytest.mark.parametrize("name", ["windows-container-rootfs.tar", "windows-mini-image.tar.gz"])
def test_fixtures_match_the_python_encoding(fixtures_dir: Path, name: str) -> None:
    data = (fixtures_dir / name).read_bytes()
    if name.endswith(".gz"):  # a docker save archive: its one layer, trimmed (parent links)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            layer = next(m for m in archive.getmembers() if m.name.endswith("/layer.tar"))
            member = archive.extractfile(layer)
            assert member is not None
            data = member.read()
    doc = same(data, allow_parent_links=True)
    assert json.loads(doc)["entries"]


def test_by_path_and_compressed(tmp_path: Path) -> None:
    raw = sample_layer()
    path = tmp_path / "layer.tar"
    path.write_bytes(raw)
    plain = native(path)
    assert plain == reference(path)
    for compression, blob in (
        ("gzip", gzip.compress(raw)),
        ("zstd", zstandard.ZstdCompressor().compress(raw)),
    ):
        doc = same(blob)
        assert json.loads(doc)["compression"] == compression
        assert json.loads(doc)["entries"] == json.loads(plain)["entries"]


def test_generated_layer(tmp_path: Path) -> None:
    path = tmp_path / "gen.tar"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "make_layer.py"), "-o", str(path),
         "--size-mb", "3", "--entries", "400", "--seed", "7"],
        check=True, capture_output=True,
    )  # fmt: skip
    doc = native(path, allow_parent_links=True)
    assert doc == reference(path, allow_parent_links=True)
    assert len(json.loads(doc)["entries"]) >= 400


def test_fields_match_an_independent_reading(tmp_path: Path) -> None:
    raw = sample_layer()
    doc = json.loads(native(io.BytesIO(raw)))
    assert doc["diff_id"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        data_size = sum(m.size for m in members if m.isfile() and "/.wh." not in m.name)
        assert doc["data_size"] == data_size
        assert len(doc["entries"]) == len(members)
        for entry, m in zip(doc["entries"], members, strict=True):
            name = m.name.rstrip("/")
            if "/.wh." in name:
                assert (entry["type"], entry["path"]) == ("whiteout", name.replace(".wh.", ""))
                continue
            assert entry["path"] == name
            kind = {tarfile.DIRTYPE: "directory", tarfile.LNKTYPE: "hard_link",
                    tarfile.SYMTYPE: "symlink"}.get(m.type)  # fmt: skip
            if kind is None:
                kind = "alternate_stream" if ":" in name else "file"
            assert entry["type"] == kind
            if kind in ("file", "alternate_stream"):
                assert entry["size"] == m.size
            if kind in ("hard_link", "symlink"):
                assert entry["link_target"] == m.linkname
            if "MSWINDOWS.fileattr" in m.pax_headers:
                assert entry["attributes"] == int(m.pax_headers["MSWINDOWS.fileattr"])
            if "MSWINDOWS.rawsd" in m.pax_headers:
                sd = base64.b64decode(m.pax_headers["MSWINDOWS.rawsd"])
                assert entry["security_descriptor"] == sd.hex()
            if kind in ("file", "directory"):
                when = datetime.fromtimestamp(m.mtime, timezone.utc)
                assert entry["last_write_time"] == when.isoformat().replace("+00:00", "Z")
            if kind == "alternate_stream":
                assert entry["stream"] == name.partition(":")[2]
            else:
                assert entry["stream"] is None


def raw_tar(*blocks: bytes) -> bytes:
    return b"".join(blocks) + END


def named(path: bytes, extra: bytes = b"", *, kind: bytes = b"0", data: bytes = b"") -> bytes:
    return (
        pax_header(record("path", path) + extra)
        + ustar_block(b"x", type=kind, size=len(data))
        + pad(data)
    )


def test_strings_are_escaped_as_json_dumps_does() -> None:
    # Paths hold any character Windows allows in a name; symlink targets anything at all.
    names = ["Files/caf\u00e9-\u4e2d-\U0001f600", "Files/odd \u2028 \ufeff \u00a0"]
    targets = ['C:\\q"uote\\back', "ctl\x01\x1f\x7f\t\n\r\b\f", "\U0010ffff\u0800"]
    entries = [named(b"Files", kind=b"5")] + [named(n.encode()) for n in names]
    entries += [
        named(f"Files/s{i}".encode(), record("linkpath", t), kind=b"2")
        for i, t in enumerate(targets)
    ]
    doc = json.loads(same(raw_tar(*entries)))
    assert [e["path"] for e in doc["entries"][1:3]] == names
    assert [e["link_target"] for e in doc["entries"][3:]] == targets


@pytest.mark.parametrize("raw", [b"\xff", b"a\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_undecodable_names_are_refused_as_by_the_lister(raw: bytes) -> None:
    tar = raw_tar(ustar_block(b"Files/", type=b"5"), ustar_block(b"Files/" + raw))
    with pytest.raises(InvalidLayer, match="not valid UTF-8") as ours:
        native(io.BytesIO(tar))
    with pytest.raises(InvalidLayer) as lister:
        reference(io.BytesIO(tar))
    assert str(ours.value) == str(lister.value)


def test_extended_attributes_sorted_with_the_last_value_of_a_name() -> None:
    eas = (
        record("MSWINDOWS.xattr.Zeta", base64.b64encode(b"\x01").decode())
        + record("MSWINDOWS.xattr.alpha", base64.b64encode(b"\x02\xff").decode())
        + record("MSWINDOWS.xattr.Beta", base64.b64encode(b"").decode())
    )
    tar = raw_tar(named(b"Files", kind=b"5"), named(b"Files/a", eas))
    doc = json.loads(same(tar))
    assert list(doc["entries"][1]["extended_attributes"]) == sorted(
        doc["entries"][1]["extended_attributes"]
    )


@pytest.mark.parametrize(
    "mtime",
    ["0", "1600000000.5", "1600000000.000001", "1600000000.0000009", "-11644473601",
     "253402300799.9999999", "253402300800", "900000000000"],
)  # fmt: skip
def test_times_at_the_edges(mtime: str) -> None:
    # fractions truncated to microseconds, none when zero; before 1601 the import clamps;
    # past 9999 null
    sd = base64.b64encode(SD_BA).decode()
    tar = raw_tar(
        named(b"Files", kind=b"5"),
        named(b"Files/a", record("mtime", mtime) + record("MSWINDOWS.rawsd", sd)),
    )
    same(tar)


def test_many_entries_cross_chunk_boundaries() -> None:
    files = [{"name": f"Files/f{i:05d}.txt", "data": b"x" * (i % 3)} for i in range(6000)]
    doc = same(build(FILES, *files))
    assert len(doc) > 2 << 20  # more than one write of about 1 MiB


def test_errors_are_the_listers() -> None:
    cut = sample_layer()[:700]
    with pytest.raises(InvalidLayer):
        native(io.BytesIO(cut))
    with pytest.raises(DigestMismatch):
        native(io.BytesIO(sample_layer()), expected_digest="sha256:" + "0" * 64)


def test_a_failing_stream_stops_the_listing() -> None:
    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            raise OSError(28, "No space left on device")

    files = [{"name": f"Files/f{i:05d}.txt"} for i in range(3000)]
    with pytest.raises(OSError, match="No space"):
        write_listing_json(io.BytesIO(build(FILES, *files)), Full())


def test_cli_error_midway_leaves_stdout_empty(tmp_path: Path) -> None:
    # more than a chunk of entries, then a bad one: the spool keeps stdout clean
    files = [{"name": f"Files/f{i:05d}.txt"} for i in range(4000)]
    good = build(FILES, *files)
    bad = good[: -len(END)] + ustar_block(b"root/outside") + END
    path = tmp_path / "bad.tar"
    path.write_bytes(bad)
    result = winlayer("--json", "tar", "ls", str(path))
    assert result.returncode == 1
    assert result.stdout == b""
    error = json.loads(result.stderr)
    assert "outside the layer's top-level folders" in json.dumps(error)
