"""The image lifecycle through the Python API: remove (docker rmi's rules), tag, inspect,
history, prune and df, on every backend available here."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from winlayer import Driver, ImageConflict, LayerInUse
from winlayer.backend import load as load_backend
from winlayer.images import (
    Image,
    ImageNotFound,
    ImageStore,
    append,
    disk_usage,
    image_history,
    inspect_image,
    install_base_image,
    layer_id_for,
    load,
    prune,
    remove_image,
    restore_custom_images,
    save,
    tag_image,
)

from . import stores
from .imagebuild import config_for, docker_save, sha
from .layerbuild import base_layer, d, f, layer_tar

L1 = base_layer()
L2 = layer_tar([d("Files/app"), f("Files/app/run.cmd", b"@echo hi\r\n")])
L3 = layer_tar([d("Files/other"), f("Files/other/data.bin", bytes(range(256)) * 40)])
L4 = layer_tar([d("Files/more"), f("Files/more/x.txt", b"x" * 300)])

HIVES = ("DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM")


driver = stores.driver
store = stores.store


def history(*steps: str, empty: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [
        {
            "created": f"2024-05-0{i + 1}T10:00:00Z",
            "created_by": step,
            **({"empty_layer": True} if i in empty else {}),
        }
        for i, step in enumerate(steps)
    ]


def put(
    driver: Driver,
    store: ImageStore,
    tmp_path: Path,
    layers: list[bytes],
    tags: list[str],
    **config: Any,
) -> Image:
    """Load a docker-save archive of `layers` with `tags` and config fields `config`."""
    archive, _config = docker_save(layers, tags=tags, config=config_for(layers, **config))
    path = tmp_path / f"{hashlib.sha256(archive).hexdigest()[:12]}.tar"
    path.write_bytes(archive)
    (image,) = load(driver, store, path)
    return image


def ids(driver: Driver) -> set[str]:
    return {layer.id for layer in driver.layers()}


def chain(image: Image) -> list[str]:
    return [layer_id_for(c) for c in image.layers]


def assert_only(driver: Driver, store: ImageStore, image: Image) -> None:
    """`image` is the one image left, and its layers the only layers."""
    assert [i.id for i in store.images()] == [image.id]
    assert ids(driver) == set(chain(image))


def lines(records: list[Any]) -> list[str]:
    return [str(r) for r in records]


# -- rm ----------------------------------------------------------------------------------


def test_rm_by_tag_with_other_tags_left_only_untags(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image = put(driver, store, tmp_path, [L1, L2], ["app:1", "app:2"])
    assert lines(remove_image(driver, store, "app:1")) == ["Untagged: app:1"]
    assert store.get(image.id).tags == ("app:2",)
    assert ids(driver) == set(chain(image))
    with pytest.raises(ImageNotFound):
        remove_image(driver, store, "app:1")


def test_rm_by_id_with_several_tags_needs_force(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image = put(driver, store, tmp_path, [L1, L2], ["app:1", "other/app:2"])
    with pytest.raises(ImageConflict, match=r"must be forced.*app:1, other/app:2") as caught:
        remove_image(driver, store, image.id[:12])
    assert caught.value.forceable
    assert caught.value.image_id == image.id
    assert store.get(image.id).tags == ("app:1", "other/app:2")  # nothing changed
    records = lines(remove_image(driver, store, f"sha256:{image.id}", force=True))
    assert records == [
        "Untagged: app:1",
        "Untagged: other/app:2",
        f"Deleted: sha256:{image.id}",
        f"Deleted: {image.layers[1]}",  # newest first
        f"Deleted: {image.layers[0]}",
    ]
    assert store.images() == []
    assert store.layers() == []
    assert ids(driver) == set()


def test_rm_by_id_with_one_tag_untags_and_deletes(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image = put(driver, store, tmp_path, [L1], ["base:1"])
    assert lines(remove_image(driver, store, image.id)) == [
        "Untagged: base:1",
        f"Deleted: sha256:{image.id}",
        f"Deleted: {image.layers[0]}",
    ]
    assert ids(driver) == set()


def test_shared_layers_stay_for_the_other_image(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    a = put(driver, store, tmp_path, [L1, L2], ["a:1"])
    b = put(driver, store, tmp_path, [L1, L3], ["b:1"])
    assert a.layers[0] == b.layers[0]
    records = lines(remove_image(driver, store, "a:1"))
    assert records == ["Untagged: a:1", f"Deleted: sha256:{a.id}", f"Deleted: {a.layers[1]}"]
    assert ids(driver) == set(chain(b))
    assert [layer.chain_id for layer in store.layers()] == sorted(b.layers)
    out = tmp_path / "b.tar"
    save(driver, store, "b:1", out)
    assert (
        load(
            Driver(tmp_path / "other", backend=driver.backend), ImageStore(tmp_path / "other"), out
        )[0].id
        == b.id
    )


def test_an_image_with_a_child_cannot_be_removed(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    parent = put(driver, store, tmp_path, [L1], ["base:1"], history=history("base"))
    child = put(driver, store, tmp_path, [L1, L2], ["app:1"], history=history("base", "add app"))
    for force in (False, True):
        with pytest.raises(ImageConflict, match=r"cannot be forced.*dependent child") as caught:
            remove_image(driver, store, parent.id, force=force)
        assert not caught.value.forceable
    assert store.get("base:1").id == parent.id
    # By its tag: the tag goes, the image stays (its child needs it), quietly.
    assert lines(remove_image(driver, store, "base:1")) == ["Untagged: base:1"]
    assert store.get(parent.id).tags == ()
    assert inspect_image(driver, store, "app:1")["Parent"] == f"sha256:{parent.id}"
    # The child goes, and with it the untagged parent it was built on.
    assert lines(remove_image(driver, store, "app:1")) == [
        "Untagged: app:1",
        f"Deleted: sha256:{child.id}",
        f"Deleted: sha256:{parent.id}",
        f"Deleted: {child.layers[1]}",
        f"Deleted: {child.layers[0]}",
    ]
    assert store.images() == []
    assert ids(driver) == set()


def test_no_prune_keeps_the_untagged_parent(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    parent = put(driver, store, tmp_path, [L1], [], history=history("base"))
    child = put(driver, store, tmp_path, [L1, L2], ["app:1"], history=history("base", "app"))
    assert lines(remove_image(driver, store, "app:1", prune=False)) == [
        "Untagged: app:1",
        f"Deleted: sha256:{child.id}",
        f"Deleted: {child.layers[1]}",
    ]
    assert_only(driver, store, parent)


def test_a_tagged_parent_is_kept_when_its_child_goes(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    parent = put(driver, store, tmp_path, [L1], ["base:1"], history=history("base"))
    put(driver, store, tmp_path, [L1, L2], ["app:1"], history=history("base", "app"))
    remove_image(driver, store, "app:1")
    assert_only(driver, store, parent)


def test_same_layers_with_a_longer_history_is_a_child(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    parent = put(driver, store, tmp_path, [L1], ["base:1"], history=history("base"))
    child = put(
        driver, store, tmp_path, [L1], ["cmd:1"], history=history("base", "CMD x", empty=(1,))
    )
    unrelated = put(driver, store, tmp_path, [L1, L2], ["x:1"], history=history("other", "y"))
    with pytest.raises(ImageConflict, match="dependent child"):
        remove_image(driver, store, parent.id)
    info = inspect_image(driver, store, unrelated.id)
    assert info["Parent"] == ""  # its history does not extend base's
    assert inspect_image(driver, store, child.id)["Parent"] == f"sha256:{parent.id}"


def _sandbox(driver: Driver, store: ImageStore, image: Image, name: str = "box") -> str:
    driver.create(name, chain(image)[-1], read_write=True)
    with store.transaction() as db:
        store.record_sandbox(db, name, image.id)
    return name


def test_an_image_a_sandbox_uses(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    image = put(driver, store, tmp_path, [L1, L2], ["app:1"])
    box = _sandbox(driver, store, image)
    with pytest.raises(ImageConflict, match=r"must be forced.*sandbox box is using it"):
        remove_image(driver, store, "app:1")
    with pytest.raises(ImageConflict, match=r"must be forced.*used by sandbox box"):
        remove_image(driver, store, image.id)
    assert store.get("app:1").id == image.id
    with driver.mounted(box):
        for force in (False, True):
            with pytest.raises(ImageConflict, match=r"cannot be forced.*mounted sandbox box"):
                remove_image(driver, store, image.id, force=force)
    # Forced: the image goes, its layers stay under the sandbox, records included.
    records = lines(remove_image(driver, store, image.id, force=True))
    assert records == ["Untagged: app:1", f"Deleted: sha256:{image.id}"]
    assert ids(driver) == {*chain(image), box}
    assert sorted(layer.chain_id for layer in store.layers()) == sorted(image.layers)
    assert prune(driver, store, dry_run=True).layers == []  # the sandbox needs them
    driver.remove(box)
    assert store.sandboxes() == {}  # removing the sandbox forgot its record
    report = prune(driver, store)
    assert [layer.chain_id for layer in report.layers] == list(reversed(image.layers))
    assert ids(driver) == set()
    assert store.layers() == []


def test_rm_of_an_image_layer_is_refused_and_save_still_works(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image = put(driver, store, tmp_path, [L1, L2], ["app:1"])
    other = put(driver, store, tmp_path, [L1, L3], [])
    with pytest.raises(LayerInUse, match=r"used by image app:1: ") as caught:
        driver.remove(chain(image)[-1])
    assert caught.value.layer_id == chain(image)[-1]
    with pytest.raises(LayerInUse, match=f"used by image app:1, {other.id[:12]}: "):
        driver.remove(chain(image)[0])  # the images are named before the layers on it
    assert ids(driver) == {*chain(image), *chain(other)}
    save(driver, store, "app:1", tmp_path / "out.tar")
    assert (tmp_path / "out.tar").stat().st_size > len(L2)


def test_rm_of_a_layer_two_images_use_names_both(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    x = put(driver, store, tmp_path, [L1], ["x:1"])
    y = put(driver, store, tmp_path, [L1], [], created="2020-01-01T00:00:00Z")
    assert x.layers == y.layers
    assert x.id != y.id
    with pytest.raises(LayerInUse) as caught:
        driver.remove(chain(x)[0])
    users = str(caught.value).split("used by image ", 1)[1].split(": ", 1)[0]
    assert sorted(users.split(", ")) == sorted(["x:1", y.id[:12]])


def test_a_layer_no_image_uses_can_be_removed(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    put(driver, store, tmp_path, [L1], ["base:1"])
    driver.apply_diff("mine", None, io.BytesIO(L3))
    driver.remove("mine")
    assert "mine" not in ids(driver)


# -- prune -------------------------------------------------------------------------------


def test_prune_dry_run_lists_exactly_what_prune_removes(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    kept = put(driver, store, tmp_path, [L1, L2], ["app:1"])
    dangling = put(driver, store, tmp_path, [L1, L3], [])
    used = put(driver, store, tmp_path, [L1, L4], [], created="2020-01-01T00:00:00Z")
    _sandbox(driver, store, used)
    driver.apply_diff("handmade", None, io.BytesIO(L3))  # not the image store's
    before = (ids(driver), store.images(), store.layers())
    dry = prune(driver, store, dry_run=True)
    assert (ids(driver), store.images(), store.layers()) == before  # nothing changed
    assert lines(dry.images) == [f"Deleted: sha256:{dangling.id}"]
    assert [layer.chain_id for layer in dry.layers] == [dangling.layers[1]]
    assert dry.size == driver.info(chain(dangling)[1]).size
    real = prune(driver, store)
    assert (real.images, real.layers, real.size) == (dry.images, dry.layers, dry.size)
    assert not real.dry_run
    assert dry.dry_run
    assert ids(driver) == {*chain(kept), *chain(used), "box", "handmade"}
    assert {i.id for i in store.images()} == {kept.id, used.id}
    again = prune(driver, store)
    assert (again.images, again.layers) == ([], [])


def test_prune_all_removes_every_image_no_sandbox_uses(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    parent = put(driver, store, tmp_path, [L1], ["base:1"], history=history("base"))
    child = put(driver, store, tmp_path, [L1, L2], ["app:1"], history=history("base", "app"))
    used = put(driver, store, tmp_path, [L1, L3], ["used:1"])
    _sandbox(driver, store, used)
    dry = prune(driver, store, every=True, dry_run=True)
    assert lines(dry.images) == [
        "Untagged: app:1",
        f"Deleted: sha256:{child.id}",
        "Untagged: base:1",
        f"Deleted: sha256:{parent.id}",
    ]
    assert [layer.chain_id for layer in dry.layers] == [child.layers[1]]  # L1: used's
    report = prune(driver, store, every=True)
    assert (report.images, report.layers) == (dry.images, dry.layers)
    assert [i.id for i in store.images()] == [used.id]
    # Without -a a tagged image stays, and an untagged parent with a tagged child too.
    assert prune(driver, store).images == []


def test_prune_after_a_crash_between_the_transaction_and_the_layer_removals(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image = put(driver, store, tmp_path, [L1, L2], ["app:1"])
    driver.apply_diff("handmade", None, io.BytesIO(L3))
    # The process dies once the image is deleted, before any driver layer goes.
    code = f"""
