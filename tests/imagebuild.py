"""Build image archives and registry manifests for tests, with tarfile and json
(independently of winlayer's writers): docker save archives, OCI layouts, OCI image
manifests, and the images the build tests start from."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from winlayer import Driver
from winlayer._registry import Manifest, RegistryClient
from winlayer.archive import MT_OCI_CONFIG, MT_OCI_LAYER, MT_OCI_MANIFEST
from winlayer.images import Image, ImageStore, append, load

from .layerbuild import base_layer, d, f, layer_tar, wh

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z
TOOLS = layer_tar([d("Files/tools"), f("Files/tools/tool.exe", b"MZ" + bytes(100))])
BASE_EXTRA = {"os.version": "10.0.20348.2113", "os.features": ["win32k"], "variant": ""}


L1 = base_layer()
L2 = layer_tar(
    [d("Files/app"), f("Files/app/run.cmd", b"@echo hi\r\n"), wh("Files/Windows/win.ini")]
)
L3 = layer_tar([d("Files/other"), f("Files/other/data.bin", bytes(range(256)) * 40)])


class Pipe(io.RawIOBase):
    """A non-seekable stream, as stdin would be."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 7000))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def write(tmp_path: Path, data: bytes, name: str = "image.tar") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def make_tar(members: list[tuple[str, Any]]) -> bytes:
    """(name, bytes) for files, (name, ("symlink", target)) for symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_for(layers: list[bytes], **extra: Any) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "windows",
        "created": "2024-05-01T10:00:00Z",
        "config": {"Cmd": ["cmd.exe"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
        **extra,
    }
    return json.dumps(config).encode()


def docker_save(
    layers: list[bytes],
    *,
    compression: list[str] | None = None,
    tags: list[str] | None = None,
    layout: str = "legacy",
    config: bytes | None = None,
    layers_first: bool = True,
) -> tuple[bytes, bytes]:
    """A docker save archive; `layout` "legacy" (<v1 id>/layer.tar, a symlink to the blob
    as in the fixture) or "blobs" (blobs/sha256/<digest>, Docker 25)."""
    compression = compression or ["none"] * len(layers)
    config = config if config is not None else config_for(layers)
    blobs = [compress(layer, how) for layer, how in zip(layers, compression, strict=True)]
    members: list[tuple[str, Any]] = []
    paths = []
    for i, blob in enumerate(blobs):
        if layout == "legacy":
            v1 = hashlib.sha256(f"v1-{i}".encode()).hexdigest()
            members += [(f"{v1}/VERSION", b"1.0"), (f"{v1}/json", b"{}")]
            members.append((f"{sha(blob)[7:]}.tar", blob))
            members.append((f"{v1}/layer.tar", ("symlink", f"../{sha(blob)[7:]}.tar")))
            paths.append(f"{v1}/layer.tar")
        else:
            path = f"blobs/sha256/{sha(blob)[7:]}"
            members.append((path, blob))
            paths.append(path)
    config_path = (
        f"{sha(config)[7:]}.json" if layout == "legacy" else f"blobs/sha256/{sha(config)[7:]}"
    )
    meta = [
        (config_path, config),
        (
            "manifest.json",
            json.dumps([{"Config": config_path, "RepoTags": tags or [], "Layers": paths}]).encode(),
        ),
        ("repositories", b"{}"),
    ]
    ordered = members + meta if layers_first else meta + members
    return make_tar(ordered), config


def descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    """An OCI descriptor of `blob` (its digest and size) with fields `extra`."""
    return {"mediaType": media_type, "digest": sha(blob), "size": len(blob), **extra}


def image_manifest(config: bytes, layers: list[dict[str, Any]]) -> Manifest:
    """An OCI image manifest of `config` and the layer descriptors `layers`."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": descriptor(MT_OCI_CONFIG, config),
        "layers": layers,
    }
    data = json.dumps(doc).encode()
    return Manifest(MT_OCI_MANIFEST, sha(data), data)


