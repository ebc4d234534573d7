"""Backend.layer_changes: a layer's entries from the backend's reader, without a tar."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.layerbuild import base_layer, d, f, layer_tar, link, wh
from tests.test_portable_backend import _every_kind_layer
from winlayer import _hcs
from winlayer.errors import LayerNotFound
from winlayer.layertar import list_layer_tar

KINDS = {
    "directory": "dir",
    "file": "file",
    "symlink": "symlink",
    "alternate_stream": "stream",
    "hard_link": "link",
    "whiteout": "whiteout",
}


def from_export(
    backend: _hcs.Backend, info: _hcs.DriverInfo, id: str, parents: list[str]
) -> list[tuple[str, str, int]]:
    """The same entries the long way: canonical export tar, parsed again."""
    with (
        backend.export_layer(info, id, parents) as stream,
        list_layer_tar(stream, allow_parent_links=True) as listing,
    ):
        return [(e.path, KINDS[e.type], e.size) for e in listing]


def test_every_kind_agrees_with_the_exported_tar(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    backend.import_layer(info, "base", [], io.BytesIO(_every_kind_layer()))
    changes = backend.layer_changes(info, "base", [])
    assert changes == from_export(backend, info, "base", [])
    kinds = {kind for _path, kind, _size in changes}
    assert kinds == {"dir", "file", "symlink", "stream", "link"}
    assert all(size == 0 for _p, kind, size in changes if kind not in ("file", "stream"))
    assert any(size > 0 for _p, kind, size in changes if kind == "stream")


def test_a_child_layer_lists_its_whiteouts_and_links_to_parents(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    backend.import_layer(info, "base", [], io.BytesIO(base_layer()))
    base = str(Path(info.home) / "base")
    child = layer_tar(
        [
            d("Files"),
            d("Files/Windows"),
            f("Files/Windows/win.ini", b"[changed]\r\n" * 100),
            f("Files/new.txt", b"new"),
            link("Files/k32.dll", "Files/Windows/System32/kernel32.dll"),
            wh("Hives/System_Delta"),
        ]
    )
    backend.import_layer(info, "child", [base], io.BytesIO(child))
    changes = backend.layer_changes(info, "child", [base])
    assert changes == from_export(backend, info, "child", [base])
    assert ("Files/Windows/win.ini", "file", 1100) in changes
    assert ("Files/k32.dll", "link", 0) in changes
    assert ("Hives/System_Delta", "whiteout", 0) in changes


def test_a_missing_layer_is_reported(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    with pytest.raises(LayerNotFound):
        backend.layer_changes(info, "nope", [])
