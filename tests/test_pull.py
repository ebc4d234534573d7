"""pull: images from the real distribution registry into the store."""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from winlayer import DigestMismatch, Driver, PlatformNotFound
from winlayer._archive_members import InvalidArchive
from winlayer._common import LayerEvent
from winlayer._platform import parse_platform
from winlayer._pull import pull
from winlayer._reference import parse
from winlayer._registry import Manifest, RegistryClient, RegistryError
from winlayer.archive import MT_OCI_INDEX, MT_OCI_LAYER, MT_OCI_MANIFEST, chain_ids
from winlayer.images import ImageStore, append, load
from winlayer.registry import push

from .capabilities import needs
from .imagebuild import config_for, descriptor, docker_save, image_manifest, sha
from .layerbuild import base_layer, f, layer_tar
from .realtools import Registry
from .stores import staging_empty

PAYLOADS = [b"a" * 5000, os.urandom(3 << 20), os.urandom(2 << 20)]
LAYERS = [
    base_layer(f("Files/Windows/a.txt", PAYLOADS[0])),
    layer_tar([f("Files/app/one.bin", PAYLOADS[1])]),
    layer_tar([f("Files/app/two.bin", PAYLOADS[2])]),
]


def new_store(tmp_path: Path, name: str) -> tuple[Driver, ImageStore]:
    driver = Driver(tmp_path / name, backend="portable", base_images=tmp_path / f"{name}-base")
    return driver, ImageStore(driver.home)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[Driver, ImageStore]]:
    driver, store = new_store(tmp_path, "source")
    archive, _config = docker_save(LAYERS, tags=["app:1"])
    (tmp_path / "in.tar").write_bytes(archive)
    load(driver, store, tmp_path / "in.tar")
    yield driver, store
    store.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Driver, ImageStore]]:
    driver, store = new_store(tmp_path, "target")
    yield driver, store
    store.close()


def do_pull(
    target: tuple[Driver, ImageStore], host: str, ref: str, events: list[LayerEvent] | None = None
) -> object:
    reference = parse(f"{host}/{ref}")
    with RegistryClient(host, retries=2) as client:
        return pull(*target, reference, client, on_layer=None if events is None else events.append)


def push_gzip_image(client: RegistryClient, repository: str, tag: str) -> bytes:
    """An image whose layers are gzip blobs (as most registries hold them); its config."""
    config = config_for(LAYERS)
    layers = []
    for layer in LAYERS:
        blob = gzip.compress(layer, mtime=0)
        client.upload_blob(repository, sha(blob), iter([blob]), monolithic=False)
        layers.append(descriptor(MT_OCI_LAYER + "+gzip", blob))
    client.upload_blob(repository, sha(config), iter([config]), monolithic=True)
    client.put_manifest(repository, tag, image_manifest(config, layers))
    return config


def test_push_then_pull_keeps_every_digest(
    registry: Registry,
    source: tuple[Driver, ImageStore],
    target: tuple[Driver, ImageStore],
) -> None:
    pushed = push(*source, "app:1", f"{registry.host}/team/app:1")
    events: list[LayerEvent] = []
    pulled = do_pull(target, registry.host, "team/app:1", events)
    image = target[1].get(f"{registry.host}/team/app:1")
    original = source[1].get("app:1")
    assert image.id == original.id == pushed.image_id.removeprefix("sha256:")
    assert image.layers == original.layers == tuple(chain_ids([sha(x) for x in LAYERS]))
    assert pulled.digest == pushed.digest  # type: ignore[attr-defined]
    for chain in image.layers:
        stored = target[1].layer(chain)
        assert stored is not None
        assert target[0].info(stored.layer_id).diff_id == stored.diff_id
    done = [e.digest for e in events if e.state == "done"]
    assert done == [sha(x) for x in LAYERS]  # committed in chain order
    # Pulling again downloads nothing.
    again: list[LayerEvent] = []
    assert do_pull(target, registry.host, "team/app:1", again).downloaded == 0  # type: ignore[attr-defined]
    assert {e.state for e in again} == {"exists"}


def test_an_appended_image_pushed_and_pulled_is_the_same_image(
    registry: Registry,
    source: tuple[Driver, ImageStore],
    target: tuple[Driver, ImageStore],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "app"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "tool.exe").write_bytes(b"MZ" + os.urandom(3000))
    extra = tmp_path / "extra.tar.gz"
    extra.write_bytes(gzip.compress(layer_tar([f("Files/extra.txt", b"extra")]), mtime=0))
    built = append(*source, "app:1", [folder, extra], tag="app:2", source_date_epoch=1_700_000_000)
    push(*source, "app:2", f"{registry.host}/team/app:2")
    do_pull(target, registry.host, "team/app:2")
    pulled = target[1].get(f"{registry.host}/team/app:2")
    assert pulled.id == built.id
    assert pulled.config == built.config
    assert pulled.layers == built.layers  # chain IDs
    for chain in pulled.layers:
        theirs, ours = source[1].layer(chain), target[1].layer(chain)
        assert theirs is not None
        assert ours is not None
        assert ours.diff_id == theirs.diff_id == target[0].info(ours.layer_id).diff_id


