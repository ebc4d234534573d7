"""Layer tars as hcsshim reads and writes them (go-winio backuptar, hcsshim
pkg/ociwclayer): the entries hcsshim's importer attaches streams to, and the tars it
accepts with a clear meaning, imported and exported again in canonical form."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from winlayer import _hcs as h
from winlayer.errors import InvalidLayer
from winlayer.layertar import list_layer_tar

from .test_layertar import FILES, SD_BA, build
from .test_tar_reader import END, pax_header, record, ustar_block

# -- Go's view of a tar -----------------------------------------------------------------


def go_tar_headers(tar: bytes) -> list[tuple[str, str]]:
    """(name, typeflag) of each entry as Go's archive/tar returns it: the name exactly as
    stored (a directory keeps a trailing '/', unlike Python's tarfile), PAX `path` applied."""
    out: list[tuple[str, str]] = []
    pos = 0
    pax_path: str | None = None
    while pos + 512 <= len(tar) and tar[pos : pos + 512] != bytes(512):
        block = tar[pos : pos + 512]
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        kind = block[156:157].decode()
        data = tar[pos + 512 : pos + 512 + size]
        pos += 512 + (size + 511) // 512 * 512
        if kind == "x":
            for line in data.decode().splitlines():
                key, _, value = line.partition(" ")[2].partition("=")
                if key == "path":
                    pax_path = value
            continue
        name, prefix = block[:100].rstrip(b"\0").decode(), block[345:500].rstrip(b"\0").decode()
        out.append((pax_path or (prefix + "/" + name if prefix else name), kind))
        pax_path = None
    return out


def hcsshim_import(tar: bytes) -> list[tuple[str, list[str]]]:
    """The entries hcsshim's writeLayerFromTar adds (whiteouts and hard links aside), each
    with the streams WriteBackupStreamFromTarFile attaches to it: the type-0 entries right
    after it whose names start with its name plus ':'."""
    headers = go_tar_headers(tar)
    added: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(headers):
        name, kind = headers[i]
        i += 1
        if name.rstrip("/").rpartition("/")[2].startswith(".wh.") or kind == "1":
            continue
        streams = []
        while i < len(headers) and headers[i][1] == "0" and headers[i][0].startswith(name + ":"):
            streams.append(headers[i][0][len(name) + 1 :])
            i += 1
        added.append((name, streams))
    return added


def test_the_model_of_hcsshim_detaches_streams_of_a_slashed_directory() -> None:
    tar = build(FILES, {"name": "Files/d/", "type": "5"}, {"name": "Files/d:s", "data": b"x"})
    assert hcsshim_import(tar) == [("Files/", []), ("Files/d/", []), ("Files/d:s", [])]


# -- directory streams ------------------------------------------------------------------


def canonical(backend: h.Backend, info: h.DriverInfo, id: str, tar: bytes) -> bytes:
    """The canonical export of `tar` imported as layer `id` of the portable backend."""
    backend.import_layer(info, id, [], io.BytesIO(tar))
    with backend.export_layer(info, id, [], False) as stream:
        data: bytes = stream.read()
    return data


def directory_stream_layer(slash: str) -> bytes:
    return build(
        FILES,
        {"name": "Files/d" + slash, "type": "5"},
        {"name": "Files/d:s", "data": b"dir stream"},
        {"name": "Files/d/f", "data": b"file"},
        {"name": "Files/d/f:z", "data": b"file stream"},
        {"name": "Files/e" + slash, "type": "5"},
    )


def test_exported_streams_attach_to_their_owner_in_hcsshim(
    backend: h.Backend, info: h.DriverInfo
) -> None:
    tar = canonical(backend, info, "layer", directory_stream_layer("/"))
    assert hcsshim_import(tar) == [
        ("Files", []),
        ("Files/d", ["s"]),
        ("Files/d/f", ["z"]),
        ("Files/e", []),
    ]
    # hcsshim's exporter writes directory names without '/' too.
    assert [name for name, kind in go_tar_headers(tar) if kind == "5"] == [
        "Files",
        "Files/d",
        "Files/e",
    ]


def test_both_directory_forms_import_as_the_same_layer(
    backend: h.Backend, info: h.DriverInfo
) -> None:
    slashed, bare = directory_stream_layer("/"), directory_stream_layer("")
    assert slashed != bare
    as_listed = [list(list_layer_tar(io.BytesIO(t))) for t in (slashed, bare)]
    assert as_listed[0] == as_listed[1]
    assert ("Files/d:s", "alternate_stream") in [(e.path, e.type) for e in as_listed[0]]
    exported = canonical(backend, info, "slashed", slashed)
    assert canonical(backend, info, "bare", bare) == exported
    assert canonical(backend, info, "again", exported) == exported  # deterministic


def test_a_stream_named_after_a_folders_slash_is_refused_as_ambiguous() -> None:
    # hcsshim attaches "Files/d/:s" to folder d; tarfile reads a file ":s" inside d.
    tar = build(FILES, {"name": "Files/d/", "type": "5"}, {"name": "Files/d/:s", "data": b"x"})
    assert hcsshim_import(tar)[-1] == ("Files/d/", ["s"])
    with tarfile.open(fileobj=io.BytesIO(tar)) as reader:
        assert reader.getnames()[-1] == "Files/d/:s"
    with pytest.raises(InvalidLayer) as caught:
        list(list_layer_tar(io.BytesIO(tar)))
    assert "ambiguous stream name" in str(caught.value)
    assert "'Files/d:s'" in str(caught.value)
    assert caught.value.entry == "Files/d/:s"


# -- tars hcsshim accepts: imported, and exported again in canonical form ---------------


@pytest.fixture
def chain(backend: h.Backend, info: h.DriverInfo) -> list[str]:
    """A parent layer with Files/d/x, so that whiteouts have something to hide."""
    backend.import_layer(
        info,
        "parent",
        [],
        io.BytesIO(build(FILES, {"name": "Files/d", "type": "5"}, {"name": "Files/d/x"})),
    )
    return [str(Path(info.home, "parent"))]


def round_trip(
    backend: h.Backend, info: h.DriverInfo, chain: list[str], tar: bytes
) -> dict[str, tarfile.TarInfo]:
    """Imports `tar` over `chain`, exports it, checks that the export imports and exports
    again to the same bytes, and returns the exported members by name."""
    backend.import_layer(info, "layer", chain, io.BytesIO(tar))
    with backend.export_layer(info, "layer", chain, False) as stream:
        exported: bytes = stream.read()
    backend.import_layer(info, "again", chain, io.BytesIO(exported))
    with backend.export_layer(info, "again", chain, False) as stream:
        assert stream.read() == exported
    with tarfile.open(fileobj=io.BytesIO(exported)) as t:
        return {m.name: m for m in t.getmembers()}


def file_with(*pax: tuple[str, str], **fields: Any) -> bytes:
    return build(FILES, {"name": "Files/a", "data": b"a", "pax": list(pax), **fields})


EA_K = ("MSWINDOWS.xattr.K", "AQ==")
SD_BA_TEXT = base64.b64encode(SD_BA).decode()
FIRST_TICK = "-11644473600"  # 1601-01-01, FILETIME 0
LAST_TICK = "910692730085.4775807"  # FILETIME 2**63 - 1, in the year 30828


@pytest.mark.parametrize(
    ("tar", "record", "exported"),
    [
        # Go's parsePAXTime: a sign, an empty fraction.
        (file_with(("LIBARCHIVE.creationtime", "+5")), "LIBARCHIVE.creationtime", "5"),
        (file_with(("LIBARCHIVE.creationtime", "5.")), "LIBARCHIVE.creationtime", "5"),
        (file_with(("LIBARCHIVE.creationtime", "-5.")), "LIBARCHIVE.creationtime", "-5"),
        (file_with(("LIBARCHIVE.creationtime", "+1.25")), "LIBARCHIVE.creationtime", "1.25"),
        # Outside FILETIME's range: clamped to its ends.
        (
            file_with(("LIBARCHIVE.creationtime", "-20000000000")),
            "LIBARCHIVE.creationtime",
            FIRST_TICK,
        ),
        (
            file_with(("LIBARCHIVE.creationtime", "99999999999999")),
            "LIBARCHIVE.creationtime",
            LAST_TICK,
        ),
        (file_with(mtime=-11644473601), "atime", FIRST_TICK),  # atime defaults to mtime
        (file_with(atime=(-11644473601, 999_999_999)), "atime", FIRST_TICK),  # 1 ns before
        (file_with(ctime=-(2**62)), "ctime", FIRST_TICK),
        (file_with(ctime=2**62), "ctime", LAST_TICK),
        # Go's ParseUint: any number of leading zeros.
        (file_with(("MSWINDOWS.fileattr", "000000000000033")), "MSWINDOWS.fileattr", "33"),
        # Go's base64.StdEncoding: CR and LF skipped, bits under the padding ignored.
        (file_with(("MSWINDOWS.xattr.K", "AQ\r\n==\n")), "MSWINDOWS.xattr.K", "AQ=="),
        (file_with(("MSWINDOWS.xattr.K", "AR==")), "MSWINDOWS.xattr.K", "AQ=="),
        (
            file_with(
                (
                    "MSWINDOWS.rawsd",
                    "\n".join(SD_BA_TEXT[i : i + 16] for i in range(0, len(SD_BA_TEXT), 16)),
                )
            ),
            "MSWINDOWS.rawsd",
            SD_BA_TEXT,
        ),
        # An EA without a name cannot exist: dropped, the others kept.
        (file_with(("MSWINDOWS.xattr.", "AA=="), EA_K), "MSWINDOWS.xattr.", None),
        (file_with(("MSWINDOWS.xattr.", "AA=="), EA_K), "MSWINDOWS.xattr.K", "AQ=="),
        # go-winio reads MSWINDOWS.mountpoint only for symlinks.
        (file_with(("MSWINDOWS.mountpoint", "1")), "MSWINDOWS.mountpoint", None),
        # An empty rawsd is no descriptor, and the legacy SDDL is then not read.
        (file_with(("MSWINDOWS.rawsd", ""), ("MSWINDOWS.sd", "O:BAG:BA")), "MSWINDOWS.rawsd", None),
    ],
)
def test_records_hcsshim_accepts_are_normalised(
    backend: h.Backend,
    info: h.DriverInfo,
    chain: list[str],
    tar: bytes,
    record: str,
    exported: str | None,
) -> None:
    a = round_trip(backend, info, chain, tar)["Files/a"]
    assert a.isfile()
    assert a.pax_headers.get(record) == exported


def test_pax_times_with_a_sign_or_an_empty_fraction(
    backend: h.Backend, info: h.DriverInfo, chain: list[str]
) -> None:
    pax = record("mtime", "+7") + record("atime", "8.") + record("ctime", "+9.")
    tar = ustar_block(b"Files/", type=b"5") + pax_header(pax) + ustar_block(b"Files/a") + END
    a = round_trip(backend, info, chain, tar)["Files/a"]
    assert (a.mtime, a.pax_headers["atime"], a.pax_headers["ctime"]) == (7, "8", "9")


def test_mountpoint_on_a_directory_is_ignored(
    backend: h.Backend, info: h.DriverInfo, chain: list[str]
) -> None:
    tar = build(FILES, {"name": "Files/e", "type": "5", "pax": [("MSWINDOWS.mountpoint", "1")]})
    e = round_trip(backend, info, chain, tar)["Files/e"]
    assert e.isdir()
    assert "MSWINDOWS.mountpoint" not in e.pax_headers
    assert e.pax_headers["MSWINDOWS.fileattr"] == "16"


def test_whiteouts_of_any_type_and_repeated_whiteouts(
    backend: h.Backend, info: h.DriverInfo, chain: list[str]
) -> None:
    tar = build(
        FILES,
        {"name": "Files/d", "type": "5"},
        {"name": "Files/d/.wh.dir/", "type": "5"},
        {"name": "Files/d/.wh.sym", "type": "2", "linkname": "x"},
        {"name": "Files/d/.wh.link", "type": "1", "linkname": "Files/d/x"},
        {"name": "Files/d/.wh.x", "mode": 0},
        {"name": "Files/d/.wh.X", "mode": 0},  # the same name again, for NTFS
    )
    members = round_trip(backend, info, chain, tar)
    whiteouts = [m for name, m in members.items() if "/.wh." in name]
    assert [m.name for m in whiteouts] == [
        "Files/d/.wh.dir",
        "Files/d/.wh.link",
        "Files/d/.wh.sym",
        "Files/d/.wh.x",
    ]
    assert all(
        (m.type, m.mode, m.size, m.pax_headers) == (tarfile.REGTYPE, 0, 0, {}) for m in whiteouts
    )


def test_opaque_whiteout_hides_nothing_and_exports_again(
    backend: h.Backend, info: h.DriverInfo, chain: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = build(
        FILES,
        {"name": "Files/d/", "type": "5"},
        {"name": "Files/d/.wh..wh..opq", "mode": 0},
        {"name": "Files/d/new", "data": b"n"},
    )
    calls, err = h.trace_layer_import(io.BytesIO(tar))
    assert err is None
    assert ("remove", "Files/d/.wh..opq") in [c[:2] for c in calls]  # hcsshim's Remove
    members = round_trip(backend, info, chain, tar)
    assert list(members) == ["Files", "Files/d", "Files/d/.wh..wh..opq", "Files/d/new"]
    # As on Windows, the parent's Files/d/x still shows through.
    layer_chain = [str(Path(info.home, "layer")), *chain]
    backend.create_sandbox_layer(info, "box", layer_chain[0], layer_chain)
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", "copy")
    backend.activate_layer(info, "box")
    backend.prepare_layer(info, "box", layer_chain)
    try:
        view = Path(backend.get_layer_mount_path(info, "box"))
        assert sorted(p.name for p in (view / "d").iterdir()) == ["new", "x"]
    finally:
        backend.unprepare_layer(info, "box")
        backend.deactivate_layer(info, "box")


def test_times_before_1601_show_on_disk_as_early_as_it_holds(
    backend: h.Backend, info: h.DriverInfo, chain: list[str]
) -> None:
    backend.import_layer(info, "layer", chain, io.BytesIO(file_with(mtime=-11644473601)))
    # Unix nanoseconds end in 1677: the disk time saturates there (or at the file
    # system's own limit), it does not wrap around into the future.
    assert Path(info.home, "layer", "Files", "a").stat().st_mtime < 0
