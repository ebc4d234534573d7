"""An image's merged file system: export-rootfs (Driver.merged, images.export_rootfs, the
CLI) and read-only views (Driver.view, images.mount_image, ``images mount``)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from winlayer import Driver, LayerInUse, WinlayerError
from winlayer.images import (
    ImageNotFound,
    ImageStore,
    export_rootfs,
    install_base_image,
    load,
    mount_image,
    restore_custom_images,
    unmount_image,
)
from winlayer.layertar import list_layer_tar

from . import stores
from .capabilities import missing
from .conftest import REPO, Cli, rss_budget_kib
from .imagebuild import docker_save
from .layerbuild import E, base_layer, d, f, folder_tree, layer_tar, link, tar_tree, wh

# O:SYG:SY, a security descriptor other than the default one of layerbuild.
SD_SY = "AQAAgBQAAAAgAAAAAAAAAAAAAAABAQAAAAAABRIAAAABAQAAAAAABRIAAAA="


driver = stores.portable_driver
store = stores.store


def load_image(driver: Driver, store: ImageStore, layers: list[bytes], tag: str) -> str:
    archive, _config = docker_save(layers)
    (image,) = load(driver, store, io.BytesIO(archive), tag=tag)
    return image.id


def rootfs(driver: Driver, store: ImageStore, ref: str) -> bytes:
    out = io.BytesIO()
    export_rootfs(driver, store, ref, out)
    return out.getvalue()


# A three-layer chain with every kind of change.
BASE = base_layer(
    d("Files/gone"),
    f("Files/gone/inside.txt", b"x"),
    d("Files/opaque"),
    f("Files/opaque/kept.txt", b"kept"),
    f("Files/file.txt", b"old"),
    f("Files/becomes_dir", b"was a file"),
    d("Files/becomes_file"),
    f("Files/becomes_file/child", b"hidden"),
    f("Files/Case.TXT", b"base case"),
    d("Files/Program Files"),
    f("Files/Program Files/app.exe", b"MZ"),
    f("Files/deleted.txt", b"deleted"),
)
MIDDLE = layer_tar(
    [
        d("Files"),
        wh("Files/gone"),
        wh("Files/deleted.txt"),
        E("Files/opaque/.wh..wh..opq", "whiteout"),
        f("Files/opaque/new.txt", b"new"),
        f("Files/file.txt", b"middle"),
        d("Files/becomes_dir"),
        f("Files/becomes_dir/child.txt", b"now a folder"),
        f("Files/becomes_file", b"now a file"),
    ]
)
TOP = layer_tar(
    [
        d("Files"),
        f("Files/file.txt", b"top"),
        f("Files/case.txt", b"top case"),
        d("Files/PROGRAM FILES"),
        f("Files/PROGRAM FILES/tool.exe", b"MZ2"),
        f("Files/gone", b"a file where a deleted folder was"),
    ]
)


def test_three_layer_chain(driver: Driver, store: ImageStore) -> None:
    load_image(driver, store, [BASE, MIDDLE, TOP], "app:1")
    merged = tar_tree(rootfs(driver, store, "app:1"))
    assert merged == {
        "Windows": None,
        "Windows/win.ini": b"[fonts]\r\n",
        "Windows/System32": None,
        "Windows/System32/kernel32.dll": b"MZ" + bytes(1000),
        "gone": b"a file where a deleted folder was",
        "opaque": None,
        "opaque/kept.txt": b"kept",  # an opaque marker hides nothing (layer model)
        "opaque/new.txt": b"new",
        "file.txt": b"top",
        "becomes_dir": None,
        "becomes_dir/child.txt": b"now a folder",
        "becomes_file": b"now a file",
        "case.txt": b"top case",  # the nearest spelling of one NTFS name
        "PROGRAM FILES": None,
        "PROGRAM FILES/app.exe": b"MZ",
        "PROGRAM FILES/tool.exe": b"MZ2",
    }


def test_merged_tar_matches_a_sandbox_view(
    driver: Driver, store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The copy view merges names as NTFS does: an independent computation of the result.
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", "copy")
    image_id = load_image(driver, store, [BASE, MIDDLE, TOP], "app:1")
    top = store.layer(store.get(image_id).layers[-1])
    assert top is not None
    driver.create("sandbox", top.layer_id, read_write=True)
    with driver.mounted("sandbox") as view:
        seen = folder_tree(view)
    assert tar_tree(rootfs(driver, store, "app:1")) == seen


def test_a_respelled_folder_reorders_the_farther_layers_entries(
    driver: Driver, store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The base lists Files/Wa.txt before Files/Windows; spelled WINDOWS by the top layer,
    # the folder sorts first, so the base's reader has to go back for Wa.txt.
    base = layer_tar(
        [d("Files"), f("Files/Wa.txt", b"wa"), d("Files/Windows"), f("Files/Windows/x.txt", b"x")]
    )
    top = layer_tar([d("Files"), d("Files/WINDOWS"), f("Files/WINDOWS/y.txt", b"y")])
    load_image(driver, store, [base, top], "spell:1")
    merged = rootfs(driver, store, "spell:1")
    with tarfile.open(fileobj=io.BytesIO(merged)) as t:
        assert t.getnames() == [
            "Files",
            "Files/WINDOWS",
            "Files/WINDOWS/x.txt",
            "Files/WINDOWS/y.txt",
            "Files/Wa.txt",
        ]
    assert tar_tree(merged)["Wa.txt"] == b"wa"
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", "copy")
    top_layer = store.layer(store.get("spell:1").layers[-1])
    assert top_layer is not None
    driver.create("sandbox", top_layer.layer_id, read_write=True)
    with driver.mounted("sandbox") as view:
        assert folder_tree(view) == tar_tree(merged)
    driver.apply_diff("flat", None, io.BytesIO(merged))
    with driver.diff("flat") as again:
        assert again.read() == merged


def test_merged_tar_imports_as_the_same_base_layer(driver: Driver, store: ImageStore) -> None:
    load_image(driver, store, [BASE, MIDDLE, TOP], "app:1")
    merged = rootfs(driver, store, "app:1")
    with tarfile.open(fileobj=io.BytesIO(merged)) as t:
        names = t.getnames()
    assert not [n for n in names if ".wh." in n]
    assert "Hives/System_Delta" in names  # from the base, the only layer with hives
    driver.apply_diff("flat", None, io.BytesIO(merged))
    with driver.diff("flat") as again:
        assert again.read() == merged  # canonical: importing and exporting changes nothing


def test_single_layer_is_the_layers_canonical_export(driver: Driver, store: ImageStore) -> None:
    layer = layer_tar(
        [
            d("Files"),
            f("Files/win.ini", b"[fonts]"),
            E("Files/win.ini:Zone.Identifier", "ads", b"[ZoneTransfer]"),
            link("Files/win2.ini", "Files/win.ini"),
            E("Files/sy.txt", "file", b"sy", pax={"MSWINDOWS.rawsd": SD_SY}),
            d("Hives"),
            f("Hives/System_Delta", b"regf"),
        ]
    )
    image_id = load_image(driver, store, [layer], "one:1")
    stored = store.layer(store.get(image_id).layers[0])
    assert stored is not None
    with driver.diff(stored.layer_id) as canonical:
        assert rootfs(driver, store, "one:1") == canonical.read()


def test_streams_and_security_descriptors_of_the_nearest_version(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    upper = layer_tar(
        [
            d("Files"),
            E("Files/file.txt", "file", b"upper", pax={"MSWINDOWS.rawsd": SD_SY}),
            E("Files/file.txt:s1", "ads", b"upper stream"),
        ]
    )
    lower = layer_tar(
        [
            d("Files"),
            f("Files/file.txt", b"lower"),
            E("Files/file.txt:old", "ads", b"lower stream"),
            f("Files/other.txt", b"other"),
            E("Files/other.txt:keep", "ads", b"kept stream"),
        ]
    )
    load_image(driver, store, [lower, upper], "sd:1")
    out = tmp_path / "rootfs.tar"
    export_rootfs(driver, store, "sd:1", out)
    with list_layer_tar(str(out)) as listing:
        entries = {e.path: e for e in listing}
    assert "Files/file.txt:old" not in entries  # the lower version's stream went with it
    assert entries["Files/file.txt:s1"].size == len(b"upper stream")
    assert entries["Files/other.txt:keep"].size == len(b"kept stream")
    with list_layer_tar(io.BytesIO(upper)) as listing:
        upper_sd = next(e for e in listing if e.path == "Files/file.txt").security_descriptor
    with list_layer_tar(io.BytesIO(lower)) as listing:
        lower_sd = next(e for e in listing if e.path == "Files/file.txt").security_descriptor
    assert upper_sd != lower_sd
    assert entries["Files/file.txt"].security_descriptor == upper_sd


def links(tar: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name: m.linkname for m in t.getmembers() if m.islnk()}


def test_hard_links_never_point_at_another_file(driver: Driver, store: ImageStore) -> None:
    lower = base_layer(
        f("Files/a.txt", b"group a"),
        link("Files/b.txt", "Files/a.txt"),
        link("Files/c.txt", "Files/a.txt"),
        f("Files/keep.txt", b"group keep"),
        link("Files/keep2.txt", "Files/keep.txt"),
        f("Files/doomed.txt", b"doomed content"),
    )
    middle = layer_tar(
        [
            d("Files"),
            link("Files/to_keep.txt", "Files/keep.txt"),  # a link to a parent's file
            link("Files/to_doomed.txt", "Files/doomed.txt"),
        ]
    )
    top = layer_tar(
        [
            d("Files"),
            f("Files/a.txt", b"replaced"),  # the group's data carrier is replaced
            wh("Files/doomed.txt"),  # the parent file a middle link names is deleted
        ]
    )
    load_image(driver, store, [lower, middle, top], "links:1")
    merged = rootfs(driver, store, "links:1")
    assert links(merged) == {
        "Files/c.txt": "Files/b.txt",  # b.txt now carries group a's data
        "Files/keep2.txt": "Files/keep.txt",
        "Files/to_keep.txt": "Files/keep.txt",
    }
    files = tar_tree(merged)
    assert files["a.txt"] == b"replaced"
    assert files["b.txt"] == files["c.txt"] == b"group a"
    assert files["to_keep.txt"] == b"group keep"
    assert files["to_doomed.txt"] == b"doomed content"  # its own copy: the target is gone
    assert "doomed.txt" not in files
    driver.apply_diff("flat", None, io.BytesIO(merged))  # every link resolves in the tar


def test_host_base_image(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    layer = base_layer(f("Files/hello.txt", b"hi"))
    install_base_image(
        driver, "servercore", "1.0", io.BytesIO(layer), base_images=driver.base_images
    )
    (image_id,) = restore_custom_images(driver, store, store)
    assert store.get("servercore:1.0").layers == ()
    merged = rootfs(driver, store, "servercore:1.0")
    with driver.diff(image_id) as canonical:
        assert merged == canonical.read()
    assert tar_tree(merged)["hello.txt"] == b"hi"


def test_bad_reference_writes_nothing(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    with pytest.raises(ImageNotFound, match="nosuch:1"):
        export_rootfs(driver, store, "nosuch:1", out)
    assert os.listdir(tmp_path) == ["home"]


def test_a_layer_gone_from_the_driver_writes_nothing(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image_id = load_image(driver, store, [BASE], "app:1")
    stored = store.layer(store.get(image_id).layers[0])
    assert stored is not None
    shutil.rmtree(driver.home / stored.layer_id)  # a store that lost the layer
    out = tmp_path / "out.tar"
    out.write_bytes(b"previous")
    with pytest.raises(WinlayerError, match=stored.layer_id):
        export_rootfs(driver, store, "app:1", out)
    assert out.read_bytes() == b"previous"
    assert [n for n in os.listdir(tmp_path) if "partial" in n] == []


# -- CLI ---------------------------------------------------------------------------------


def cli_image(cli: Cli, tmp_path: Path, layers: list[bytes]) -> str:
    """Loads an image tagged app:1 through the CLI; its id."""
    archive, _config = docker_save(layers, tags=["app:1"])
    (tmp_path / "app.tar").write_bytes(archive)
    (loaded,) = cli.json("load", str(tmp_path / "app.tar"))  # type: ignore[misc]
    return str(loaded["id"])


def test_cli_export_rootfs(cli: Cli, tmp_path: Path) -> None:
    image_id = cli_image(cli, tmp_path, [BASE, MIDDLE, TOP])
    out = tmp_path / "rootfs.tar"
    result = cli.json("export-rootfs", "app:1", "-o", str(out))
    assert isinstance(result, dict)
    assert result["image"] == image_id
    assert result["size"] == out.stat().st_size
    assert result["output"] == str(out)
    piped = cli("export-rootfs", "app:1")
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == out.read_bytes()
    assert tar_tree(piped.stdout)["file.txt"] == b"top"


def test_cli_export_rootfs_bad_ref(cli: Cli, tmp_path: Path) -> None:
    cli_image(cli, tmp_path, [BASE])
    out = tmp_path / "rootfs.tar"
    result = cli("export-rootfs", "nosuch", "-o", str(out))
    assert result.returncode == 1
    assert b"image not found: 'nosuch'" in result.stderr
    assert not out.exists()


# -- read-only views ----------------------------------------------------------------------


def overlay_mode() -> bool:
    """Whether sandboxes mount overlays here (root, not forced to copies); never where
    there are no POSIX user ids."""
    if missing("euid"):
        return False
    return os.environ.get("WINLAYER_PORTABLE_MOUNT", "auto") != "copy" and os.geteuid() == 0


def test_view_shows_the_merged_files_read_only(driver: Driver, store: ImageStore) -> None:
    # No name spelled twice: an overlay view shows such names as Linux sees them.
    load_image(driver, store, [BASE, MIDDLE], "app:1")
    view = mount_image(driver, store, "app:1", holder="test")
    assert view.image.startswith("sha256:")
    assert folder_tree(view.path) == tar_tree(rootfs(driver, store, "app:1"))
    if overlay_mode():
        with pytest.raises(OSError, match="Read-only file system"):
            (view.path / "new.txt").write_bytes(b"x")
    assert driver.view(view.layer, holder="test") == view.path  # counted, one view
    unmount_image(driver, store, "app:1", holder="test")
    assert view.path.is_dir()
    assert unmount_image(driver, store, "app:1", holder="test").startswith("sha256:")
    assert not view.path.exists()
    assert views(driver) == []
    with pytest.raises(WinlayerError, match="no view held by holder 'test'"):
        unmount_image(driver, store, "app:1", holder="test")


def test_a_layer_with_a_view_cannot_be_removed(driver: Driver) -> None:
    driver.apply_diff("base", None, io.BytesIO(BASE))
    driver.apply_diff("top", "base", io.BytesIO(MIDDLE))
    path = driver.view("top")
    assert (path / "becomes_file").read_bytes() == b"now a file"
    with pytest.raises(LayerInUse, match="read-only view"):
        driver.remove("top")
    driver.unview("top")
    assert not path.exists()
    driver.remove("top")  # nothing holds the layer any more


def test_copy_view_discards_writes(
    driver: Driver, store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", "copy")
    load_image(driver, store, [BASE], "app:1")
    view = mount_image(driver, store, "app:1", holder="test")
    (view.path / "scratch.txt").write_bytes(b"written")
    unmount_image(driver, store, "app:1", holder="test")
    again = mount_image(driver, store, "app:1", holder="test")
    assert not (again.path / "scratch.txt").exists()
    unmount_image(driver, store, "app:1", holder="test")


def test_views_of_two_holders_are_apart(driver: Driver, store: ImageStore) -> None:
    load_image(driver, store, [BASE], "app:1")
    one = mount_image(driver, store, "app:1", holder="one")
    two = mount_image(driver, store, "app:1", holder="two")
    assert one.path != two.path
    unmount_image(driver, store, "app:1", holder="one")
    assert (two.path / "Windows" / "win.ini").read_bytes() == b"[fonts]\r\n"
    unmount_image(driver, store, "app:1", holder="two")


def test_view_of_a_dead_process_is_swept(driver: Driver, store: ImageStore) -> None:
    load_image(driver, store, [BASE], "app:1")
    layer = store.layer(store.get("app:1").layers[0])
    assert layer is not None
    code = f"""
