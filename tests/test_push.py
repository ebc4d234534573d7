"""push: images of the store into the real distribution registry."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from winlayer import DigestMismatch, Driver, WinlayerError
from winlayer._common import LayerEvent
from winlayer._registry import RegistryClient
from winlayer.archive import MT_OCI_MANIFEST, layer_id_for
from winlayer.images import ImageStore, load, save
from winlayer.registry import push

from . import stores
from .conftest import Cli
from .imagebuild import docker_save, sha
from .layerbuild import base_layer, f, layer_tar
from .realtools import Registry, skopeo

driver = stores.portable_driver
store = stores.store


LAYERS = [
    base_layer(f("Files/Windows/a.txt", b"a" * 5000)),
    layer_tar([f("Files/app/big.bin", bytes(range(256)) * 40000)]),  # 10 MB: chunked
]


@pytest.fixture
def image(driver: Driver, store: ImageStore, tmp_path: Path) -> str:
    archive, config = docker_save(LAYERS, tags=["app:1"])
    (tmp_path / "in.tar").write_bytes(archive)
    load(driver, store, tmp_path / "in.tar")
    return sha(config)


def saved_manifest(driver: Driver, store: ImageStore, ref: str) -> bytes:
    """The OCI manifest `save` writes for `ref`."""
    out = io.BytesIO()
    save(driver, store, ref, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"]
        return tar.extractfile(f"blobs/sha256/{digest[7:]}").read()  # type: ignore[union-attr]


def test_push_stores_the_manifest_save_writes(
    driver: Driver, store: ImageStore, registry: Registry, image: str
) -> None:
    events: list[LayerEvent] = []
    pushed = push(driver, store, "app:1", f"{registry.host}/team/app:1", on_layer=events.append)
    manifest = saved_manifest(driver, store, "app:1")
    assert pushed.image_id == image
    assert pushed.digest == sha(manifest)
    with RegistryClient(registry.host) as client:
        assert client.get_manifest("team/app", "1", [MT_OCI_MANIFEST]).data == manifest
        for layer in LAYERS:
            with client.open_blob("team/app", sha(layer)) as blob:
                assert blob.read() == layer
    done = {e.digest for e in events if e.state == "done"}
    assert done == {sha(layer) for layer in LAYERS}
    pushing = [e for e in events if e.state == "pushing" and e.digest == sha(LAYERS[1])]
    assert len(pushing) >= 2  # chunked: progress per chunk
    assert pushing[-1].done == len(LAYERS[1])
    # skopeo reads it as docker would.
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/team/app:1")
    assert raw.encode() == manifest


def test_a_second_push_sends_no_blob_and_another_repository_mounts(
    driver: Driver, store: ImageStore, registry: Registry, image: str
) -> None:
    push(driver, store, "app:1", f"{registry.host}/team/app:1")
    again: list[LayerEvent] = []
    push(driver, store, "app:1", f"{registry.host}/team/app:2", on_layer=again.append)
    assert {e.state for e in again} == {"waiting", "exists"}
    other: list[LayerEvent] = []
    pushed = push(driver, store, image, f"{registry.host}/other/app:1", on_layer=other.append)
    assert {e.state for e in other} == {"waiting", "mounted"}
    with RegistryClient(registry.host) as client:
        assert client.get_manifest("other/app", "1", [MT_OCI_MANIFEST]).digest == pushed.digest


def test_push_by_its_own_name(
    driver: Driver, store: ImageStore, registry: Registry, image: str
) -> None:
    store.tag(f"{registry.host}/solo", "v1", image)
    pushed = push(driver, store, f"{registry.host}/solo:v1")
    assert pushed.reference == f"{registry.host}/solo:v1"
    with RegistryClient(registry.host) as client:
        assert client.get_manifest("solo", "v1", [MT_OCI_MANIFEST]).digest == pushed.digest


def test_a_damaged_layer_is_not_pushed_and_no_manifest_is_made(
    driver: Driver, store: ImageStore, registry: Registry, image: str
) -> None:
    chain = store.get(image).layers[1]
    folder = driver.home / layer_id_for(chain)
    damaged = list(folder.rglob("big.bin"))
    assert damaged, "the layer's file is where the portable store keeps it"
    data = bytearray(damaged[0].read_bytes())
    data[100] ^= 0xFF
    damaged[0].write_bytes(bytes(data))
    # The stored tar is read back through its digest check: the upload stops at its end.
    with pytest.raises(DigestMismatch, match=f"digest mismatch of layer '{layer_id_for(chain)}'"):
        push(driver, store, "app:1", f"{registry.host}/team/app:1")
    with RegistryClient(registry.host) as client:
        assert client.blob_exists("team/app", sha(LAYERS[1])) is None
        with pytest.raises(WinlayerError, match="HTTP 404"):
            client.get_manifest("team/app", "1", [MT_OCI_MANIFEST])


def test_push_through_the_cli(cli: Cli, registry: Registry, tmp_path: Path) -> None:
    archive, config = docker_save(LAYERS, tags=["app:1"])
    (tmp_path / "in.tar").write_bytes(archive)
    assert cli("load", str(tmp_path / "in.tar")).returncode == 0
    done = cli("push", "app:1", f"{registry.host}/team/app:1")
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[:2] == [f"{sha(layer)[7:19]}: Pushed" for layer in LAYERS]
    assert lines[2].startswith("1: digest: sha256:")
    result = cli.json("push", "app:1", f"{registry.host}/team/app:1")
    assert isinstance(result, dict)
    assert result["image_id"] == sha(config)
    assert result["reference"] == f"{registry.host}/team/app:1"
    assert [layer["state"] for layer in result["layers"]] == ["exists", "exists"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--password-stdin"], b"--password-stdin needs --username"),
        (["--jobs", "0"], b"--jobs must be at least 1"),
    ],
)
def test_push_usage_errors(cli: Cli, args: list[str], message: bytes) -> None:
    done = cli("push", "app:1", "127.0.0.1:1/x", *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_push_of_an_unknown_image_names_it(cli: Cli) -> None:
    done = cli("push", "nosuch:1", "127.0.0.1:1/x:1")
    assert done.returncode == 1
    assert b"image not found: 'nosuch:1'" in done.stderr