import os, winlayer._imagerefs as refs
from winlayer import Driver
from winlayer.images import ImageStore, remove_image
refs._remove_layers = lambda *a: os._exit(9)
home, base = {str(driver.home)!r}, {str(driver.base_images)!r}
driver = Driver(home, backend={driver.backend!r}, base_images=base)
remove_image(driver, ImageStore(driver.home), "app:1")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert done.returncode == 9, done.stderr.decode()
    assert store.images() == []
    assert ids(driver) == {*chain(image), "handmade"}  # orphans, and the hand-made layer
    dry = prune(driver, store, dry_run=True)
    assert dry.images == []
    assert [layer.chain_id for layer in dry.layers] == list(image.layers[::-1])
    assert prune(driver, store).layers == dry.layers
    assert ids(driver) == {"handmade"}
    assert store.layers() == []


def test_prune_drops_a_record_whose_driver_layer_is_gone(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image = put(driver, store, tmp_path, [L1], [])
    with store.transaction() as db:
        store.delete_image(db, image.id)  # as a crash after the image transaction
    driver.remove(chain(image)[0])  # and after the driver removal
    report = prune(driver, store)
    assert [layer.chain_id for layer in report.layers] == list(image.layers)
    assert store.layers() == []


# -- df ----------------------------------------------------------------------------------


def test_df_adds_up(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    a = put(driver, store, tmp_path, [L1, L2], ["a:1"])
    b = put(driver, store, tmp_path, [L1, L3], ["b:1"])
    box = _sandbox(driver, store, b)
    driver.create("idle", chain(a)[-1], read_write=True)
    with driver.mounted(box) as view:
        (view / "new.bin").write_bytes(b"n" * 1234)
    driver.get(box)
    driver.apply_diff("handmade", None, io.BytesIO(L4))
    orphan = put(driver, store, tmp_path, [L1, L4], [], created="2020-01-01T00:00:00Z")
    with store.transaction() as db:
        store.delete_image(db, orphan.id)  # left by a crash: prune removes its top layer
    size = {layer_id: driver.info(layer_id).size or 0 for layer_id in ids(driver)}
    l1, l2, l3, l4 = chain(a)[0], chain(a)[1], chain(b)[1], chain(orphan)[1]
    usage = disk_usage(driver, store).as_dict()
    try:
        assert usage["images"] == {
            "total": 2,
            "active": 1,  # b, used by a sandbox
            "size": size[l1] + size[l2] + size[l3],
            "reclaimable": size[l2],  # a's own layer: b's sandbox needs the rest
        }
        assert usage["layers"] == {
            "total": 5,
            "active": 3,  # l1..l3: images use them; l4 and handmade nothing needs
            "size": size[l1] + size[l2] + size[l3] + size[l4] + size["handmade"],
            "reclaimable": size[l4],  # handmade is not the image store's
        }
        assert usage["sandboxes"] == {"total": 2, "active": 1, "size": 1234, "reclaimable": 0}
        assert driver.diff_size("idle") == 0
    finally:
        driver.put(box)
    after = disk_usage(driver, store).as_dict()["sandboxes"]
    assert after == {"total": 2, "active": 0, "size": 1234, "reclaimable": 1234}


# -- host base images ------------------------------------------------------------------


def test_rm_of_a_host_base_image_leaves_its_folder(driver: Driver, store: ImageStore) -> None:
    config = "Files/Windows/System32/config/"
    tar = base_layer(d(config.rstrip("/")), *(f(config + hive, b"regf") for hive in HIVES))
    folder = install_base_image(
        driver, "ServerCore", "1.0", io.BytesIO(tar), base_images=driver.base_images
    )
    (image_id,) = restore_custom_images(driver, store, store)
    assert driver.exists(image_id)
    with pytest.raises(LayerInUse, match=r"used by image servercore:1\.0"):
        driver.remove(image_id)  # the alias is the image's layer
    info = inspect_image(driver, store, "servercore:1.0")
    assert info["Winlayer"]["HostBaseFolder"] == str(folder)
    assert info["RootFS"] == {"Type": "layers", "Layers": []}
    records = lines(remove_image(driver, store, "servercore:1.0"))
    assert records == [
        "Untagged: servercore:1.0",
        f"Deleted: sha256:{image_id} (host base image: its folder stays with the host)",
    ]
    assert (folder / "Files").is_dir()
    assert not driver.exists(image_id)
    assert restore_custom_images(driver, store, store) == [image_id]  # registered again


# -- tag, inspect, history -------------------------------------------------------------


def test_tag_moves_an_existing_tag(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    a = put(driver, store, tmp_path, [L1], ["a:1"])
    b = put(driver, store, tmp_path, [L1, L2], ["b:1"])
    assert tag_image(store, "a:1", "shared") == a.id
    assert store.resolve("shared:latest") == a.id
    assert tag_image(store, b.id[:8], "shared:latest") == b.id
    assert store.get(a.id).tags == ("a:1",)
    with pytest.raises(ImageNotFound):
        tag_image(store, "nope:1", "x:1")
    with pytest.raises(ValueError, match="invalid repository name 'Bad'"):
        tag_image(store, "a:1", "Bad:1")


def test_inspect_has_dockers_fields(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    image = put(
        driver,
        store,
        tmp_path,
        [L1, L2],
        ["app:1"],
        variant="v8",
        comment="made by hand",
        author="me",
        **{"os.version": "10.0.20348.2527"},
    )
    info = inspect_image(driver, store, "app:1")
    assert json.loads(json.dumps(info)) == info  # plain JSON
    assert info["Id"] == f"sha256:{image.id}"
    assert (info["RepoTags"], info["RepoDigests"], info["Parent"]) == (["app:1"], [], "")
    assert (info["Os"], info["OsVersion"], info["Architecture"], info["Variant"]) == (
        "windows",
        "10.0.20348.2527",
        "amd64",
        "v8",
    )
    assert (info["Comment"], info["Author"], info["Created"]) == (
        "made by hand",
        "me",
        "2024-05-01T10:00:00Z",
    )
    assert info["Config"] == {"Cmd": ["cmd.exe"]}
    assert info["RootFS"] == {"Type": "layers", "Layers": [sha(L1), sha(L2)]}
    assert info["Size"] == image.size
    assert info["Winlayer"] == {
        "ChainIDs": list(image.layers),
        "LayerIDs": chain(image),
        "Sandboxes": [],
        "HostBaseFolder": None,
    }
    plain = inspect_image(driver, store, put(driver, store, tmp_path, [L1], []).id)
    assert "OsVersion" not in plain
    assert "Variant" not in plain


def test_history_maps_entries_to_layers(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    parent = put(driver, store, tmp_path, [L1], ["base:1"], history=history("base"))
    steps = history("base", "ENV x=1", "add app", empty=(1,))
    steps[2]["comment"] = "hi"
    child = put(driver, store, tmp_path, [L1, L2], ["app:1"], history=steps)
    entries = [e.as_dict() for e in image_history(store, "app:1")]
    assert entries == [
        {
            "image": f"sha256:{child.id}",
            "created": "2024-05-03T10:00:00Z",
            "created_by": "add app",
            "comment": "hi",
            "empty_layer": False,
            "layer": child.layers[1],
            "size": driver.info(chain(child)[1]).size,
        },
        {
            "image": None,
            "created": "2024-05-02T10:00:00Z",
            "created_by": "ENV x=1",
            "comment": "",
            "empty_layer": True,
            "layer": None,
            "size": 0,
        },
        {
            "image": f"sha256:{parent.id}",
            "created": "2024-05-01T10:00:00Z",
            "created_by": "base",
            "comment": "",
            "empty_layer": False,
            "layer": child.layers[0],
            "size": driver.info(chain(child)[0]).size,
        },
    ]


def test_history_without_entries_has_one_per_layer(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image = put(driver, store, tmp_path, [L1, L2], ["app:1"])
    entries = image_history(store, image.id)
    assert [e.layer for e in entries] == list(reversed(image.layers))
    assert [e.image for e in entries] == [f"sha256:{image.id}", None]
    assert {e.created for e in entries} == {image.created}


def test_store_keeps_a_layer_record_something_still_names(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    a = put(driver, store, tmp_path, [L1, L2], ["a:1"])
    with store.transaction() as db:
        assert not store.drop_layer(db, a.layers[0])  # an image uses it
        store.delete_image(db, a.id)
        assert not store.drop_layer(db, a.layers[0])  # the record of L2 names it as parent
        assert store.drop_layer(db, a.layers[1])
        assert store.drop_layer(db, a.layers[0])
        assert not store.drop_layer(db, a.layers[0])  # gone already
    assert store.layers() == []
    with pytest.raises(ImageNotFound):
        store.lookup("a:1")


def test_lookup_says_how_an_image_was_found(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    image = put(driver, store, tmp_path, [L1], ["a:1"])
    assert store.lookup("a:1") == (image.id, "a:1")
    assert store.lookup(f"sha256:{image.id}") == (image.id, None)
    assert store.lookup(image.id[:5]) == (image.id, None)


class _Watching:
    """A backend that runs `check` before destroying a layer, else the real one."""

    def __init__(self, real: Any, check: Any) -> None:
        self._real, self._check = real, check

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def destroy_layer(self, info: Any, id: str) -> None:
        self._check(id)
        self._real.destroy_layer(info, id)


def test_driver_remove_holds_the_store_transaction_while_it_destroys(
    tmp_path: Path, backend_name: str
) -> None:
    """So a concurrent load, which records its image in a transaction that checks its
    layers exist, cannot record an image on a layer being removed."""
    seen = []

    def check(layer_id: str) -> None:
        other = sqlite3.connect(tmp_path / "home" / ".winlayer" / "images.db", timeout=0.1)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
        seen.append(layer_id)

    base = tmp_path / "base"
    plain = Driver(tmp_path / "home", backend=backend_name, base_images=base)
    watched = Driver(
        plain.home,
        backend=_Watching(load_backend(backend_name, str(base)), check),
        base_images=base,
    )
    with ImageStore(plain.home) as store:
        put(plain, store, tmp_path, [L1], ["a:1"])
    watched.apply_diff("mine", None, io.BytesIO(L3))
    watched.remove("mine")
    (destroyed,) = seen  # the layer's folder, renamed before it is destroyed
    assert destroyed.startswith("mine-")
    assert "mine" not in ids(plain)


def test_an_appended_image_is_a_child_of_its_base(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    base = put(driver, store, tmp_path, [L1], ["base:1"], history=history("base"))
    (tmp_path / "more.tar").write_bytes(L3)
    child = append(driver, store, "base:1", [tmp_path / "more.tar"], tag="app:1")
    assert child.layers[:1] == base.layers
    with pytest.raises(ImageConflict, match="dependent child images"):
        remove_image(driver, store, base.id)
    assert inspect_image(driver, store, "app:1")["Parent"] == f"sha256:{base.id}"
    assert [e.image for e in image_history(store, "app:1")] == [
        f"sha256:{child.id}",
        f"sha256:{base.id}",
    ]
