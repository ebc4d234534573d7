"""``load``: import the layers of a plan in chain order through the import pipeline, then
record the images and tags in one transaction; undo on failure.
"""

from __future__ import annotations

import filecmp
import functools
import io
import os
import secrets
import shutil
import tarfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._applyjobs import worker_count
from ._archive_members import (
    ArchiveSource,
    DirectoryArchive,
    InvalidArchive,
    SeekableArchive,
    StreamedArchive,
    clean_name,
    open_outer,
    stream_tar,
    two_copies,
)
from ._archive_plan import ImagePlan, PlannedLayer, plan_images
from ._common import CHUNK, Progress
from ._layerrecord import LayerRecorder, NewLayer
from ._pipeline import BlobOpener, TarFeed, digest_of, read_ahead
from ._platform import Platform, parse_platform
from ._stream import Compression
from .errors import InvalidArgument
from .imagestore import Image, ImageStore, StoredLayer, parse_reference

if TYPE_CHECKING:
    from .driver import Driver

# -- load ---------------------------------------------------------------------------------


class Loader(LayerRecorder):
    """Imports the layers of a plan in chain order; undoes its imports on failure."""

    def __init__(self, driver: Driver, store: ImageStore, progress: Progress | None) -> None:
        super().__init__(driver, store)
        self._progress = progress
        self._done = 0
        self.total = 0
        self._progress_lock = threading.Lock()
        self._read_ahead = read_ahead(1)  # per feed, set by run() for its jobs

    def pending(self, plans: list[ImagePlan]) -> list[PlannedLayer]:
        """The layers to import, in chain order, each chain ID once; records the ones
        the store and driver already hold."""
        todo: list[PlannedLayer] = []
        seen: set[str] = set()
        for plan in plans:
            for layer in plan.layers:
                if layer.chain_id in seen:
                    continue
                seen.add(layer.chain_id)
                if self.known(layer.chain_id) is None:
                    todo.append(layer)
        self.total = sum(layer.blob.size for layer in todo)
        return todo

    def feed(
        self,
        layer: PlannedLayer,
        opener: BlobOpener,
        *,
        compression: Compression | None = None,
        verify_blob: bool = True,
        on_bytes: Callable[[int], None] | None = None,
        in_place: tuple[str, int, int] | None = None,
    ) -> TarFeed:
        """The feed of one layer's blob. `compression` None sniffs it; `verify_blob` False
        is for a blob its source has verified already (a pull's spool file); `on_bytes`
        replaces the load's progress count; `in_place` is where the blob is in a file (see
        :class:`~winlayer._pipeline.TarFeed`)."""
        return TarFeed(
            opener,
            name=layer.blob.name,
            compression=compression,
            blob_digest=layer.blob_digest if verify_blob else None,
            blob_size=layer.blob_size if verify_blob else None,
            trust_diff_id=layer.blob_digest == layer.diff_id,
            max_uncompressed=self.driver.max_layer_size,
            on_bytes=on_bytes or self._advance,
            in_place=in_place,
            capacity=self._read_ahead,
        )

    def run(
        self,
        todo: list[PlannedLayer],
        feed: Callable[[PlannedLayer], TarFeed],
        *,
        jobs: int | None = None,
        on_commit: Callable[[StoredLayer], None] | None = None,
    ) -> None:
        """Imports `todo`, up to `jobs` layers at a time (see
        :meth:`~winlayer._layerrecord.LayerRecorder.import_layers`), each from
        ``feed(layer)``, made when the layer's turn comes; the feeds of layers imported
        at once read ahead less each (:func:`~winlayer._pipeline.read_ahead`)."""
        self._read_ahead = read_ahead(worker_count(jobs, len(todo)))
        self.import_layers(
            [
                NewLayer(
                    layer.chain_id,
                    layer.diff_id,
                    layer.parent,
                    functools.partial(feed, layer),
                    layer.blob.name,
                )
                for layer in todo
            ],
            jobs=jobs,
            on_commit=on_commit,
        )

    def load_layer(self, layer: PlannedLayer, feed: TarFeed) -> None:
        """Imports one layer from `feed`, its parent committed already; closes the feed."""
        try:
            self.run([layer], lambda _layer: feed, jobs=1)
        finally:
            feed.close()

    def _advance(self, n: int) -> None:
        if self._progress is None:
            return
        with self._progress_lock:
            self._done += n
            self._progress(self._done, self.total)

    def commit(self, plans: list[ImagePlan], tag: tuple[str, str] | None) -> list[Image]:
        with self.store.transaction() as db:
            self.record_layers(db)
            for plan in plans:
                image = Image(
                    id=plan.image_id,
                    config=plan.config,
                    created=plan.created,
                    architecture=plan.architecture,
                    os=plan.os,
                    size=sum(self.layers[layer.chain_id].size for layer in plan.layers),
                    layers=tuple(layer.chain_id for layer in plan.layers),
                )
                self.store.insert_image(db, image)
                for name, t in [*plan.tags, *([tag] if tag else [])]:
                    self.store.set_tag(db, name, t, plan.image_id, force=True)
        return [self.store.get(plan.image_id) for plan in plans]


