"""Making images: a sandbox on an image (``create --image``), a sandbox's changes as a new
image (``commit``, as ``docker commit``), layer tars and folders added to an image
(``append``, as ``crane append``).

A new image's config is its base image's config (every field kept: ``os``,
``os.version``, ``os.features``, ``architecture``, ``config``, ...) with each new layer's
diffID appended to ``rootfs.diff_ids``, one ``history`` entry per new layer and the new
``created`` time. It is written deterministically: sorted keys, compact, UTF-8 with Go's
HTML-safe escapes (what Go's ``json.Marshal`` writes for a map), so the image id, the
SHA-256 of those bytes, depends only on the content. Times are RFC 3339 UTC as Go writes
them (``2024-01-02T03:04:05Z``, fractions without trailing zeros).

New layers get the chain ID's hex as their driver id, as ``load`` gives them, so that a
saved and loaded-again image shares its layers. Everything is recorded in one store
transaction at the end; on failure the layers this operation made are removed
(:class:`~winlayer._layerrecord.LayerRecorder`) and its staging files deleted.

Host base images (registered by ``images restore``) have no layer tars and no diffID: an
image built on one could never be saved, pushed or loaded elsewhere, so ``commit`` and
``append`` refuse them (a sandbox on one can still be created and used).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._archive_plan import chain_ids, json_field
from ._common import CHUNK, Progress, go_json
from ._layerrecord import LayerRecorder
from ._native import _hcs
from ._pipeline import HashingReader, Readable, TarFeed, plain_tar
from .errors import BuildError, InvalidArgument, InvalidLayer, StoreCorrupt
from .imagestore import Image, ImageStore, StoredLayer, parse_reference
from .pack import pack_directory

if TYPE_CHECKING:
    from .driver import Driver


# -- the new config -------------------------------------------------------------------


def rfc3339(when: datetime) -> str:
    """`when` in UTC as Go's ``time.RFC3339Nano`` writes it: ``2024-01-02T03:04:05Z``,
    a fraction of a second without trailing zeros. A naive datetime is taken as UTC."""
    utc = (
        when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    )
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def epoch_time(source_date_epoch: int) -> datetime:
    """The time of a ``SOURCE_DATE_EPOCH`` (whole seconds since 1970, not negative)."""
    if isinstance(source_date_epoch, bool) or not isinstance(source_date_epoch, int):
        raise TypeError(f"source_date_epoch must be an int, not {source_date_epoch!r}")
    if source_date_epoch < 0:
        raise InvalidArgument(f"source_date_epoch must not be negative: {source_date_epoch}")
    try:
        return datetime.fromtimestamp(source_date_epoch, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise InvalidArgument(f"source_date_epoch is out of range: {source_date_epoch}") from None


def _key(doc: dict[str, Any], name: str) -> str:
    """The key `doc` spells `name` with (Go's case-insensitive match), else `name`."""
    if name in doc:
        return name
    return next((k for k in doc if k.lower() == name.lower()), name)


def derive_config(
    base: bytes,
    diff_ids: Sequence[str],
    history: Sequence[dict[str, str]],
    created: str,
    *,
    author: str | None = None,
) -> bytes:
    """The config of an image made of `base`'s config plus layers `diff_ids` (each with
    its `history` entry), created at `created`; see the module's description. `author`
    (``commit``) replaces the base's top-level ``author``."""
    doc = json.loads(base)
    if not isinstance(doc, dict) or not isinstance(json_field(doc, "rootfs"), dict):
        raise BuildError("the base image's config has no rootfs")
    rootfs = doc[_key(doc, "rootfs")]
    stack = rootfs.setdefault(_key(rootfs, "diff_ids"), [])
    records = doc.setdefault(_key(doc, "history"), [])
    if not isinstance(stack, list) or not isinstance(records, list):
        raise BuildError(
            "the base image's config has a rootfs.diff_ids or history that is not a list"
        )
    stack.extend(diff_ids)
    records.extend(history)
    doc[_key(doc, "created")] = created
    if author is not None:
        doc[_key(doc, "author")] = author
    return go_json(doc, sort_keys=True)


def _history(
    created: str, created_by: str, comment: str | None, author: str | None
) -> dict[str, str]:
    entry = {"created": created, "created_by": created_by}
    if comment:
        entry["comment"] = comment
    if author:
        entry["author"] = author
    return entry


# -- the base image -------------------------------------------------------------------


@dataclass(frozen=True)
class _Base:
    image: Image
    layers: list[StoredLayer]  # bottom first


def _base(driver: Driver, store: ImageStore, ref: str) -> _Base:
    """The image to build on, with its layers, all present."""
    image = store.get(ref)
    if not image.layers:
        raise BuildError(
            f"image {ref!r} ({image.id[:12]}) is a host base image: it has no layer tars, so an "
            "image built on it could not be saved or loaded elsewhere; build on an image "
            "loaded from an archive (winlayer load)"
        )
    layers = []
    for chain_id in image.layers:
        stored = store.layer(chain_id)
        if stored is None or not driver.exists(stored.layer_id):
            raise BuildError(f"image {ref!r}: its layer {chain_id} is missing from the store")
        layers.append(stored)
    return _Base(image, layers)


def top_layer(store: ImageStore, image: Image) -> str:
    """The driver layer id a sandbox of `image` sits on: its top layer, or for a host
    base image the base layer itself (named by the image id)."""
    if not image.layers:
        return image.id
    stored = store.layer(image.layers[-1])
    if stored is None:
        raise BuildError(
            f"image {image.id[:12]}: its layer {image.layers[-1]} is missing from the store"
        )
    return stored.layer_id


def create_sandbox(
    driver: Driver,
    store: ImageStore,
    sandbox_id: str,
    ref: str,
    *,
    size: int | str | None = None,
) -> Image:
    """Create read/write layer `sandbox_id` on image `ref`'s top layer (a host base
    image's base layer) and record that it was made from that image, for
    :func:`commit`; return the image. `size` limits the sandbox (bytes or e.g. ``20GB``)."""
    image = store.get(ref)
    parent = top_layer(store, image)
    driver.create(sandbox_id, parent, read_write=True, size=size)
    try:
        with store.transaction() as db:
            store.record_sandbox(db, sandbox_id, image.id)
    except BaseException:
        driver.remove(sandbox_id)
        raise
    return image


def _sandbox_base(
    driver: Driver, store: ImageStore, sandbox_id: str, from_ref: str | None
) -> _Base:
    """The image sandbox `sandbox_id` builds on: `from_ref`, else the one recorded by
    :func:`create_sandbox`, else the one image whose top layer is the sandbox's parent."""
    info = driver.info(sandbox_id)
    if not info.read_write:
        raise BuildError(f"layer {sandbox_id!r} is not a sandbox (a read/write layer)")
    if from_ref is not None:
        base = _base(driver, store, from_ref)
        if base.layers[-1].layer_id != info.parent:
            raise BuildError(
                f"sandbox {sandbox_id!r} is not on image {from_ref!r}: its parent is layer "
                f"{info.parent}, the image's top layer is {base.layers[-1].layer_id}"
            )
        return base
    recorded = store.sandbox_image(sandbox_id)
    if recorded is not None and store.exists(recorded):
        image = store.get(recorded)
        if _top_folder(driver, store, image) == info.parent:
            return _base(driver, store, recorded)
    # An older record (the image is gone, or another sandbox had this id) is not used.
    candidates = [i for i in store.images() if _top_folder(driver, store, i) == info.parent]
    if len(candidates) != 1:
        found = "no image has" if not candidates else f"{len(candidates)} images have"
        raise BuildError(
            f"cannot tell which image sandbox {sandbox_id!r} was made from ({found} its "
            f"parent layer {info.parent} on top); pass --from IMAGE (from_ref)"
        )
    return _base(driver, store, candidates[0].id)


def _top_folder(driver: Driver, store: ImageStore, image: Image) -> str | None:
    """The folder name of the layer a sandbox of `image` sits on, as the sandbox's
    ``info().parent`` names it (for a host base image: the base image's folder), or None
    if that layer is gone."""
    try:
        return Path(driver.metadata(top_layer(store, image))["dir"]).name
    except (BuildError, StoreCorrupt):
        return None


# -- making the layers ----------------------------------------------------------------


class _Build(LayerRecorder):
    """The new layers of one commit or append, on a base image, staged in one folder."""

    def __init__(self, driver: Driver, store: ImageStore, base: _Base, staging: Path) -> None:
        super().__init__(driver, store)
        self.staging = staging
        self.diff_ids = [layer.diff_id for layer in base.layers]
        self.top: str = base.image.layers[-1]
        for layer in base.layers:
            self.layers[layer.chain_id] = layer
        self.new: list[str] = []  # chain IDs, bottom first
        self.new_diff_ids: list[str] = []

    def add(
        self,
        path: Path,
        diff_id: str,
        *,
        name: str,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Add layer tar `path` (plain, gzip or zstd) with `diff_id` on top."""
        chain_id = chain_ids([*self.diff_ids, diff_id])[-1]
        if chain_id not in self.layers and self.known(chain_id) is None:
            feed = TarFeed(
                functools.partial(_open, path),
                name=name,
                max_uncompressed=self.driver.max_layer_size,
                on_bytes=on_bytes,
            )
            self.import_layer(chain_id, diff_id, self.top, feed)
        self.diff_ids.append(diff_id)
        self.new_diff_ids.append(diff_id)
        self.new.append(chain_id)
        self.top = chain_id

    def record(self, base: _Base, config: bytes, created: str, tag: tuple[str, str]) -> Image:
        doc = json.loads(config)
        image_id = hashlib.sha256(config).hexdigest()
        stack = (*base.image.layers, *self.new)
        with self.store.transaction() as db:
            self.record_layers(db)
            image = Image(
                id=image_id,
                config=config,
                created=created,
                architecture=str(json_field(doc, "architecture") or ""),
                os=str(json_field(doc, "os") or ""),
                size=sum(self.layers[c].size for c in stack),
                layers=stack,
            )
            self.store.insert_image(db, image)
            self.store.set_tag(db, *tag, image_id, force=True)
        return self.store.get(image_id)


def _open(path: Path) -> AbstractContextManager[Readable]:
    return open(path, "rb")


@contextlib.contextmanager
def _building(driver: Driver, store: ImageStore, base: _Base) -> Iterator[_Build]:
    """A build whose layers are removed again, and whose staging folder is deleted,
    unless it completes."""
    staging = driver.new_staging_dir()
    staging.mkdir(parents=True)
    build = _Build(driver, store, base, staging)
    try:
        yield build
    except BaseException:
        build.rollback()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _diff_id_of_tar(path: Path, limit: int) -> str:
    """The diffID of layer tar `path` (plain, gzip or zstd), read once before importing."""
    try:
        with plain_tar(path, max_uncompressed=limit) as tar:
            return str(_hcs.tar_digest(tar))
    except InvalidLayer as exc:
        raise InvalidLayer(f"{path}: {exc.reason}", exc.entry, exc.offset) from None


def _created(created: datetime | None, source_date_epoch: int | None) -> str:
    if created is not None and source_date_epoch is not None:
        raise InvalidArgument("give created or source_date_epoch, not both")
    if source_date_epoch is not None:
        return rfc3339(epoch_time(source_date_epoch))
    return rfc3339(created if created is not None else datetime.now(timezone.utc))


# -- commit and append ----------------------------------------------------------------


def commit(
    driver: Driver,
    store: ImageStore,
    sandbox_id: str,
    ref: str,
    *,
    from_ref: str | None = None,
    message: str | None = None,
    author: str | None = None,
    created: datetime | None = None,
    source_date_epoch: int | None = None,
) -> Image:
    """Make sandbox `sandbox_id`'s changes a new image tagged `ref` (``docker commit``);
    return it.

    The sandbox's diff (its canonical export) becomes one layer on the image the sandbox
    was made from: `from_ref`, else the image :func:`create_sandbox` recorded, else the
    one image whose top layer is the sandbox's parent (several or none:
    :class:`~winlayer.BuildError`). As Docker does, a sandbox without changes still gives
    a layer. The history entry says ``winlayer commit`` with `message` as its comment and
    `author`, which also becomes the config's ``author``. `created` (default: now) or
    `source_date_epoch` sets the time. The sandbox is left as it is.
    """
    tag = parse_reference(ref)
    when = _created(created, source_date_epoch)
    base = _sandbox_base(driver, store, sandbox_id, from_ref)
    with _building(driver, store, base) as build:
        tar = build.staging / "sandbox.tar"
        with driver.diff(sandbox_id) as stream, open(tar, "wb") as out:
            hashed = HashingReader(stream)
            shutil.copyfileobj(hashed, out, CHUNK)
        build.add(tar, str(hashed.digest), name=f"sandbox {sandbox_id}")
        history = [_history(when, "winlayer commit", message, author)]
        config = derive_config(base.image.config, build.new_diff_ids, history, when, author=author)
        return build.record(base, config, when, tag)


def append(
    driver: Driver,
    store: ImageStore,
    base_ref: str,
    sources: Sequence[str | os.PathLike[str]],
    *,
    tag: str,
    created: datetime | None = None,
    source_date_epoch: int | None = None,
    progress: Progress | None = None,
) -> Image:
    """Add layers to image `base_ref` (``crane append``) and tag the result `tag`;
    return the new image.

    Each source is a layer tar (plain, gzip or zstd; checked by the import as any layer)
    or a folder, packed with :func:`~winlayer.pack.pack_directory`; each becomes one
    layer, in order, with a history entry ``winlayer append <name>`` (its file or folder
    name, not its path, so that the image does not depend on where the inputs are).
    `created` (default: now) or `source_date_epoch` sets the time; with
    `source_date_epoch` the folders' later file times are clamped to it, so the same base,
    inputs and epoch give the same image id every time. `progress(done, total)` gets the
    bytes of layer tars read for importing.
    """
    name_tag = parse_reference(tag)
    if not sources:
        raise InvalidArgument("append needs at least one layer tar or folder")
    paths = [Path(s) for s in sources]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "no such layer tar or folder", str(path))
        if not (path.is_dir() or path.is_file()):
            raise BuildError(f"{path} is neither a layer tar nor a folder")
    when = _created(created, source_date_epoch)
    base = _base(driver, store, base_ref)
    with _building(driver, store, base) as build:
        staged: list[tuple[Path, str, str]] = []  # tar, diffID, name
        for i, path in enumerate(paths):
            label = Path(os.path.abspath(path)).name or str(path)  # links not followed
            if path.is_dir():
                tar = build.staging / f"{i}.tar"
                diff_id = pack_directory(path, tar, source_date_epoch=source_date_epoch)
                staged.append((tar, diff_id, label))
            else:
                staged.append((path, _diff_id_of_tar(path, driver.max_layer_size), label))
        total = sum(tar.stat().st_size for tar, _, _ in staged)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        history = []
        for (tar, diff_id, label), path in zip(staged, paths, strict=True):
            build.add(tar, diff_id, name=str(path), on_bytes=advance)
            history.append(_history(when, f"winlayer append {label}", None, None))
        config = derive_config(base.image.config, build.new_diff_ids, history, when)
        return build.record(base, config, when, name_tag)
