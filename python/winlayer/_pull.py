"""``pull``: an image from a registry into the store, downloads overlapping imports.

The manifest (an index first, then the platform's manifest, each checked against its
digest) and the config are read and planned as ``load`` plans an archive: the config
must be Windows, its diffIDs must match the layers, the chain must not be too deep.
Layers the store holds (by chain ID) are not downloaded.

Then, with `jobs` downloads at a time, in chain order, and as many layers imported at a
time as there are cores (up to `jobs`; each while its parent is still being written, as
``load`` does):

- a layer whose turn comes before its download has started streams from the socket
  through the digest and the decompressor into the importer
  (:class:`~winlayer._pipeline.TarFeed`);
- the layers after it download at the same time into spool files in a staging folder of
  the store (on its volume), hashed as they arrive; when a layer's turn comes the
  importer reads its spool file while it is still being written, and the end of the file
  is reached only once its digest and size are checked, so nothing unverified is
  committed.

Each layer is recorded in the store as soon as it is committed, so a pull that fails (or
is killed) keeps its complete, verified layers for the next try (``prune`` removes them if
no image comes to need them); the image and its tag are recorded last, in one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._archive_load import Loader
from ._archive_members import METADATA_LIMIT, InvalidArchive, Member
from ._archive_plan import (
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    ImagePlan,
    PlannedLayer,
    check_layer_media_type,
    check_windows,
    choose_manifest,
    descriptor,
    image_plan,
    layer_compression,
    parse_json,
)
from ._common import CHUNK, LayerEvent, LayerEvents
from ._pipeline import TarFeed
from ._platform import Platform, config_platform, host_platform
from ._reference import Reference
from ._registry import Manifest, RegistryClient, RegistryError
from .errors import DigestMismatch, PlatformNotFound
from .imagestore import Image, ImageStore, StoredLayer

if TYPE_CHECKING:
    from .driver import Driver

log = logging.getLogger(__name__)

DEFAULT_JOBS = 4
ACCEPT = [MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST]
_INDEX_TYPES = {MT_OCI_INDEX, MT_DOCKER_LIST}
_MANIFEST_TYPES = {MT_OCI_MANIFEST, MT_DOCKER_MANIFEST}
_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1"


@dataclass(frozen=True)
class Pulled:
    """What :func:`pull` brought: the `reference` pulled, the `digest` of the image's
    manifest, the `image` recorded, how many layer blobs it `downloaded` (the others were
    in the store) and the image's `platform`."""

    reference: str
    digest: str  # of the image manifest
    image: Image
    downloaded: int  # layer blobs fetched (not already in the store)
    platform: Platform  # the index's for the image chosen, else its config's


def pull(
    driver: Driver,
    store: ImageStore,
    ref: Reference,
    client: RegistryClient,
    *,
    platform: Platform | None = None,
    jobs: int = DEFAULT_JOBS,
    allow_foreign: bool = False,
    on_layer: LayerEvents | None = None,
) -> Pulled:
    """Pull `ref` through `client`: from an index, the image for `platform` (default: the
    host's, chosen as ``load`` chooses). Foreign layers are fetched from their URLs only
    with `allow_foreign`."""
    repository = ref.repository
    wanted = platform if platform is not None else host_platform()
    top = client.get_manifest(repository, ref.target, ACCEPT)
    manifest = top
    chosen: Platform | None = None
    if top.media_type in _INDEX_TYPES:
        index_where = f"{client.host}/{repository}@{top.digest}"
        candidates = _index_manifests(top, index_where)
        picked = choose_manifest(candidates, wanted, platform is not None, index_where)
        if picked is None:
            raise PlatformNotFound(
                str(wanted),
                [str(p) for p, _, _ in candidates],
                source=f"the index {index_where}",
            )
        chosen, digest, size = picked
        manifest = client.get_manifest(repository, digest, ACCEPT)
        if len(manifest.data) != size:
            raise RegistryError(
                f"manifest is {len(manifest.data)} bytes, the index says {size}",
                registry=client.host,
                repository=repository,
                digest=digest,
            )
    if manifest.media_type.startswith(_SCHEMA1):
        raise RegistryError(
            "Docker schema 1 manifests are not supported (push the image again with a "
            "current tool)",
            registry=client.host,
            repository=repository,
            digest=manifest.digest,
        )
    if manifest.media_type not in _MANIFEST_TYPES:
        raise RegistryError(
            f"unsupported manifest media type {manifest.media_type!r}",
            registry=client.host,
            repository=repository,
            digest=manifest.digest,
        )
    where = f"{client.host}/{repository}@{manifest.digest}"
    foreign: dict[str, str] = {}
    plan, media_types = _plan(
        client, repository, manifest, where, foreign, allow_foreign=allow_foreign
    )
    image_platform = config_platform(plan.config)
    if chosen is None and platform is not None and not platform.matches(image_platform):
        raise PlatformNotFound(str(platform), [str(image_platform)], source=where)
    check_windows(plan)
    tag = (ref.name, ref.tag) if ref.tag and not ref.digest else None
    events = on_layer or (lambda _event: None)
    loader = Loader(driver, store, None)
    todo = loader.pending([plan])
    for layer in plan.layers:
        size = layer.blob.size
        if layer in todo:
            events(LayerEvent(str(layer.blob_digest), "waiting", 0, size))
        else:
            events(LayerEvent(str(layer.blob_digest), "exists", size, size))
    staging = driver.new_staging_dir()
    position = {layer.chain_id: i for i, layer in enumerate(todo)}
    try:
        with _Downloads(client, repository, staging, jobs, foreign, events) as downloads:

            def feed(layer: PlannedLayer) -> TarFeed:
                i = position[layer.chain_id]
                downloads.prefetch(todo[i + 1 : i + jobs])
                digest, size = str(layer.blob_digest), layer.blob.size
                spooled = downloads.spooled(layer)
                return loader.feed(
                    layer,
                    downloads.opener(layer),
                    compression=layer_compression(media_types[layer.chain_id]),
                    verify_blob=not spooled,
                    on_bytes=None if spooled else _counter(digest, size, events),
                )

            def committed(stored: StoredLayer) -> None:
                layer = todo[position[stored.chain_id]]
                loader.keep(layer.chain_id)  # a later failure does not lose this layer
                downloads.remove(layer)
                events(LayerEvent(str(layer.blob_digest), "done", layer.blob.size, layer.blob.size))

            loader.run(todo, feed, jobs=min(jobs, os.cpu_count() or 1), on_commit=committed)
        image = loader.commit([plan], tag)[0]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Pulled(str(ref), manifest.digest, image, len(todo), chosen or image_platform)