import os
from winlayer import Driver
d = Driver({str(driver.home)!r}, backend="portable", base_images={str(driver.base_images)!r})
print(d.view({layer.layer_id!r}))
os._exit(0)  # no unview: the process holder dies
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    path = Path(done.stdout.strip())
    assert path.is_dir()
    swept = driver.cleanup()
    assert any("removed unused view" in s for s in swept), swept
    assert not path.exists()
    assert views(driver) == []


def test_view_left_unmounted_by_a_crash_is_swept_at_open(driver: Driver, store: ImageStore) -> None:
    load_image(driver, store, [BASE], "app:1")
    layer = store.layer(store.get("app:1").layers[0])
    assert layer is not None
    # A crash between the view's creation and its mount leaves an unheld view.
    view_id = f"{layer.layer_id}-0000000000000000-winlayer-view"
    parents = [str(driver.home / layer.layer_id)]
    driver._backend.create_view_layer(driver._info, view_id, parents[0], parents)
    reopened = Driver(driver.home, backend="portable", base_images=driver.base_images)
    assert views(reopened) == []


def views(driver: Driver) -> list[str]:
    return [n for n in os.listdir(driver.home) if n.endswith("-winlayer-view")]


def test_view_ids_are_not_layer_ids(driver: Driver) -> None:
    with pytest.raises(ValueError, match="invalid layer id"):
        driver.create("x-winlayer-view")


