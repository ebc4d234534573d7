"""``push``: an image of the store to a registry, with the manifest ``save`` writes.

The layer blobs are the original layer tars, uncompressed, as ``save`` writes them: the
blob digest is the diffID and the manifest is byte for byte the one in a saved archive, so
an image pushed, pulled and saved keeps every digest. For each layer, in parallel (bounded):
a HEAD says whether the repository has it; else a blob this store pushed to another
repository of the same registry is mounted from there; else it is uploaded (one PUT for a
small blob, else PATCH requests of :data:`CHUNK_SIZE`), read through a hasher that must
end at the recorded diffID before the upload is closed. The config goes next, the manifest
last, so a registry never holds a manifest whose blobs it lacks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._archive_plan import MT_OCI_MANIFEST
from ._archive_save import check_saved, oci_manifest, saved_image
from ._common import LayerEvent, LayerEvents
from ._pipeline import HashingReader
from ._reference import Reference
from ._registry import Manifest, RegistryClient
from .imagestore import ImageStore, StoredLayer

if TYPE_CHECKING:
    from .driver import Driver

#: Bytes per PATCH of a chunked upload; a blob smaller than this goes in one PUT.
CHUNK_SIZE = 8 << 20
DEFAULT_JOBS = 4


@dataclass(frozen=True)
class Pushed:
    """What :func:`push` sent: the `reference` pushed to, the `digest` and `size` of the
    manifest, and the `image_id` pushed."""

    reference: str
    digest: str  # of the manifest
    size: int  # of the manifest
    image_id: str


def push(
    driver: Driver,
    store: ImageStore,
    image_ref: str,
    dest: Reference,
    client: RegistryClient,
    *,
    jobs: int = DEFAULT_JOBS,
    on_layer: LayerEvents | None = None,
) -> Pushed:
    """Push `image_ref` (a tag, id or id prefix in `store`) to `dest` through `client`."""
    entry = saved_image(store, image_ref)
    repository = dest.repository
    events = on_layer or (lambda _event: None)
    for layer in entry.layers:
        events(LayerEvent(layer.diff_id, "waiting", 0, layer.tar_size))
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="winlayer-push") as pool:
        futures = [
            pool.submit(_push_layer, driver, store, client, repository, layer, events)
            for layer in _unique(entry.layers)
        ]
        for future in futures:
            future.result()  # the first failure, after every upload has stopped
    config = entry.image.config
    config_digest = "sha256:" + entry.image.id
    if client.blob_exists(repository, config_digest) is None:
        client.upload_blob(repository, config_digest, iter([config]), monolithic=True)
    data = oci_manifest(entry)
    manifest = Manifest(MT_OCI_MANIFEST, "sha256:" + hashlib.sha256(data).hexdigest(), data)
    client.put_manifest(repository, dest.digest or dest.tag or manifest.digest, manifest)
    return Pushed(str(dest), manifest.digest, len(data), "sha256:" + entry.image.id)


def _unique(layers: list[StoredLayer]) -> list[StoredLayer]:
    """Each blob once (two layers of an image may have one diffID)."""
    return list({layer.diff_id: layer for layer in layers}.values())


def _push_layer(
    driver: Driver,
    store: ImageStore,
    client: RegistryClient,
    repository: str,
    layer: StoredLayer,
    events: LayerEvents,
) -> None:
    digest, total = layer.diff_id, layer.tar_size
    if client.blob_exists(repository, digest) is not None:
        events(LayerEvent(digest, "exists", total, total))
        return
    for source in store.blob_sources(digest, client.host):
        if source != repository and client.mount_blob(repository, digest, source):
            events(LayerEvent(digest, "mounted", total, total))
            store.record_blob_source(digest, client.host, repository)
            return
    with driver.diff(layer.layer_id, original=True) as stream:
        hashed = HashingReader(stream)
        client.upload_blob(
            repository,
            digest,
            _checked_chunks(hashed, layer, events),
            monolithic=total < CHUNK_SIZE,
        )
    store.record_blob_source(digest, client.host, repository)
    events(LayerEvent(digest, "done", total, total))


def _checked_chunks(
    hashed: HashingReader, layer: StoredLayer, events: LayerEvents
) -> Iterator[bytes]:
    """The stored tar in upload chunks; at its end, a tar that is not the one recorded
    stops the upload before it is closed."""
    while True:
        chunk = _read_full(hashed, CHUNK_SIZE)
        if chunk:
            events(LayerEvent(layer.diff_id, "pushing", hashed.count, layer.tar_size))
        if len(chunk) < CHUNK_SIZE:
            check_saved(hashed, layer)
            if chunk:
                yield chunk
            return
        yield chunk


def _read_full(stream: HashingReader, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left:
        data = stream.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


__all__ = ["CHUNK_SIZE", "Pushed", "push"]