def _index_manifests(index: Manifest, where: str) -> list[tuple[Platform, str, int]]:
    """The image manifests an index lists, with their platforms."""
    doc = _object(index.data, where)
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise InvalidArchive("index has no manifests list", where)
    found = []
    for entry in entries:
        media_type, digest, size, desc = descriptor(entry, where)
        if media_type in _MANIFEST_TYPES:
            found.append((Platform.from_json(desc.get("platform")), digest, size))
    return found


def _counter(digest: str, size: int, events: LayerEvents) -> Callable[[int], None]:
    """Download events for a layer streamed into the importer."""
    done = 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        events(LayerEvent(digest, "downloading", done, size))

    return count


def _plan(
    client: RegistryClient,
    repository: str,
    manifest: Manifest,
    where: str,
    foreign: dict[str, str],
    *,
    allow_foreign: bool,
) -> tuple[ImagePlan, dict[str, str]]:
    """The image plan of a manifest, and each layer's media type by chain ID. A foreign
    layer (with `urls`) is refused unless `allow_foreign`; then its first URL is put in
    `foreign` (blob digest -> URL)."""
    doc = _object(manifest.data, where)
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidArchive("image manifest has no layers list", where)
    _, config_digest, config_size, _ = descriptor(doc.get("config"), where)
    if config_size > METADATA_LIMIT:
        raise InvalidArchive(f"config is {config_size} bytes; at most {METADATA_LIMIT}", where)
    config = client.get_blob(repository, config_digest, limit=METADATA_LIMIT)
    blobs: list[tuple[Member, str | None, int | None]] = []
    kinds: list[str] = []
    for entry in layers:
        media_type, digest, size, desc = descriptor(entry, where)
        check_layer_media_type(media_type, where)
        urls = desc.get("urls")
        if urls is not None:
            if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
                raise InvalidArchive(f"layer {digest} has urls that are not a list of URLs", where)
            if not allow_foreign:
                raise InvalidArchive(
                    f"layer {digest} is a foreign layer, to be fetched from {urls[0]}; "
                    "pull with --foreign-layers to fetch it from there",
                    where,
                )
            foreign[digest] = urls[0]
        blobs.append((Member(f"{where} layer {digest}", size, 0), digest, size))
        kinds.append(media_type)
    plan = image_plan(config, f"{where} config {config_digest}", blobs)
    return plan, {layer.chain_id: kind for layer, kind in zip(plan.layers, kinds, strict=True)}


def _object(data: bytes, where: str) -> dict[str, Any]:
    doc = parse_json(data, where)
    if not isinstance(doc, dict):
        raise InvalidArchive("manifest is not a JSON object", where)
    return doc


