"""``save``: write images with their original layer tars as a ``docker save`` archive that
is also an OCI image layout.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from ._archive_plan import (
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_MANIFEST,
    json_field,
    layer_id_for,
    parse_json,
)
from ._common import CHUNK, Progress
from ._output import output_file
from ._pipeline import HashingReader
from .errors import WinlayerError
from .imagestore import Image, ImageStore, StoredLayer, parse_reference

if TYPE_CHECKING:
    from .driver import Driver

# -- save ---------------------------------------------------------------------------------


def save(
    driver: Driver,
    store: ImageStore,
    image_refs: str | Sequence[str],
    out: str | os.PathLike[str] | IO[bytes],
    *,
    progress: Progress | None = None,
) -> None:
    """Write images to a ``docker save`` archive that is also an OCI image layout.

    The layer blobs are the original layer tars (``driver.diff(id, original=True)``), so
    every digest matches what was loaded: ``load(save(x))`` gives the same image id,
    diffIDs and chain IDs. A path is written as :mod:`winlayer._output` says (a regular
    file is replaced once complete, a device or FIFO written in place); a stream is
    written sequentially.
    """
    refs = [image_refs] if isinstance(image_refs, str) else list(image_refs)
    entries = [saved_image(store, ref) for ref in refs]
    if isinstance(out, (str, os.PathLike)):
        with output_file(out) as f:
            _write_archive(driver, store, entries, f, progress)
    else:
        _write_archive(driver, store, entries, out, progress)


@dataclass
class SavedImage:
    """An image to write out (save, push): its record, the tags it carries, its layers."""

    image: Image
    tags: list[str]
    layers: list[StoredLayer]


def saved_image(store: ImageStore, ref: str) -> SavedImage:
    image = store.get(ref)
    # As docker save: an image named by a tag carries that tag, one named by id none.
    tags: list[str] = []
    with contextlib.suppress(ValueError):
        name, tag = parse_reference(ref)
        if f"{name}:{tag}" in image.tags:
            tags = [f"{name}:{tag}"]
    config = parse_json(image.config, "config")
    if not isinstance(config, dict) or not isinstance(json_field(config, "rootfs"), dict):
        raise WinlayerError(
            f"image {image.id} is a host base image; it has no layer tars to save or push"
        )
    layers = []
    for chain_id in image.layers:
        stored = store.layer(chain_id)
        if stored is None:
            raise WinlayerError(f"image {image.id}: layer {chain_id} is missing from the store")
        layers.append(stored)
    return SavedImage(image, tags, layers)


def _write_archive(
    driver: Driver,
    store: ImageStore,
    entries: list[SavedImage],
    out: IO[bytes],
    progress: Progress | None,
) -> None:
    total = sum(layer.tar_size for e in entries for layer in e.layers)
    done = 0
    written: set[str] = set()
    manifest: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            _add_dir(tar, name)
        for entry in entries:
            for layer in entry.layers:
                if layer.diff_id in written:
                    continue
                written.add(layer.diff_id)
                with driver.diff(layer.layer_id, original=True) as stream:
                    hashed = HashingReader(stream)
                    info = _info(f"blobs/sha256/{layer_id_for(layer.diff_id)}", layer.tar_size)
                    tar.addfile(info, io.BufferedReader(hashed, CHUNK))  # full reads
                    check_saved(hashed, layer)
                done += layer.tar_size
                if progress is not None:
                    progress(done, total)
            config_hex = entry.image.id
            if config_hex not in written:
                written.add(config_hex)
                _add_bytes(tar, f"blobs/sha256/{config_hex}", entry.image.config)
            manifest_bytes = oci_manifest(entry)
            manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
            if manifest_digest not in written:
                written.add(manifest_digest)
                _add_bytes(tar, f"blobs/sha256/{manifest_digest}", manifest_bytes)
            manifest.append(
                {
                    "Config": f"blobs/sha256/{config_hex}",
                    "RepoTags": entry.tags,
                    "Layers": [
                        f"blobs/sha256/{layer_id_for(layer.diff_id)}" for layer in entry.layers
                    ],
                }
            )
            descriptor: dict[str, Any] = {
                "mediaType": MT_OCI_MANIFEST,
                "digest": f"sha256:{manifest_digest}",
                "size": len(manifest_bytes),
            }
            if not entry.tags:
                index.append(descriptor)
            for ref in entry.tags:  # one index entry per tag, annotated as Docker does
                name, _, tag = ref.rpartition(":")
                annotations = {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": tag,
                }
                index.append({**descriptor, "annotations": annotations})
                repositories.setdefault(name, {})[tag] = config_hex
        _add_bytes(
            tar,
            "index.json",
            _compact({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index}),
        )
        _add_bytes(tar, "manifest.json", _compact(manifest))
        _add_bytes(tar, "oci-layout", _compact({"imageLayoutVersion": "1.0.0"}))
        if repositories:
            _add_bytes(tar, "repositories", _compact(repositories))


def oci_manifest(entry: SavedImage) -> bytes:
    return _compact(
        {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {
                "mediaType": MT_OCI_CONFIG,
                "digest": f"sha256:{entry.image.id}",
                "size": len(entry.image.config),
            },
            "layers": [
                {"mediaType": MT_OCI_LAYER, "digest": layer.diff_id, "size": layer.tar_size}
                for layer in entry.layers
            ],
        }
    )


def check_saved(hashed: HashingReader, layer: StoredLayer) -> None:
    """Refuse a stored layer's original tar, just copied, that is not the one recorded."""
    copied = hashed.count
    extra = hashed.read(1)  # tarfile copies the recorded size; a longer tar is wrong too
    if extra or copied != layer.tar_size or hashed.digest != layer.diff_id:
        raise WinlayerError(
            f"stored layer {layer.layer_id} no longer matches its diffID "
            f"{layer.diff_id}; it cannot be saved"
        )


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))