def test_cli_images_mount(cli: Cli, tmp_path: Path) -> None:
    cli_image(cli, tmp_path, [BASE, MIDDLE, TOP])
    mounted = cli.json("images", "mount", "app:1")
    assert isinstance(mounted, dict)
    path = Path(mounted["path"])
    assert (path / "file.txt").read_bytes() == b"top"
    assert mounted["image"].startswith("sha256:")
    unmounted = cli.json("images", "unmount", "app:1")
    assert unmounted == {"image": mounted["image"]}
    assert not path.exists()
    again = cli("images", "unmount", "app:1")
    assert again.returncode == 1
    assert b"has no view held by holder 'cli'" in again.stderr


def test_cli_images_mount_bad_ref(cli: Cli, tmp_path: Path) -> None:
    cli_image(cli, tmp_path, [BASE])
    result = cli("images", "mount", "nosuch")
    assert result.returncode == 1
    assert json.dumps("nosuch").replace('"', "'").encode() in result.stderr


_BIG = r"""
import io, json, resource, sys, tarfile
sys.path.insert(0, sys.argv[1])
from tests.layerbuild import base_layer, d, f, layer_tar
from winlayer import Driver
from winlayer.images import ImageStore, export_rootfs, load
from tests.imagebuild import docker_save

home, size = sys.argv[2], int(sys.argv[3])

class Zeros(io.RawIOBase):
    def __init__(self, n): self.left = n
    def readable(self): return True
    def readinto(self, b):
        n = min(len(b), self.left); b[:n] = bytes(n); self.left -= n; return n

big = f"{home}-big.tar"
with tarfile.open(big, "w", format=tarfile.PAX_FORMAT) as t:
    for name in ("Files", "Files/big"):
        info = tarfile.TarInfo(name); info.type = tarfile.DIRTYPE; t.addfile(info)
    info = tarfile.TarInfo("Files/big/data.bin"); info.size = size
    t.addfile(info, Zeros(size))
driver = Driver(home, backend="portable", base_images=home + "-base")
with ImageStore(driver.home) as store:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver.apply_diff("big", "base", big)
    driver.apply_diff("top", "big", io.BytesIO(layer_tar([d("Files"), f("Files/top.txt", b"t")])))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with driver.merged("top") as tar, open(home + "-rootfs.tar", "wb") as out:
        while chunk := tar.read(1 << 20):
            out.write(chunk)
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"rss_growth_kib": growth}))
"""


def test_merged_export_streams_with_bounded_memory(tmp_path: Path) -> None:
    size = 256 << 20
    home = tmp_path / "home"
    # Under ci/sanitize.sh, AddressSanitizer keeps up to 256 MiB of freed memory in
    # quarantine by default: a small one, so that the measure is winlayer's.
    asan = os.environ.get("ASAN_OPTIONS")
    env = {**os.environ, "ASAN_OPTIONS": f"{asan}:quarantine_size_mb=8"} if asan else None
    result = subprocess.run(
        [sys.executable, "-c", _BIG, str(REPO), str(home), str(size)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["rss_growth_kib"] < rss_budget_kib(64), out  # a quarter of the payload
    with tarfile.open(tmp_path / "home-rootfs.tar") as t:
        member = t.getmember("Files/big/data.bin")
        assert member.size == size
        assert "Files/top.txt" in t.getnames()
