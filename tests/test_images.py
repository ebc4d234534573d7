"""Base-image restore and the SQLite image and tag store."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from winlayer import Driver, InvalidLayer, LayerExists, StoreCorrupt, WinlayerError
from winlayer.backend import load as load_backend
from winlayer.chain import read_alt_id
from winlayer.images import (
    Image,
    ImageNotFound,
    ImageStore,
    Recorder,
    Tagger,
    base_image_id,
    host_architecture,
    install_base_image,
    restore_custom_images,
)
from winlayer.imagestore import IMAGE_DB, MIGRATIONS, SCHEMA_VERSION

from . import stores
from .layerbuild import base_layer, d, f, layer_tar, link

REPO = Path(__file__).resolve().parent.parent


def install_base(base: Path, folder: str, **meta: Any) -> Path:
    """A base image folder as the portable backend lists it: Files/ and image.json."""
    path = base / folder
    (path / "Files").mkdir(parents=True)
    (path / "image.json").write_text(json.dumps(meta))
    return path


driver = stores.driver


@pytest.fixture
def portable(tmp_path: Path) -> Driver:
    """A portable driver: its base images are folders that a test can install."""
    return Driver(tmp_path / "home", backend="portable", base_images=tmp_path / "base")


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as s:
        yield s


store = stores.store


def image(n: int, **kw: Any) -> Image:
    config = json.dumps({"n": n}).encode()
    fields: dict[str, Any] = {
        "id": hashlib.sha256(config).hexdigest(),
        "config": config,
        "created": f"2024-01-{n % 28 + 1:02d}T00:00:00Z",
        "architecture": "amd64",
        "os": "windows",
        "size": n,
    }
    fields.update(kw)
    return Image(**fields)


# -- restore ----------------------------------------------------------------------------


def test_base_image_id_is_the_seeds() -> None:
    folder = "CN=Microsoft_WindowsServerCore_10.0.14300.1000"
    assert base_image_id(folder) == hashlib.sha384(folder.encode()).hexdigest()[:64]


def test_restore_registers_tags_and_links_base_images(
    portable: Driver, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    driver = portable
    store = stack.enter_context(ImageStore(driver.home))
    install_base(
        tmp_path / "base",
        "servercore-1",
        Name="WindowsServerCore",
        Version="10.0.20348.1",
        CreatedTime="2024-02-03T04:05:06.1234567+02:00",
        Size=1234,
    )
    install_base(tmp_path / "base", "nano-1", Name="NanoServer", Version="10.0.20348.2")
    ids = restore_custom_images(driver, store, store)

    core, nano = base_image_id("servercore-1"), base_image_id("nano-1")
    assert sorted(ids) == sorted([core, nano])
    record = store.get("windowsservercore:10.0.20348.1")
    assert record.id == core
    assert record.created == "2024-02-03T02:05:06.1234567Z"
    assert record.size == 1234
    assert record.os == "windows"
    assert record.architecture == host_architecture()
    assert record.layers == ()
    assert store.resolve("nanoserver:10.0.20348.2") == nano
    # The alternate-ID file maps the image id to the base image's folder.
    assert read_alt_id(driver.home / core) == "servercore-1"
    assert (driver.home / core / "layerId").read_text() == "servercore-1"


def test_restore_twice_registers_nothing_new(
    portable: Driver, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    driver = portable
    store = stack.enter_context(ImageStore(driver.home))
    install_base(tmp_path / "base", "core", Name="Core", Version="1.0", Size=5)
    assert restore_custom_images(driver, store, store) == [base_image_id("core")]
    before = store.images()
    assert restore_custom_images(driver, store, store) == []
    assert store.images() == before
    assert [i.tags for i in store.images()] == [("core:1.0",)]


def test_restore_rewrites_a_lost_alternate_id(
    portable: Driver, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    driver = portable
    store = stack.enter_context(ImageStore(driver.home))
    install_base(tmp_path / "base", "core", Name="Core", Version="1.0")
    restore_custom_images(driver, store, store)
    alias = driver.home / base_image_id("core")
    (alias / "layerId").unlink()
    assert restore_custom_images(driver, store, store) == []
    assert read_alt_id(alias) == "core"


class Listing:
    """A backend whose base-image list is given (as HCS would report it)."""

    def __init__(self, inner: Any, listing: str) -> None:
        self._inner = inner
        self._listing = listing

    def get_base_images(self) -> str:
        return self._listing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def listed_driver(tmp_path: Path, listing: Any) -> Driver:
    text = listing if isinstance(listing, str) else json.dumps(listing)
    backend = Listing(load_backend("portable", str(tmp_path / "base")), text)
    return Driver(tmp_path / "home", backend=backend)


def test_broken_base_images_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "images" / "good"
    good.mkdir(parents=True)
    (tmp_path / "images" / "other").mkdir()
    entry = {
        "Name": "Good",
        "Version": "1.0",
        "Path": str(good),
        "Size": 7,
        "CreatedTime": "2020-01-01T00:00:00Z",
    }
    broken = [
        "not an object",
        {**entry, "Size": "big"},
        {**entry, "Size": -1},
        {**entry, "Name": None},
        {**entry, "Path": str(tmp_path / "images" / "missing")},
        {**entry, "CreatedTime": "yesterday"},
        {**entry, "CreatedTime": "2020-02-30T00:00:00Z"},
        {**entry, "Version": "-bad"},
        {**entry, "Path": str(tmp_path / "images" / "other"), "Name": "has space"},
    ]
    drv = listed_driver(tmp_path, {"Images": [*broken, entry]})
    with ImageStore(drv.home) as store, caplog.at_level(logging.WARNING, logger="winlayer.images"):
        assert restore_custom_images(drv, store, store) == [base_image_id("good")]
        assert [i.tags for i in store.images()] == [("good:1.0",)]
    skipped = [r.getMessage() for r in caplog.records if "skipping base image" in r.getMessage()]
    assert len(skipped) == len(broken)
    assert any("does not exist" in m for m in skipped)
    assert any("RFC 3339" in m for m in skipped)


@pytest.mark.parametrize("listing", ["{not json", '{"Images": 5}'])
def test_unreadable_base_image_list_is_an_error(tmp_path: Path, listing: str) -> None:
    drv = listed_driver(tmp_path, listing)
    with ImageStore(drv.home) as store, pytest.raises(WinlayerError, match="base-image list"):
        restore_custom_images(drv, store, store)


def test_no_base_images(tmp_path: Path) -> None:
    drv = listed_driver(tmp_path, {"Images": None})
    with ImageStore(drv.home) as store:
        assert restore_custom_images(drv, store, store) == []


class MemoryStore:
    """A Tagger and Recorder of its own, to show restore needs nothing but the protocols."""

    def __init__(self) -> None:
        self.images: dict[str, Image] = {}
        self.tags: dict[str, str] = {}
        self.refuse: set[str] = set()  # names whose tagging fails

    def exists(self, image_id: str) -> bool:
        return image_id in self.images

    def register(self, image: Image) -> None:
        self.images.setdefault(image.id, image)

    def tag(self, name: str, tag: str, image_id: str, *, force: bool = False) -> None:
        if name in self.refuse:
            raise ValueError("tagging refused")
        self.tags[f"{name}:{tag}"] = image_id


def driver_listing(tmp_path: Path, *names: str) -> Driver:
    """A driver whose backend reports one base image (an existing folder) per name."""
    entries = []
    for name in names:
        folder = tmp_path / "images" / name.lower()
        folder.mkdir(parents=True)
        entries.append(
            {
                "Name": name,
                "Version": "2.0",
                "Path": str(folder),
                "CreatedTime": "2021-01-01T00:00:00Z",
            }
        )
    return listed_driver(tmp_path, {"Images": entries})


def test_restore_uses_only_the_protocols(tmp_path: Path) -> None:
    drv = driver_listing(tmp_path, "Core")
    memory = MemoryStore()
    assert isinstance(memory, Tagger)
    assert isinstance(memory, Recorder)
    assert restore_custom_images(drv, memory, memory) == [base_image_id("core")]
    assert memory.tags == {"core:2.0": base_image_id("core")}
    assert memory.images[base_image_id("core")].size == 0


def test_a_failing_tagger_skips_that_image_only(tmp_path: Path) -> None:
    drv = driver_listing(tmp_path, "Core", "Nano")
    memory = MemoryStore()
    memory.refuse = {"core"}
    assert restore_custom_images(drv, memory, memory) == [base_image_id("nano")]
    assert memory.tags == {"nano:2.0": base_image_id("nano")}


def test_image_store_implements_both_protocols(store: ImageStore) -> None:
    assert isinstance(store, Tagger)
    assert isinstance(store, Recorder)


# -- the store ----------------------------------------------------------------------------


def test_register_is_idempotent_and_tags_resolve(store: ImageStore) -> None:
    a, b = image(1), image(2)
    store.register(a)
    store.register(a)
    store.register(b)
    assert store.exists(a.id)
    assert store.exists("sha256:" + a.id)
    assert not store.exists(image(3).id)
    store.tag("example.com:5000/team/app", "v1", a.id)
    assert store.get("example.com:5000/team/app:v1").id == a.id
    store.tag("app", "latest", b.id)
    assert store.resolve("app") == b.id
    assert store.resolve("sha256:" + a.id) == a.id
    assert store.resolve(a.id[:12]) == a.id
    assert [i.id for i in store.images()] == [b.id, a.id]  # newest first
    assert store.get(a.id).tags == ("example.com:5000/team/app:v1",)
    assert json.loads(json.dumps(store.get(a.id).as_dict())) == {
        "id": f"sha256:{a.id}",
        "tags": ["example.com:5000/team/app:v1"],
        "created": a.created,
        "architecture": "amd64",
        "os": "windows",
        "size": 1,
        "layers": [],
    }


def test_tag_rules(store: ImageStore) -> None:
    a, b = image(1), image(2)
    store.register(a)
    store.register(b)
    store.tag("app", "1", a.id)
    with pytest.raises(ValueError, match="already names"):
        store.tag("app", "1", b.id)
    store.tag("app", "1", b.id, force=True)
    assert store.resolve("app:1") == b.id
    store.tag("app", "1", b.id)  # the same again is fine
    for name, tag in [
        ("App", "1"),
        ("app/", "1"),
        ("a..b", "1"),
        ("app", ".x"),
        ("app", "x" * 129),
    ]:
        with pytest.raises(ValueError, match="invalid"):
            store.tag(name, tag, a.id)
    with pytest.raises(ImageNotFound):
        store.tag("app", "2", image(9).id)
    assert store.untag("app:1") == b.id
    with pytest.raises(ImageNotFound, match="no such tag"):
        store.untag("app:1")


def test_resolve_errors(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound):
        store.get("nothing")
    # Two ids sharing a prefix: the prefix alone is ambiguous.
    # 17 ids: two of them share their first hex digit.
    ids = [image(n).id for n in range(17)]
    for n in range(17):
        store.register(image(n))
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    with pytest.raises(ImageNotFound, match="ambiguous"):
        store.resolve(shared)
    with pytest.raises(ImageNotFound):
        store.get("sha256:" + "0" * 64)


def test_image_with_unknown_layers_is_refused(store: ImageStore) -> None:
    with pytest.raises(ValueError, match="not in the store"):
        store.register(image(1, layers=("sha256:" + "a" * 64,)))
    assert store.images() == []


def test_store_survives_reopening(driver: Driver) -> None:
    with ImageStore(driver.home) as s:
        s.register(image(1))
        s.tag("app", "1", image(1).id)
    with ImageStore(driver.home) as s:
        assert s.get("app:1") == image(1)
        assert s.schema_version == SCHEMA_VERSION


def test_migration_from_version_1(tmp_path: Path) -> None:
    path = tmp_path / IMAGE_DB
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    MIGRATIONS[0](db)
    db.execute(
        "INSERT INTO images (id, config, created, architecture, os, size)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (image(1).id, image(1).config, image(1).created, "amd64", "windows", 1),
    )
    db.execute("INSERT INTO tags (name, tag, image_id) VALUES ('app', '1', ?)", (image(1).id,))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()

    with ImageStore(tmp_path) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        old = store.get("app:1")
        assert old.id == image(1).id
        assert old.layers == ()
        assert store.layers() == []
        with store.transaction() as tx:  # the new table works
            tx.execute("INSERT INTO layers VALUES ('sha256:x', 'x', 'sha256:x', NULL, 1, 2)")
        assert store.layer("sha256:x") is not None
        assert store.sandboxes() == {}
        assert store.blob_sources("sha256:x", "r") == []


def test_blob_sources(driver: Driver) -> None:
    with ImageStore(driver.home) as store:
        store.record_blob_source("sha256:b", "r:5000", "app/two")
        store.record_blob_source("sha256:b", "r:5000", "app/one")
        store.record_blob_source("sha256:b", "r:5000", "app/one")  # once
        store.record_blob_source("sha256:b", "other", "app/three")
        assert store.blob_sources("sha256:b", "r:5000") == ["app/one", "app/two"]
        assert store.blob_sources("sha256:c", "r:5000") == []


def test_sandbox_records(driver: Driver) -> None:
    with ImageStore(driver.home) as store:
        store.register(image(1))
        store.register(image(2))
        with store.transaction() as db:
            store.record_sandbox(db, "box", image(1).id)
        assert store.sandbox_image("box") == image(1).id
        with store.transaction() as db:  # a sandbox of the same id made again, from image 2
            store.record_sandbox(db, "box", "sha256:" + image(2).id)
        assert store.sandboxes() == {"box": image(2).id}
        with pytest.raises(ImageNotFound), store.transaction() as db:
            store.record_sandbox(db, "other", "f" * 64)
        with store.transaction() as db:
            store.forget_sandbox(db, "box")
        assert store.sandbox_image("box") is None
        assert store.sandboxes() == {}


def test_store_from_a_newer_winlayer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / IMAGE_DB
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreCorrupt, match="newer than this winlayer"):
        ImageStore(tmp_path)


def test_garbage_database_is_store_corrupt(tmp_path: Path) -> None:
    path = tmp_path / IMAGE_DB
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorrupt) as caught:
        ImageStore(tmp_path)
    assert caught.value.path == str(path)


def test_damage_found_after_opening_is_store_corrupt(tmp_path: Path) -> None:
    with ImageStore(tmp_path) as store:
        store.register(image(1))
        with contextlib.closing(sqlite3.connect(tmp_path / IMAGE_DB)) as other:
            other.execute("DROP TABLE tags")
            other.commit()
        for call in (store.images, lambda: store.tag("app", "1", image(1).id)):
            with pytest.raises(
                StoreCorrupt, match=r"unreadable image store \(no such table: tags\)"
            ) as caught:
                call()
            assert caught.value.path == str(tmp_path / IMAGE_DB)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="sqlite3 error codes need Python 3.11")
def test_a_store_locked_past_the_busy_timeout_is_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import winlayer.imagestore

    monkeypatch.setattr(winlayer.imagestore, "BUSY_TIMEOUT_S", 0.1)
    with (
        ImageStore(tmp_path) as store,
        contextlib.closing(sqlite3.connect(tmp_path / IMAGE_DB, isolation_level=None)) as other,
    ):
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(TimeoutError, match="image store stayed locked") as caught:
            store.register(image(1))
        assert caught.value.filename == str(tmp_path / IMAGE_DB)
        other.execute("ROLLBACK")
        store.register(image(1))  # the store itself is fine


_WRITER = textwrap.dedent(
    """
    import hashlib, json, sys
    from winlayer.images import Image, ImageStore
    home, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for n in range(count):
        store = ImageStore(home) if n % 10 == 0 else store
        config = json.dumps({"who": who, "n": n}).encode()
        image_id = hashlib.sha256(config).hexdigest()
        store.register(Image(image_id, config, "2024-01-01T00:00:00Z", "amd64", "windows", n))
        store.tag(f"app-{who}", str(n), image_id)
        store.tag("shared", "latest", image_id, force=True)
        assert store.exists(image_id)
    """
)


def test_two_processes_share_a_store(tmp_path: Path) -> None:
    ImageStore(tmp_path).close()
    count = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), who, str(count)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    with ImageStore(tmp_path) as store:
        images = store.images()
        assert len(images) == 2 * count
        assert sum(len(i.tags) for i in images) == 2 * count + 1
        assert store.resolve("app-a:149") != store.resolve("app-b:149")


def test_driver_method_delegates(
    portable: Driver, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    import winlayer

    install_base(tmp_path / "base", "core", Name="Core", Version="1.0")
    store = stack.enter_context(winlayer.ImageStore(portable.home))
    assert portable.restore_custom_images(store, store) == [base_image_id("core")]
    assert portable.restore_custom_images(store, store) == []


def test_install_base_image_then_restore(
    portable: Driver, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    layer = base_layer()
    path = install_base_image(
        portable,
        "ServerCore",
        "10.0.1",
        io.BytesIO(gzip.compress(layer)),
        base_images=tmp_path / "base",
    )
    assert path == tmp_path / "base" / "ServerCore_10.0.1"
    meta = json.loads((path / "image.json").read_text())
    assert meta["Name"] == "ServerCore"
    assert meta["Version"] == "10.0.1"
    assert meta["Size"] > 0
    assert (path / "Files" / "Windows" / "win.ini").read_bytes() == b"[fonts]\r\n"

    store = stack.enter_context(ImageStore(portable.home))
    assert restore_custom_images(portable, store, store) == [base_image_id("ServerCore_10.0.1")]
    record = store.get("servercore:10.0.1")
    assert record.size == meta["Size"]

    with pytest.raises(LayerExists):
        install_base_image(
            portable, "ServerCore", "10.0.1", io.BytesIO(layer), base_images=tmp_path / "base"
        )


def test_base_install_obeys_the_layer_size_limit(tmp_path: Path) -> None:
    import zstandard

    driver = Driver(tmp_path / "home", backend="portable", max_layer_size="1MiB")
    bomb = zstandard.ZstdCompressor().compress(base_layer(f("Files/zeros", bytes(8 << 20))))
    with pytest.raises(InvalidLayer, match=f"zstd data expands past the limit of {1 << 20}"):
        install_base_image(driver, "core", "1", io.BytesIO(bomb), base_images=tmp_path / "base")
    assert [p.name for p in (tmp_path / "base").iterdir() if not p.name.startswith(".")] == []


def test_failed_base_install_leaves_nothing(portable: Driver, tmp_path: Path) -> None:
    bad = layer_tar([d("Files"), link("Files/a", "Files/missing")])
    with pytest.raises(InvalidLayer):
        install_base_image(portable, "core", "1", io.BytesIO(bad), base_images=tmp_path / "base")
    assert [p.name for p in (tmp_path / "base").iterdir() if not p.name.startswith(".")] == []
    with pytest.raises(ValueError, match="invalid tag"):
        install_base_image(portable, "core", "-1", io.BytesIO(bad), base_images=tmp_path / "base")