def load(
    driver: Driver,
    store: ImageStore,
    archive: ArchiveSource,
    *,
    tag: str | None = None,
    platform: str | Platform | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
) -> list[Image]:
    """Load a ``docker save`` archive or an OCI image layout (a tar, plain, gzip or zstd,
    as a path or a binary stream; or an image layout directory) into `driver` and
    `store`; return the loaded images.

    Where the archive's index.json gives platforms (a multi-platform export), each image
    is loaded for `platform` (``os/arch[/variant][:os.version]`` or a
    :class:`~winlayer._platform.Platform`), by default the host's: Windows, its
    architecture, and the ``os.version`` its build runs, as containerd chooses; without a
    host build (not on Windows) the newest version, logged. A `platform` given also
    leaves out the images of a docker save archive whose configs name another. The
    platform an image was loaded for is :func:`~winlayer._platform.config_platform` of
    its config.

    `tag` (``name[:tag]``) tags the image too (the archive must hold one image). Raises
    :class:`InvalidArchive` (also for an image that is not a Windows one),
    :class:`~winlayer.errors.PlatformNotFound`, :class:`~winlayer.errors.InvalidPlatform`,
    :class:`~winlayer.InvalidLayer` or :class:`~winlayer.DigestMismatch`; on any failure
    the store is left as it was.

    Up to `jobs` layers are imported at a time (default: the number of cores, at most
    the number of layers), each while its parent is still being written (see
    :meth:`~winlayer.driver.Driver.apply_diffs`); ``jobs=1`` imports one after another.
    """
    extra = parse_reference(tag) if tag is not None else None
    wanted = parse_platform(platform) if isinstance(platform, str) else platform
    loader = Loader(driver, store, progress)
    if isinstance(archive, (str, os.PathLike)) and os.path.isdir(archive):
        folder = archive
        return _commit_or_undo(
            loader,
            extra,
            lambda: _load_in_place(loader, DirectoryArchive(folder), extra, wanted, jobs),
        )
    staging = driver.new_staging_dir()
    f, compression, seekable = open_outer(archive)
    owned = isinstance(archive, (str, os.PathLike))
    try:
        if compression == "none" and seekable:
            source = archive if owned else f
            return _commit_or_undo(
                loader,
                extra,
                lambda: _load_in_place(loader, SeekableArchive(source), extra, wanted, jobs),
            )
        return _commit_or_undo(
            loader,
            extra,
            lambda: _load_streamed(loader, f, compression, seekable, staging, extra, wanted, jobs),
        )
    finally:
        if owned:
            f.close()
        elif f is not archive and isinstance(f, io.BufferedReader):
            f.detach()  # our read buffer around the caller's stream; theirs stays open
        shutil.rmtree(staging, ignore_errors=True)


def _commit_or_undo(
    loader: Loader, tag: tuple[str, str] | None, plan_and_import: Callable[[], list[ImagePlan]]
) -> list[Image]:
    """Imports the layers (`plan_and_import`), then records the images; on any failure
    removes the layers this load created."""
    try:
        return loader.commit(plan_and_import(), tag)
    except BaseException:
        loader.rollback()
        raise


def _check_single(plans: list[ImagePlan], tag: tuple[str, str] | None) -> None:
    if tag is not None and len(plans) != 1:
        raise InvalidArgument(f"the archive holds {len(plans)} images; a tag applies to one only")