class _Spool:
    """A layer blob being downloaded into a file: read while it grows; its end is seen
    only once the whole blob is written and verified (or its failure is raised)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self.error: BaseException | None = None
        self.finished = False
        self.changed = threading.Condition()

    def wrote(self, n: int) -> None:
        with self.changed:
            self.written += n
            self.changed.notify_all()

    def end(self, error: BaseException | None) -> None:
        with self.changed:
            self.finished = True
            self.error = error
            self.changed.notify_all()


class _SpoolReader:
    """Reads a :class:`_Spool` as it is written."""

    def __init__(self, spool: _Spool) -> None:
        self._spool = spool
        self._file: IO[bytes] = open(spool.path, "rb")  # noqa: SIM115 (closed in close)
        self._position = 0

    def read(self, n: int = -1) -> bytes:
        size = CHUNK if n is None or n < 0 else n
        spool = self._spool
        with spool.changed:
            while self._position >= spool.written and not spool.finished:
                spool.changed.wait()
            if self._position >= spool.written:
                if spool.error is not None:
                    raise spool.error
                return b""
            available = spool.written - self._position
        data = self._file.read(min(size, available))
        self._position += len(data)
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> _SpoolReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Downloads:
    """The spool downloads of the layers after the one being imported (at most `jobs`
    at a time, counting the streamed one)."""

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        staging: Path,
        jobs: int,
        foreign: dict[str, str],
        events: LayerEvents,
    ) -> None:
        self._foreign = foreign
        self._client = client
        self._repository = repository
        self._staging = staging
        self._events = events
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, jobs - 1), thread_name_prefix="winlayer-pull"
        )
        self._spools: dict[str, tuple[_Spool, Future[None]]] = {}
        self._stop = threading.Event()
        self._claimed: set[str] = set()  # layers whose import has started
        self._lock = threading.Lock()  # layers are imported on several threads

    def __enter__(self) -> _Downloads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # a failure: the spool downloads stop at their next chunk
        self._pool.shutdown(wait=True, cancel_futures=True)

    def prefetch(self, layers: list[PlannedLayer]) -> None:
        """Start the spool downloads of `layers` (those not started, nor being imported)."""
        with self._lock:
            for layer in layers:
                if layer.chain_id in self._spools or layer.chain_id in self._claimed:
                    continue
                self._staging.mkdir(parents=True, exist_ok=True)
                spool = _Spool(self._staging / layer.chain_id.removeprefix("sha256:"))
                spool.path.touch()
                future = self._pool.submit(self._download, layer, spool)
                self._spools[layer.chain_id] = (spool, future)

    def spooled(self, layer: PlannedLayer) -> bool:
        """Whether the layer, whose import starts now, comes from a spool (verified by
        its download, not its feed)."""
        with self._lock:
            self._claimed.add(layer.chain_id)
            entry = self._spools.get(layer.chain_id)
            if entry is None:
                return False
            if entry[1].cancel():  # not started yet: stream it instead
                del self._spools[layer.chain_id]
                entry[0].path.unlink(missing_ok=True)
                return False
            return True

    def opener(self, layer: PlannedLayer) -> Callable[[], Any]:
        with self._lock:
            entry = self._spools.get(layer.chain_id)
        digest = str(layer.blob_digest)
        if entry is None:
            return lambda: self._open(digest)
        spool = entry[0]

        def open_spool() -> Any:
            self._events(LayerEvent(digest, "extracting", spool.written, layer.blob.size))
            return _SpoolReader(spool)

        return open_spool

    def _open(self, digest: str) -> Any:
        return self._client.open_blob(self._repository, digest, url=self._foreign.get(digest))

    def _download(self, layer: PlannedLayer, spool: _Spool) -> None:
        digest, size = str(layer.blob_digest), layer.blob.size
        hasher = hashlib.sha256()
        error: BaseException | None = None
        try:
            with (
                self._open(digest) as stream,
                open(spool.path, "ab") as out,
            ):
                while not self._stop.is_set():
                    data = stream.read(CHUNK)
                    if not data:
                        break
                    if spool.written + len(data) > size:
                        raise RegistryError(
                            f"blob is longer than its descriptor's {size} bytes",
                            registry=self._client.host,
                            repository=self._repository,
                            digest=digest,
                        )
                    hasher.update(data)
                    out.write(data)
                    out.flush()
                    spool.wrote(len(data))
                    self._events(LayerEvent(digest, "downloading", spool.written, size))
            if self._stop.is_set():
                raise RegistryError("download stopped", registry=self._client.host, digest=digest)
            self._events(LayerEvent(digest, "verifying", spool.written, size))
            if spool.written != size:
                raise RegistryError(
                    f"blob has {spool.written} bytes, its descriptor says {size}",
                    registry=self._client.host,
                    repository=self._repository,
                    digest=digest,
                )
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise DigestMismatch(
                    digest, actual, f"blob {self._client.host}/{self._repository}@{digest}"
                )
        except BaseException as exc:
            error = exc
        spool.end(error)

    def remove(self, layer: PlannedLayer) -> None:
        with self._lock:
            entry = self._spools.pop(layer.chain_id, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.unlink(entry[0].path)