def test_pull_of_gzip_layers_overlaps_downloads(
    registry: Registry, target: tuple[Driver, ImageStore]
) -> None:
    with RegistryClient(registry.host) as client:
        config = push_gzip_image(client, "gz/app", "1")
    events: list[LayerEvent] = []
    do_pull(target, registry.host, "gz/app:1", events)
    image = target[1].get(f"{registry.host}/gz/app:1")
    assert image.id == sha(config)[7:]
    states = [e.state for e in events]
    assert "verifying" in states  # later layers were spooled
    assert "extracting" in states
    assert staging_empty(target[0])


def test_pull_by_digest_is_verified(
    registry: Registry, source: tuple[Driver, ImageStore], target: tuple[Driver, ImageStore]
) -> None:
    pushed = push(*source, "app:1", f"{registry.host}/team/app:1")
    do_pull(target, registry.host, f"team/app@{pushed.digest}")
    assert target[1].get(pushed.image_id).tags == ()  # by digest: no tag
    with pytest.raises(Exception, match="HTTP 404"):
        do_pull(target, registry.host, f"team/app@{sha(b'other')}")


def corrupt_blob(registry: Registry, blob: bytes, payload: bytes) -> None:
    """Flip a byte of a file's data in a blob the registry stores: the tar still parses,
    only the digest tells."""
    data = registry.folder / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    digest = sha(blob)
    path = data / digest[7:9] / digest[7:] / "data"
    content = bytearray(path.read_bytes())
    content[content.index(payload[:64]) + 10] ^= 0xFF
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("which", [0, 2])  # the streamed layer; a spooled one
def test_a_wrong_blob_is_refused_and_earlier_layers_are_kept(
    registry: Registry,
    source: tuple[Driver, ImageStore],
    target: tuple[Driver, ImageStore],
    which: int,
) -> None:
    push(*source, "app:1", f"{registry.host}/team/app:1")
    corrupt_blob(registry, LAYERS[which], PAYLOADS[which])
    with pytest.raises(DigestMismatch, match=sha(LAYERS[which])):
        do_pull(target, registry.host, "team/app:1")
    driver, store = target
    assert store.images() == []
    chains = chain_ids([sha(x) for x in LAYERS])
    kept = [layer.chain_id for layer in store.layers()]
    assert kept == sorted(chains[:which])  # complete, verified layers stay for a retry
    assert sorted(layer.id for layer in driver.layers()) == sorted(c[7:] for c in kept)
    assert staging_empty(driver)


def push_foreign_image(client: RegistryClient, url: str) -> bytes:
    """An image whose one layer is foreign: the registry has only its descriptor."""
    config = config_for([LAYERS[0]])
    client.upload_blob("f/app", sha(config), iter([config]), monolithic=True)
    foreign = descriptor(
        "application/vnd.oci.image.layer.nondistributable.v1.tar", LAYERS[0], urls=[url]
    )
    client.put_manifest("f/app", "1", image_manifest(config, [foreign]))
    return config


def test_a_foreign_layer_is_named_with_its_url(
    registry: Registry, target: tuple[Driver, ImageStore]
) -> None:
    with RegistryClient(registry.host) as client:
        push_foreign_image(client, "https://mcr.example.com/blob")
    with pytest.raises(InvalidArchive, match="foreign layer, to be fetched from https://mcr") as e:
        do_pull(target, registry.host, "f/app:1")
    assert "--foreign-layers" in str(e.value)
    assert target[1].layers() == []


@pytest.fixture
def blob_server(tmp_path: Path) -> Iterator[str]:
    """A plain web server of the layer file (where a foreign layer's URL points)."""
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "layer.tar").write_bytes(LAYERS[0])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/layer.tar"
    finally:
        server.shutdown()
        server.server_close()


def test_a_foreign_layer_is_fetched_from_its_url_when_asked(
    registry: Registry, target: tuple[Driver, ImageStore], blob_server: str
) -> None:
    with RegistryClient(registry.host) as client:
        config = push_foreign_image(client, blob_server)
    reference = parse(f"{registry.host}/f/app:1")
    with RegistryClient(registry.host) as client, pytest.raises(RegistryError, match="not HTTPS"):
        pull(*target, reference, client, allow_foreign=True)
    with RegistryClient(registry.host, insecure=True) as client:
        pull(*target, reference, client, allow_foreign=True)
    assert target[1].get(f"{registry.host}/f/app:1").id == sha(config)[7:]