def _load_in_place(
    loader: Loader,
    archive: SeekableArchive | DirectoryArchive,
    tag: tuple[str, str] | None,
    platform: Platform | None,
    jobs: int | None,
) -> list[ImagePlan]:
    """Loads from an archive whose blobs are read where they are (a plain tar, a
    directory)."""
    try:
        plans = plan_images(archive, platform)
        _check_single(plans, tag)
        loader.run(
            loader.pending(plans),
            lambda layer: loader.feed(
                layer,
                archive.opener(layer.blob),
                in_place=archive.in_place(layer.blob),
            ),
            jobs=jobs,
        )
        return plans
    finally:
        archive.close()


def _load_streamed(
    loader: Loader,
    f: IO[bytes],
    compression: Compression,
    seekable: bool,
    staging: Path,
    tag: tuple[str, str] | None,
    platform: Platform | None,
    jobs: int | None,
) -> list[ImagePlan]:
    """Loads from a compressed archive or a pipe. A pipe is read once: its members are
    held, then imported `jobs` at a time. A compressed file is read in passes, and its
    layers are imported in archive order as the stream reaches them, one at a time."""
    archive = StreamedArchive()
    spilled: dict[str, Path] = {}
    limit = loader.driver.max_layer_size
    if not seekable:
        # A pipe is read once: small members are kept in memory, the rest in staging
        # files; then the layers are imported from those.
        for info, data in stream_tar(f, compression, limit):
            cached = archive.note(info, data)
            if data is not None and not cached:
                name = clean_name(info.name)
                path = _spill(data, staging)
                if name in spilled:  # a repeat: the first copy stays, if this is the same
                    if not filecmp.cmp(spilled[name], path, shallow=False):
                        raise two_copies(name)
                    path.unlink()
                else:
                    spilled[name] = path
        plans = plan_images(archive, platform)
        _check_single(plans, tag)
        loader.run(
            loader.pending(plans),
            lambda layer: loader.feed(layer, _held(archive, spilled, layer.blob.name)),
            jobs=jobs,
        )
        return plans
    # A first pass for the metadata, so that the second can stream layers straight in.
    start = f.tell()
    for info, data in stream_tar(f, compression, limit):
        archive.note(info, data)
    if uncompared := archive.uncompared():  # large files named twice: one more pass
        f.seek(start)
        _compare_copies(stream_tar(f, compression, limit), uncompared)
    plans = plan_images(archive, platform)
    _check_single(plans, tag)
    f.seek(start)
    todo = loader.pending(plans)
    uses = Counter(layer.blob.name for layer in todo)
    position = 0  # the next layer of `todo` to import
    seen: set[str] = set()  # only the first copy of a repeated member is used
    for info, data in stream_tar(f, compression, limit):
        name = clean_name(info.name)
        if data is None or name not in uses or name in seen:
            continue
        seen.add(name)
        if todo[position].blob.name == name and uses[name] == 1:
            feed = loader.feed(todo[position], _borrow(data))
            loader.load_layer(todo[position], feed)
            position += 1
        else:  # needed later (or more than once): hold it until its turn
            spilled[name] = _spill(data, staging)
        while position < len(todo) and todo[position].blob.name in spilled:
            layer = todo[position]
            loader.load_layer(layer, loader.feed(layer, _held(archive, spilled, layer.blob.name)))
            position += 1
    if position < len(todo):
        raise InvalidArchive("the archive changed while it was read", todo[position].blob.name)
    return plans


def _compare_copies(
    members: Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]], names: set[str]
) -> None:
    """Refuse the archive if the copies of a file named in `names` differ."""
    digests: dict[str, str] = {}
    for info, data in members:
        name = clean_name(info.name)
        if data is not None and name in names:
            digest = digest_of(data)[0]
            if digests.setdefault(name, digest) != digest:
                raise two_copies(name)


def _held(archive: StreamedArchive, spilled: dict[str, Path], name: str) -> BlobOpener:
    """An opener of a blob held in a staging file or in memory."""
    if name in spilled:
        path = spilled[name]
        return lambda: open(path, "rb")
    data = archive.cache[name]
    return lambda: io.BytesIO(data)


def _borrow(f: IO[bytes]) -> BlobOpener:
    """An opener of a member of a streamed tar, for a feed that must not close it."""
    return lambda: io.BufferedReader(_Borrowed(f), CHUNK)


class _Borrowed(io.RawIOBase):
    """A member stream of a streamed tar, handed to a feed that must not close it."""

    def __init__(self, f: IO[bytes]) -> None:
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._f.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def _spill(data: IO[bytes], staging: Path) -> Path:
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / secrets.token_hex(8)
    with open(path, "wb") as out:
        shutil.copyfileobj(data, out, CHUNK)
    return path
