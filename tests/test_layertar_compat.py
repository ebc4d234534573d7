"""Layer tars as hcsshim reads and writes them (go-winio backuptar, hcsshim
pkg/ociwclayer): the entries hcsshim's importer attaches streams to, and the tars it
accepts with a clear meaning, imported and exported again in canonical form."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from winlayer import _hcs as h
from winlayer.layertar import list_layer_tar

from .test_layertar import FILES, build

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


@pytest.fixture
def backend(tmp_path: Path) -> h.Backend:
    return h.portable_backend(str(tmp_path / "base-images"))


@pytest.fixture
def info(tmp_path: Path) -> h.DriverInfo:
    (tmp_path / "home").mkdir()
    return h.DriverInfo(1, str(tmp_path / "home"))


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