PULL_CHILD = r"""
import sys
from winlayer import Driver
from winlayer.images import ImageStore
from winlayer._pull import pull
from winlayer._reference import parse
from winlayer._registry import RegistryClient
home, host = sys.argv[1], sys.argv[2]
driver = Driver(home, backend="portable", base_images=home + "-base")
with ImageStore(driver.home) as store, RegistryClient(host) as client:
    print("go", flush=True)
    pull(driver, store, parse(host + "/team/app:1"), client)
print("done", flush=True)
"""


@needs("sigkill")
def test_sigkill_during_a_pull_leaves_no_partial_layer(
    registry: Registry, source: tuple[Driver, ImageStore], tmp_path: Path
) -> None:
    push(*source, "app:1", f"{registry.host}/team/app:1")
    expected = source[1].get("app:1").id
    rng = random.Random(4)
    for trial in range(6):
        home = tmp_path / f"trial{trial}"
        with subprocess.Popen(
            [sys.executable, "-c", PULL_CHILD, str(home), registry.host],
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline() == "go\n"
            time.sleep(rng.uniform(0, 0.4))
            child.send_signal(signal.SIGKILL)
        driver, store = new_store(tmp_path, f"trial{trial}")
        with store:
            # Every layer there is whole and recorded or adoptable; nothing else is left.
            for layer in driver.layers():
                assert driver.verify(layer.id) == driver.info(layer.id).diff_id
            driver.cleanup()
            driver.new_staging_dir()  # sweeps the staging folders of dead processes
            assert staging_empty(driver)
            with RegistryClient(registry.host) as client:
                pulled = pull(driver, store, parse(f"{registry.host}/team/app:1"), client)
            assert pulled.image.id == expected


def push_index(client: RegistryClient, repository: str, tag: str) -> dict[str, bytes]:
    """A multi-platform index: linux/amd64 and two Windows builds (each a one-layer image
    with its own config); their configs by platform name."""
    configs: dict[str, bytes] = {}
    entries = []
    for name, platform in [
        ("linux", {"os": "linux", "architecture": "amd64"}),
        ("17763", {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5830"}),
        ("20348", {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2227"}),
    ]:
        layer = layer_tar([f(f"Files/{name}.txt", name.encode())])
        extra = {k: v for k, v in platform.items() if k != "architecture"}
        config = config_for([layer], **extra)
        configs[name] = config
        for blob in (layer, config):
            client.upload_blob(repository, sha(blob), iter([blob]), monolithic=True)
        manifest = image_manifest(config, [descriptor(MT_OCI_LAYER, layer)])
        client.put_manifest(repository, manifest.digest, manifest)
        entries.append(descriptor(MT_OCI_MANIFEST, manifest.data, platform=platform))
    index = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries})
    data = index.encode()
    client.put_manifest(repository, tag, Manifest(MT_OCI_INDEX, sha(data), data))
    return configs


def test_pull_chooses_from_an_index_by_platform(
    registry: Registry, target: tuple[Driver, ImageStore]
) -> None:
    with RegistryClient(registry.host) as client:
        configs = push_index(client, "multi/app", "1")
    reference = parse(f"{registry.host}/multi/app:1")
    with RegistryClient(registry.host) as client:
        # No host build here: the newest Windows image.
        newest = pull(*target, reference, client)
        assert newest.image.id == sha(configs["20348"])[7:]
        assert str(newest.platform) == "windows/amd64 10.0.20348.2227"
        older = pull(
            *target, reference, client, platform=parse_platform("windows/amd64:10.0.17763.5830")
        )
        assert older.image.id == sha(configs["17763"])[7:]
        with pytest.raises(PlatformNotFound, match="windows/arm64") as caught:
            pull(*target, reference, client, platform=parse_platform("windows/arm64"))
        assert "linux/amd64" in str(caught.value)
        assert f"the index {registry.host}/multi/app@sha256:" in str(caught.value)
        # Asking for Linux finds the image, and refuses it before any layer is fetched.
        with pytest.raises(InvalidArchive, match="is for linux"):
            pull(*target, reference, client, platform=parse_platform("linux/amd64"))
    assert {layer.diff_id for layer in target[1].layers()} == {
        json.loads(configs[name])["rootfs"]["diff_ids"][0] for name in ("17763", "20348")
    }
