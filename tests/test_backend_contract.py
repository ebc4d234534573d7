"""The backend contract: the same scenarios against every backend available here.

`portable` runs everywhere; `hcs` runs where ``winlayer._hcs.hcs_backend()`` loads
(Windows with the Containers feature). Nothing here looks inside a layer folder: only
the contract's calls and the mount path are used.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capabilities import needs
from tests.layerbuild import E, base_layer, d, f, folder_tree, layer_tar, link, tar_tree, wh
from winlayer import _hcs
from winlayer.errors import (
    BackendUnavailable,
    DigestMismatch,
    InvalidLayer,
    LayerExists,
    LayerInUse,
    LayerNotFound,
)


def _backends() -> list[str]:
    names = ["portable"]
    try:
        _hcs.hcs_backend()
        names.append("hcs")
    except BackendUnavailable:
        pass
    return names


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> _hcs.Backend:
    if request.param == "hcs":
        return _hcs.hcs_backend()
    return _hcs.portable_backend(str(tmp_path / "base-images"))


@pytest.fixture
def info(tmp_path: Path) -> _hcs.DriverInfo:
    home = tmp_path / "home"
    home.mkdir()
    return _hcs.DriverInfo(1, str(home))


def _path(info: _hcs.DriverInfo, id: str) -> str:
    return os.path.join(info.home, id)


def _import(
    backend: _hcs.Backend, info: _hcs.DriverInfo, id: str, tar: bytes, parents: list[str]
) -> _hcs.ImportResult:
    return backend.import_layer(info, id, parents, io.BytesIO(tar))


def _export(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    id: str,
    parents: list[str],
    original: bool = False,
) -> bytes:
    with backend.export_layer(info, id, parents, original) as stream:
        return stream.read()


def _names(tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name: m for m in t.getmembers()}


@pytest.fixture
def mounted() -> Iterator[list[tuple[_hcs.Backend, _hcs.DriverInfo, str]]]:
    """Layers to unprepare and deactivate at the end, whatever happened."""
    held: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]] = []
    yield held
    for backend, info, id in reversed(held):
        backend.unprepare_layer(info, id)
        backend.deactivate_layer(info, id)


def _mount(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    id: str,
    parents: list[str],
    held: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> str:
    backend.activate_layer(info, id)
    backend.prepare_layer(info, id, parents)
    held.append((backend, info, id))
    return backend.get_layer_mount_path(info, id)


def _mounted_sandbox(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    held: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> tuple[list[str], Path]:
    """A sandbox "box" over an imported base layer, prepared: its chain and mount path."""
    _import(backend, info, "base", base_layer(), [])
    chain = [_path(info, "base")]
    backend.create_sandbox_layer(info, "box", chain[0], chain)
    return chain, Path(_mount(backend, info, "box", chain, held))


def _export_refuses(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    chain: list[str],
    root: Path,
    name: str,
    match: str,
) -> bytes:
    """Exporting the mounted sandbox "box" fails naming Files/<name>; once it is removed
    from the view, the export succeeds and is returned."""
    backend.unprepare_layer(info, "box")
    with pytest.raises(InvalidLayer, match=match) as exc:
        _export(backend, info, "box", chain)
    assert exc.value.entry == f"Files/{name}"
    backend.prepare_layer(info, "box", chain)
    (root / name).unlink()
    backend.unprepare_layer(info, "box")
    return _export(backend, info, "box", chain)


def test_create_exists_destroy(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    assert not backend.layer_exists(info, "one")
    backend.create_layer(info, "one", "")
    assert backend.layer_exists(info, "one")
    with pytest.raises(LayerExists):
        backend.create_layer(info, "one", "")
    backend.destroy_layer(info, "one")
    assert not backend.layer_exists(info, "one")
    with pytest.raises(LayerNotFound):
        backend.destroy_layer(info, "one")
    with pytest.raises(LayerNotFound):
        backend.activate_layer(info, "one")


def test_destroying_layers_of_one_image_leaves_a_sibling_image_whole(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    """Image removal destroys an image's own layers, newest first, while another image
    stacked on the same base keeps using it (what `images rm` and `prune` rely on)."""
    base = base_layer(f("Files/Windows/base.txt", b"b" * 5000))
    mine = layer_tar([d("Files/mine"), f("Files/mine/a.txt", b"a"), wh("Files/Windows/base.txt")])
    theirs = layer_tar([d("Files/theirs"), link("Files/theirs/l.txt", "Files/Windows/base.txt")])
    _import(backend, info, "base", base, [])
    parents = [_path(info, "base")]
    for id, tar in (("mine", mine), ("mine2", layer_tar([f("Files/mine/b.txt", b"b")]))):
        _import(backend, info, id, tar, parents)
        parents = [_path(info, id), *parents]
    _import(backend, info, "theirs", theirs, [_path(info, "base")])
    backend.destroy_layer(info, "mine2")
    backend.destroy_layer(info, "mine")
    assert not backend.layer_exists(info, "mine")
    assert backend.layer_exists(info, "base")
    assert _export(backend, info, "base", [], original=True) == base
    assert _export(backend, info, "theirs", [_path(info, "base")], original=True) == theirs
    assert (
        _names(_export(backend, info, "theirs", [_path(info, "base")])).keys()
        == _names(theirs).keys()
    )
    backend.destroy_layer(info, "theirs")
    backend.destroy_layer(info, "base")
    assert not any(backend.layer_exists(info, id) for id in ("base", "theirs"))


def test_import_then_original_export_is_byte_identical(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    tar = base_layer(f("Files/Windows/notes.txt", b"x" * 70_000))
    result = _import(backend, info, "base", tar, [])
    assert result.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert result.size == sum(m.size for m in _names(tar).values() if m.isreg())
    assert backend.layer_exists(info, "base")
    assert _export(backend, info, "base", [], original=True) == tar


def test_canonical_export_round_trips(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    tar = base_layer(link("Files/Windows/System32/k32.dll", "Files/Windows/System32/kernel32.dll"))
    _import(backend, info, "base", tar, [])
    canonical = _export(backend, info, "base", [])
    assert _export(backend, info, "base", []) == canonical  # deterministic
    _import(backend, info, "again", canonical, [])
    assert _export(backend, info, "again", []) == canonical
    members = _names(canonical)
    # The first name of a hard-link group in export order carries the data.
    assert members["Files/Windows/System32/k32.dll"].isreg()
    assert members["Files/Windows/System32/kernel32.dll"].islnk()
    assert members["Files/Windows/System32/kernel32.dll"].linkname == (
        "Files/Windows/System32/k32.dll"
    )
    assert members["Files/Windows/win.ini"].pax_headers["MSWINDOWS.fileattr"] == "32"


def test_import_existing_id_is_refused(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    _import(backend, info, "base", base_layer(), [])
    with pytest.raises(LayerExists):
        _import(backend, info, "base", base_layer(), [])


def test_import_into_created_empty_layer(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    """Docker's flow: Create, then ApplyDiff into the same id."""
    backend.create_layer(info, "base", "")
    tar = base_layer()
    _import(backend, info, "base", tar, [])
    assert _export(backend, info, "base", [], original=True) == tar


