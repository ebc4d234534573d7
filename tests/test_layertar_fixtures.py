"""Every real-world fixture through the layer-tar listing, and every input form (path,
file object, pipe-like stream; plain, gzip, zstd)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from winlayer import InvalidLayer, list_layer_tar
from winlayer import _hcs as h


def docker_save_layer(fixtures_dir: Path) -> bytes:
    """The layer tar inside the docker-save archive fixture."""
    with tarfile.open(fixtures_dir / "windows-mini-image.tar.gz") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer_name = manifest[0]["Layers"][0]
        member = archive.getmember(layer_name)
        if member.issym():  # <id>/layer.tar -> ../<digest>.tar
            member = archive.getmember(str(Path(layer_name).parent.parent / member.linkname))
        data = archive.extractfile(member)
        assert data is not None
        return data.read()


def test_container_rootfs(fixtures_dir: Path) -> None:
    path = fixtures_dir / "windows-container-rootfs.tar"
    raw = path.read_bytes()
    with list_layer_tar(path) as layer:
        entries = list(layer)
    assert len(entries) == 24
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert layer.compression == "none"
    assert layer.data_size == 5510
    by_path = {e.path: e for e in entries}
    assert by_path["Files"].type == "directory"
    license_file = by_path["Files/License.txt"]
    assert (license_file.type, license_file.size, license_file.attributes) == ("file", 5510, 32)
    assert license_file.last_write_time is not None
    assert license_file.last_write_time.isoformat() == "2021-04-30T07:18:13+00:00"
    assert all(e.security_descriptor == b"" for e in entries)  # no MSWINDOWS records


def test_buildpacks_layer_is_rejected_naming_the_root_entry(fixtures_dir: Path) -> None:
    with pytest.raises(InvalidLayer) as info:
        list(list_layer_tar(fixtures_dir / "some-windows-layer.tar"))
    # the first entry outside Files/ and Hives/ (the fifth), after four entries of one
    # header + one data block or a header alone
    assert info.value.entry == "root/"
    assert "outside the layer's top-level folders" in info.value.reason
    assert info.value.offset == 3072


def test_docker_save_layer_with_trimmed_hard_link_targets(fixtures_dir: Path) -> None:
    layer = docker_save_layer(fixtures_dir)
    with pytest.raises(InvalidLayer) as info:
        list(list_layer_tar(io.BytesIO(layer)))
    err = info.value
    assert (
        err.entry == "Files/Windows/System32/Licenses/neutral/Volume/ServerDatacenter/license.rtf"
    )
    assert "is not in this layer" in err.reason
    assert err.offset == 17920
    # through the import driver: the writer refuses it (no parents), aborted, no commit
    calls, trace_err = h.trace_layer_import(io.BytesIO(layer))
    assert isinstance(trace_err, InvalidLayer)
    assert trace_err.entry == err.entry
    assert trace_err.offset == err.offset
    assert calls[-1][0] == "abort"
    assert "commit" not in [c[0] for c in calls]


def test_docker_save_layer_lists_when_parents_may_hold_the_targets(fixtures_dir: Path) -> None:
    layer = docker_save_layer(fixtures_dir)
    with list_layer_tar(io.BytesIO(layer), allow_parent_links=True) as listing:
        entries = list(listing)
    links = [(e.path, e.link_target) for e in entries if e.type == "hard_link"]
    assert ("UtilityVM/Files/License.txt", "Files/License.txt") in links
    assert len(links) == 4
    assert entries[-1].path == "UtilityVM/Files/License.txt"
    assert listing.diff_id == "sha256:" + hashlib.sha256(layer).hexdigest()


class Pipe(io.RawIOBase):
    """A non-seekable, non-peekable stream that returns short reads."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), len(self._data), 777)
        b[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("form", ["path", "file", "pipe"])
def test_every_input_form(fixtures_dir: Path, tmp_path: Path, compression: str, form: str) -> None:
    raw = (fixtures_dir / "windows-container-rootfs.tar").read_bytes()
    blob = {
        "none": lambda d: d,
        "gzip": gzip.compress,
        "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
    }[compression](raw)
    path = tmp_path / "layer"
    path.write_bytes(blob)
    with contextlib.ExitStack() as stack:
        source: object = path
        if form == "file":
            source = stack.enter_context(open(path, "rb"))
        elif form == "pipe":
            source = Pipe(blob)
        with list_layer_tar(source) as layer:  # type: ignore[arg-type]
            paths = [e.path for e in layer]
    assert len(paths) == 24
    assert layer.compression == compression
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_corrupt_gzip_is_an_invalid_layer(fixtures_dir: Path) -> None:
    blob = bytearray(gzip.compress((fixtures_dir / "windows-container-rootfs.tar").read_bytes()))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(InvalidLayer):
        list(list_layer_tar(io.BytesIO(bytes(blob))))