def oci_layout(
    layers: list[bytes],
    *,
    compression: list[str] | None = None,
    ref: str | None = "example.com/app:1.0",
    config: bytes | None = None,
    tamper: dict[str, Any] | None = None,
) -> tuple[bytes, bytes]:
    compression = compression or ["none"] * len(layers)
    config = config if config is not None else config_for(layers)
    blobs = [compress(layer, how) for layer, how in zip(layers, compression, strict=True)]
    media = {"none": "", "gzip": "+gzip", "zstd": "+zstd"}
    layer_descriptors = [
        descriptor(MT_OCI_LAYER + media[how], blob)
        for blob, how in zip(blobs, compression, strict=True)
    ]
    for key, value in (tamper or {}).items():
        position, field = key.split(".")
        layer_descriptors[int(position)][field] = value
    manifest_bytes = image_manifest(config, layer_descriptors).data
    entry = descriptor(MT_OCI_MANIFEST, manifest_bytes)
    if ref:
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref}
    index = {"schemaVersion": 2, "manifests": [entry]}
    # A layer blob is stored under the digest its descriptor names (tampered or not).
    names = [desc["digest"] for desc in layer_descriptors] + [sha(config), sha(manifest_bytes)]
    contents = [*blobs, config, manifest_bytes]
    members = [(f"blobs/sha256/{n[7:]}", b) for n, b in zip(names, contents, strict=True)]
    members += [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index).encode()),
    ]
    return make_tar(members), config


def base_archive(tag: str = "base:1") -> tuple[bytes, bytes]:
    """A docker save archive of a two-layer Windows base image tagged `tag`; its config."""
    layers = [base_layer(), TOOLS]
    return docker_save(layers, tags=[tag], config=config_for(layers, **BASE_EXTRA))


def load_base(driver: Driver, store: ImageStore, tmp_path: Path, tag: str = "base:1") -> bytes:
    """Load the base image of `base_archive` tagged `tag`; return its config."""
    data, config = base_archive(tag)
    archive = tmp_path / f"{tag.replace(':', '-')}.tar"
    archive.write_bytes(data)
    load(driver, store, archive)
    return config


def make_tree(root: Path, stamp_ns: int = 1_650_000_000_123_456_789) -> Path:
    """A folder with subfolders, an empty file, a symlink and a hard link; every time set
    to `stamp_ns` (not a whole number of 100 ns ticks) and older ones below it."""
    (root / "app" / "sub" / "deeper").mkdir(parents=True)
    (root / "app" / "run.cmd").write_bytes(b"@echo hi\r\n")
    (root / "app" / "empty.txt").write_bytes(b"")
    (root / "app" / "sub" / "deeper" / "data.bin").write_bytes(bytes(range(256)) * 50)
    (root / "app" / "sub" / "same.bin").write_bytes(b"shared")
    os.link(root / "app" / "sub" / "same.bin", root / "app" / "sub" / "again.bin")
    os.symlink("run.cmd", root / "app" / "link.cmd")
    (root / "old.txt").write_bytes(b"from before 1970")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, ns=(stamp_ns, stamp_ns), follow_symlinks=False)
    os.utime(root / "old.txt", ns=(-1_500_000_050, -1_500_000_050))
    os.utime(root, ns=(stamp_ns, stamp_ns))
    return root


def append_tree(
    driver: Driver,
    store: ImageStore,
    tree: Path,
    tag: str,
    *,
    base: str = "base:1",
    epoch: int = EPOCH,
) -> Image:
    """Append the folder `tree` to image `base` as image `tag`, its times clamped to `epoch`."""
    return append(driver, store, base, [tree], tag=tag, source_date_epoch=epoch)


def push_image(client: RegistryClient, repository: str, layer: bytes, tag: str) -> Manifest:
    """Push a one-layer image (`layer` as it is, a config naming no diff IDs) as `tag`."""
    config = json.dumps(
        {"architecture": "amd64", "os": "windows", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    for blob in (config, layer):
        client.upload_blob(repository, sha(blob), iter([blob]), monolithic=True)
    manifest = image_manifest(config, [descriptor(MT_OCI_LAYER, layer)])
    client.put_manifest(repository, tag, manifest)
    return manifest


def hello_archive(layer: bytes, depth: int = 1) -> bytes:
    """A docker save archive of image hello:1, `layer` stacked `depth` times (one member
    that the manifest names `depth` times)."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "windows",
            "rootfs": {"type": "layers", "diff_ids": [sha(layer)] * depth},
        }
    ).encode()
    config_name = sha(config)[7:] + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": ["hello:1"], "Layers": ["l1/layer.tar"] * depth}]
    ).encode()
    return make_tar([("manifest.json", manifest), (config_name, config), ("l1/layer.tar", layer)])