def test_digest_mismatch_leaves_no_layer(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    tar = base_layer()
    with pytest.raises(DigestMismatch) as exc:
        backend.import_layer(info, "base", [], io.BytesIO(tar), "sha256:" + "0" * 64)
    assert exc.value.actual == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert not backend.layer_exists(info, "base")


def test_hostile_entry_leaves_no_layer(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    tar = layer_tar([d("Files"), f("Files/ok.txt", b"ok"), link("Files/l", "Files/missing")])
    with pytest.raises(InvalidLayer) as exc:
        _import(backend, info, "bad", tar, [])
    assert exc.value.entry == "Files/l"
    assert not backend.layer_exists(info, "bad")


def _two_layers(
    backend: _hcs.Backend, info: _hcs.DriverInfo, last: E
) -> tuple[list[str], list[str]]:
    """Import l1 (a base layer with Files/Windows/gone.txt) and l2 on it (deleting win.ini,
    a hard link k32.dll to a file of l1, then `last`); their chains, l1's and l2's."""
    _import(backend, info, "l1", base_layer(f("Files/Windows/gone.txt", b"bye")), [])
    chain1 = [_path(info, "l1")]
    l2 = layer_tar(
        [
            d("Files"),
            d("Files/Windows"),
            wh("Files/Windows/win.ini"),
            link("Files/Windows/k32.dll", "Files/Windows/System32/kernel32.dll"),
            last,
        ]
    )
    _import(backend, info, "l2", l2, chain1)
    return chain1, [_path(info, "l2"), *chain1]


def test_chain_whiteouts_and_hard_links(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    mounted: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> None:
    chain1, chain2 = _two_layers(backend, info, f("Files/Windows/new.txt", b"l2"))
    l3 = layer_tar(
        [
            d("Files"),
            d("Files/Windows"),
            wh("Files/Windows/gone.txt"),
            f("Files/Windows/win.ini", b"back again"),
            link("Files/Windows/n2.txt", "Files/Windows/new.txt"),
        ]
    )
    _import(backend, info, "l3", l3, chain2)
    chain3 = [_path(info, "l3"), *chain2]
    backend.create_sandbox_layer(info, "box", chain3[0], chain3)
    view = folder_tree(_mount(backend, info, "box", chain3, mounted))
    assert view["Windows/win.ini"] == b"back again"
    assert "Windows/gone.txt" not in view
    assert view["Windows/k32.dll"] == b"MZ" + bytes(1000)
    assert view["Windows/n2.txt"] == b"l2"
    assert view["Windows/System32/kernel32.dll"] == b"MZ" + bytes(1000)
    # The layers export their own changes, links to parents kept as links.
    members = _names(_export(backend, info, "l2", chain1))
    assert members["Files/Windows/.wh.win.ini"].isreg()
    assert members["Files/Windows/k32.dll"].linkname == "Files/Windows/System32/kernel32.dll"


def _merged(backend: _hcs.Backend, layers: list[tuple[_hcs.DriverInfo, str, list[str]]]) -> bytes:
    with backend.export_merged(layers) as stream:
        return stream.read()


def test_merged_export_is_what_the_sandbox_view_shows(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    mounted: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> None:
    chain1, chain2 = _two_layers(
        backend, info, f("Files/Windows/System32", b"a file where a folder was")
    )
    merged = _merged(backend, [(info, "l2", chain1), (info, "l1", [])])
    names = _names(merged)
    assert not [n for n in names if ".wh." in n]
    # The link's target went with its folder: the link carries the file itself.
    assert names["Files/Windows/k32.dll"].isreg()
    assert "Hives/System_Delta" in names
    backend.create_sandbox_layer(info, "box", chain2[0], chain2)
    view = folder_tree(_mount(backend, info, "box", chain2, mounted))
    assert tar_tree(merged) == view
    # It imports as a base layer.
    _import(backend, info, "flat", merged, [])
    assert _export(backend, info, "flat", []) == merged


def test_merged_export_of_one_layer_is_its_canonical_export(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    _import(backend, info, "base", base_layer(link("Files/two.ini", "Files/Windows/win.ini")), [])
    assert _merged(backend, [(info, "base", [])]) == _export(backend, info, "base", [])


def test_merged_export_refuses_a_link_without_its_file(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    _import(backend, info, "base", base_layer(), [])
    chain = [_path(info, "base")]
    top = layer_tar([d("Files"), link("Files/l", "Files/Windows/win.ini")])
    _import(backend, info, "top", top, chain)
    # The chain given without the layer that holds the link's file.
    with pytest.raises(InvalidLayer, match="Files/l"):
        _merged(backend, [(info, "top", chain)])
    with pytest.raises(LayerNotFound):
        _merged(backend, [(info, "missing", [])])


def test_view_layer_shows_the_chain(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    mounted: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> None:
    _import(backend, info, "base", base_layer(), [])
    chain = [_path(info, "base")]
    backend.create_view_layer(info, "ro", chain[0], chain)
    root = _mount(backend, info, "ro", chain, mounted)
    assert folder_tree(root)["Windows/win.ini"] == b"[fonts]\r\n"
    try:
        Path(root, "written.txt").write_bytes(b"x")
        refused = 0
    except OSError as exc:
        refused = exc.errno or -1
    # Read-only where the backend can make it so (the portable overlay view), else a
    # writable sandbox whose changes go with it.
    assert refused in (0, errno.EROFS)
    mounted.remove((backend, info, "ro"))
    backend.unprepare_layer(info, "ro")
    backend.deactivate_layer(info, "ro")
    backend.destroy_layer(info, "ro")  # and with it whatever a writable view got
    assert not backend.layer_exists(info, "ro")
    assert folder_tree(_path(info, "base"))  # the chain is untouched
    assert "written.txt" not in os.listdir(os.path.join(_path(info, "base"), "Files"))


def test_sandbox_write_export_import_same_content(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    mounted: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> None:
    chain, root = _mounted_sandbox(backend, info, mounted)
    (root / "Windows" / "added.txt").write_bytes(b"added")
    (root / "Windows" / "win.ini").write_bytes(b"[changed]\r\n")
    (root / "Windows" / "System32" / "kernel32.dll").unlink()
    (root / "Program Files").mkdir()
    (root / "Program Files" / "app.exe").write_bytes(b"MZapp")
    expected = folder_tree(str(root))
    backend.unprepare_layer(info, "box")
    diff = _export(backend, info, "box", chain)
    members = _names(diff)
    assert members["Files/Windows/System32/.wh.kernel32.dll"].isreg()
    assert members["Files/Program Files/app.exe"].pax_headers["MSWINDOWS.fileattr"] == "32"
    assert members["Files/Program Files"].pax_headers["MSWINDOWS.fileattr"] == "16"
    assert "Files/Windows/System32/kernel32.dll" not in members
    _import(backend, info, "committed", diff, chain)
    chain2 = [_path(info, "committed"), *chain]
    backend.create_sandbox_layer(info, "box2", chain2[0], chain2)
    assert folder_tree(_mount(backend, info, "box2", chain2, mounted)) == expected


@needs("mkfifo")
def test_sandbox_symlinks_export_as_windows_symlinks(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    mounted: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> None:
    """POSIX symlinks made in a portable sandbox's view become the Windows symlinks a
    container would see: targets with backslashes, absolute ones on C:, folder links
    (0x410) when the target is a folder, file links (0x420) otherwise; a file replaced by
    a link is exported too. The layer made from the diff holds them."""
    if backend.name != "portable":
        pytest.skip("POSIX symlinks are the portable backend's view; HCS views hold NTFS links")
    chain, root = _mounted_sandbox(backend, info, mounted)
    (root / "Windows" / "ini.lnk").symlink_to("win.ini")
    (root / "sys32").symlink_to("Windows/System32")
    (root / "Windows" / "abs").symlink_to("/Windows/System32/kernel32.dll")
    (root / "Windows" / "dangling").symlink_to("../nowhere/x")
    (root / "Windows" / "win.ini").unlink()
    (root / "Windows" / "win.ini").symlink_to("System32/kernel32.dll")
    os.mkfifo(root / "fifo")
    diff = _export_refuses(backend, info, chain, root, "fifo", "symbolic links")
    members = _names(diff)
    links = {
        name: (m.linkname, m.pax_headers["MSWINDOWS.fileattr"])
        for name, m in members.items()
        if m.issym()
    }
    assert links == {
        "Files/Windows/ini.lnk": ("win.ini", "1056"),
        "Files/sys32": ("Windows\\System32", "1040"),
        "Files/Windows/abs": ("C:\\Windows\\System32\\kernel32.dll", "1056"),
        "Files/Windows/dangling": ("..\\nowhere\\x", "1056"),
        "Files/Windows/win.ini": ("System32\\kernel32.dll", "1056"),
    }
    _import(backend, info, "committed", diff, chain)
    again = _names(_export(backend, info, "committed", chain))
    assert {n for n, m in again.items() if m.issym()} == set(links)


def test_sandbox_symlink_windows_cannot_hold_is_refused(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    mounted: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> None:
    """A view's symlink whose target is not UTF-8 has no Windows form: InvalidLayer naming
    it. A target with a name too long to look up is still exported (as a file link)."""
    if backend.name != "portable":
        pytest.skip("POSIX symlinks are the portable backend's view; HCS views hold NTFS links")
    chain, root = _mounted_sandbox(backend, info, mounted)
    os.symlink("y" * 300, root / "long")
    os.symlink(b"\xff\xfe", bytes(root / "bad"))
    members = _names(_export_refuses(backend, info, chain, root, "bad", "not UTF-8"))
    assert members["Files/long"].linkname == "y" * 300
    assert members["Files/long"].pax_headers["MSWINDOWS.fileattr"] == "1056"


def test_prepared_sandbox_cannot_be_destroyed(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    mounted: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> None:
    _mounted_sandbox(backend, info, mounted)
    with pytest.raises(LayerInUse):
        backend.destroy_layer(info, "box")
    assert backend.layer_exists(info, "box")


def test_read_only_layer_mounts_at_its_folder(
    backend: _hcs.Backend,
    info: _hcs.DriverInfo,
    mounted: list[tuple[_hcs.Backend, _hcs.DriverInfo, str]],
) -> None:
    _import(backend, info, "base", base_layer(), [])
    path = _mount(backend, info, "base", [], mounted)
    assert os.path.samefile(path.rstrip("\\/") or path, _path(info, "base"))


def test_name_to_guid_is_deterministic(backend: _hcs.Backend) -> None:
    guid = backend.name_to_guid("layer-a")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", guid)
    assert backend.name_to_guid("layer-a") == guid
    assert backend.name_to_guid("layer-b") != guid


def test_get_base_images_shape(backend: _hcs.Backend) -> None:
    import json

    images = json.loads(backend.get_base_images())
    assert isinstance(images["Images"], list)
    for image in images["Images"]:
        assert {"Name", "Version", "Path", "Size", "CreatedTime"} <= set(image)


def test_process_base_image_needs_the_hives(backend: _hcs.Backend, tmp_path: Path) -> None:
    layer = tmp_path / "image"
    (layer / "Files").mkdir(parents=True)
    with pytest.raises(FileNotFoundError):
        backend.process_base_image(str(layer))


@pytest.mark.skipif(sys.platform == "win32", reason="the hcs backend is real on Windows")
def test_hcs_backend_unavailable_here() -> None:
    with pytest.raises(BackendUnavailable, match="portable"):
        _hcs.hcs_backend()
