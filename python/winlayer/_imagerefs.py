"""Who uses what among images, layers and sandboxes, and what is built on that: image
removal (``images rm``, Docker's ``rmi``), ``prune``, ``df``, ``images inspect`` and
``images history``.

References
    An image is needed by its tags, by its child images and by the sandboxes recorded as
    created from it (rows of the store's ``sandboxes`` table whose sandbox still exists;
    a mounted sandbox counts as Docker's running container, an unmounted one as a
    stopped one). Image B is a *child* of image A when A's layer stack (chain IDs) is a
    prefix of B's, A's config ``history`` is a prefix of B's, and B adds at least one
    layer or history entry: B was built on A. Docker records the parent of a local build
    instead; loaded images carry no such record, and this is what building on an image
    leaves in B. A host base image (no recorded layers) is nobody's parent. A layer is
    needed by the images whose stack holds it, by the driver layers stacked on it (other
    layers, sandboxes), and while it is mounted.

Removal (one image, Docker's rules)
    By ``name:tag``: the tag goes (refused without `force` when it is the image's only
    tag and a sandbox uses the image); if no tag is left the image goes too, quietly
    kept if something still needs it. By id: an image with one tag loses it; with
    several, `force` is needed. The image is then refused while it has child images or
    a mounted sandbox (cannot be forced), or, without `force`, while tags or unmounted
    sandboxes remain. Then (unless ``prune=False``, ``--no-prune``) its ancestors that
    are left untagged and unneeded go too. Tags and images change in one store
    transaction. Layers no remaining image uses are then removed through the driver,
    newest first; a layer the driver refuses (a sandbox or another layer is stacked on
    it, it is mounted) stays, and is not an error.

Crash safety
    A layer's record (chain ID -> driver layer) is dropped only after its driver layer
    is gone. If the process dies between the image transaction and the layer removals,
    the store keeps records that no image uses: :func:`prune` and ``winlayer gc``
    (:func:`remove_unused_layers`) remove exactly those driver layers (and a record whose
    driver layer is already gone), so they only ever remove layers the image store
    recorded, never one imported by hand.

Host base images
    Removing one drops its record, its tags and its alias (the ``<home>/<id>`` folder
    naming the host's layer); the host's base-image folder is never touched, and
    ``images restore`` registers the image again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._archive_plan import json_field
from .driver import Driver
from .errors import ImageConflict, LayerInUse, LayerNotFound
from .imagestore import Image, ImageStore, StoredLayer, parse_reference

log = logging.getLogger(__name__)

HOST_BASE_NOTE = "host base image: its folder stays with the host"


@dataclass(frozen=True)
class Removed:
    """One line of ``images rm`` or ``prune``, as Docker prints them: ``Untagged:
    name:tag`` or ``Deleted: sha256:<hex>`` (an image id, or a layer's chain ID).
    `note` says what stayed behind (a host base image's folder)."""

    action: str  # "Untagged" or "Deleted"
    ref: str
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        """``{"Untagged": ref}`` or ``{"Deleted": ref}`` (Docker's API), plus ``Note``."""
        return {self.action: self.ref, **({"Note": self.note} if self.note else {})}

    def __str__(self) -> str:
        return f"{self.action}: {self.ref}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune` removed (with ``dry_run``: would remove)."""

    images: list[Removed]  # Untagged / Deleted lines of the images
    layers: list[StoredLayer]  # newest first
    dry_run: bool

    @property
    def size(self) -> int:
        """Bytes of file data in the removed layers."""
        return sum(layer.size for layer in self.layers)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (the CLI's ``--json`` output)."""
        return {
            "dry_run": self.dry_run,
            "images": [record.as_dict() for record in self.images],
            "layers": [
                {"chain_id": layer.chain_id, "layer_id": layer.layer_id, "size": layer.size}
                for layer in self.layers
            ],
            "size": self.size,
        }


@dataclass(frozen=True)
class Usage:
    """One row of :func:`disk_usage` (Docker's ``system df`` columns)."""

    total: int
    active: int
    size: int  # bytes
    reclaimable: int  # bytes

    def as_dict(self) -> dict[str, int]:
        """The row as a dict of its fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DiskUsage:
    """The store-wide summary of ``winlayer df``.

    - `images`: every image; active = used by a sandbox; size = file bytes of the
      distinct layers the images use (a shared layer counts once); reclaimable = those
      no active image uses (what ``prune -a`` frees).
    - `layers`: the read-only driver layers; active = used by an image or stacked on by
      another layer; size = their file bytes; reclaimable = layers no image uses that
      the image store recorded and nothing needs (what ``prune`` frees beyond dangling
      images).
    - `sandboxes`: the read/write layers; active = mounted; size = bytes of file data
      they add or modify; reclaimable = the unmounted ones' (``winlayer rm`` frees them).
    """

    images: Usage
    layers: Usage
    sandboxes: Usage

    def as_dict(self) -> dict[str, dict[str, int]]:
        """The three rows as dicts, by name (the CLI's ``--json`` output)."""
        return {
            "images": self.images.as_dict(),
            "layers": self.layers.as_dict(),
            "sandboxes": self.sandboxes.as_dict(),
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One entry of an image's config ``history``, newest first in
    :func:`image_history`. `layer` is the chain ID of the layer it made (None for an
    ``empty_layer`` entry), `size` that layer's bytes of file data; `image` is the id of
    the image whose history ends at this entry (the image itself, or an image it was
    built on), else None (Docker's ``<missing>``)."""

    image: str | None
    created: str
    created_by: str
    comment: str
    empty_layer: bool
    layer: str | None
    size: int

    def as_dict(self) -> dict[str, Any]:
        """The entry as a dict of its fields."""
        return dataclasses.asdict(self)


# -- the reference model ---------------------------------------------------------------


def _history(image: Image) -> list[Any]:
    """The config's ``history`` list ([] when there is none or it is not a list)."""
    config = _config(image)
    history = json_field(config, "history")
    return history if isinstance(history, list) else []


def _config(image: Image) -> dict[str, Any]:
    try:
        config = json.loads(image.config)
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


class _References:
    """The images and who needs them, read once (inside the store transaction of a
    removal, so that it stays true until the commit). Removals update the model and,
    given a connection, the store; without one (a dry run) only the model."""

    def __init__(
        self, store: ImageStore, driver: Driver | None = None, mounted: set[str] | None = None
    ) -> None:
        self.store = store
        self.images = {image.id: image for image in store.images()}  # newest first
        self.histories = {image_id: _history(i) for image_id, i in self.images.items()}
        self.sandboxes: dict[str, list[str]] = {}  # image id -> its sandboxes
        #: Mounted sandboxes; read before the transaction by :func:`_mounted_sandboxes`
        #: (a mount count takes the layer's lock, which is taken before the store's).
        self.mounted = mounted or set()
        self.deleted: list[Image] = []
        if driver is None:
            return
        for layer_id, image_id in sorted(store.sandboxes().items()):
            if driver.exists(layer_id):
                self.sandboxes.setdefault(image_id, []).append(layer_id)

    def builds_on(self, child_id: str, parent_id: str) -> bool:
        """Whether image `child_id` is a child of `parent_id` (see the module)."""
        child, parent = self.images[child_id], self.images[parent_id]
        if child_id == parent_id or not parent.layers:
            return False
        ch, ph = self.histories[child_id], self.histories[parent_id]
        return (
            child.layers[: len(parent.layers)] == parent.layers
            and ch[: len(ph)] == ph
            and (len(child.layers), len(ch)) != (len(parent.layers), len(ph))
        )

    def children(self, image_id: str) -> list[str]:
        return [other for other in self.images if self.builds_on(other, image_id)]

    def ancestors(self, image_id: str) -> list[str]:
        """The images `image_id` was built on, nearest first."""
        found = [other for other in self.images if self.builds_on(image_id, other)]
        return sorted(
            found,
            key=lambda i: (len(self.images[i].layers), len(self.histories[i])),
            reverse=True,
        )

    def dangling(self, image_id: str) -> bool:
        return not self.images[image_id].tags and not self.children(image_id)

    def conflict(
        self, image_id: str, *, force: bool, tags: bool = True
    ) -> tuple[ImageConflict, bool] | None:
        """What keeps the image (Docker's order: child images and mounted sandboxes,
        which force does not override, then tags and other sandboxes), and whether a
        sandbox uses it; None if nothing does."""
        if self.children(image_id):
            return ImageConflict(
                image_id, "image has dependent child images", forceable=False
            ), False
        users = self.sandboxes.get(image_id, [])
        mounted = [u for u in users if u in self.mounted]
        if mounted:
            reason = f"image is being used by mounted sandbox {mounted[0]}"
            return ImageConflict(image_id, reason, forceable=False), True
        if force:
            return None
        if tags and self.images[image_id].tags:
            reason = "image is referenced by several tags: " + ", ".join(self.images[image_id].tags)
            return ImageConflict(image_id, reason, forceable=True), False
        if users:
            reason = f"image is being used by sandbox {users[0]}"
            return ImageConflict(image_id, reason, forceable=True), True
        return None

    # -- changes ----------------------------------------------------------------------

    def remove(
        self, db: sqlite3.Connection | None, ref: str, *, force: bool, prune: bool
    ) -> list[Removed]:
        """Docker's ``rmi`` of one reference (see the module)."""
        image_id, tag = self.store.lookup(ref)
        records: list[Removed] = []
        image = self.images[image_id]
        quiet = False
        if tag is not None:
            users = self.sandboxes.get(image_id, [])
            if not force and len(image.tags) == 1 and users:
                reason = (
                    f"sandbox {users[0]} is using it, and {tag} is its last tag "
                    "(the image would be left dangling)"
                )
                raise ImageConflict(image_id, reason, forceable=True)
            self._untag(db, image_id, tag, records)
            if self.images[image_id].tags:
                return records
            quiet = True
        elif len(image.tags) == 1:
            found = self.conflict(image_id, force=force, tags=False)
            if found:
                raise found[0]
            self._untag(db, image_id, image.tags[0], records)
        self._delete(db, image_id, force=force, prune=prune, quiet=quiet, records=records)
        return records

    def _delete(
        self,
        db: sqlite3.Connection | None,
        image_id: str,
        *,
        force: bool,
        prune: bool,
        quiet: bool,
        records: list[Removed],
    ) -> None:
        found = self.conflict(image_id, force=force)
        if found:
            conflict, used = found
            if quiet and (not self.dangling(image_id) or used):
                return  # kept: something needs it, and nobody asked for it by id
            raise conflict
        ancestors = self.ancestors(image_id) if prune else []
        self.drop(db, image_id, records)
        for parent in ancestors:  # nearest first: each may free the next
            self._delete(db, parent, force=False, prune=False, quiet=True, records=records)

    def drop(self, db: sqlite3.Connection | None, image_id: str, records: list[Removed]) -> None:
        """Untag and delete an image, no questions asked."""
        for tag in self.images[image_id].tags:
            self._untag(db, image_id, tag, records)
        if db is not None:
            self.store.delete_image(db, image_id)
        image = self.images.pop(image_id)
        self.deleted.append(image)
        records.append(
            Removed("Deleted", f"sha256:{image_id}", "" if image.layers else HOST_BASE_NOTE)
        )

    def _untag(
        self, db: sqlite3.Connection | None, image_id: str, tag: str, records: list[Removed]
    ) -> None:
        if db is not None:
            self.store.remove_tag(db, tag)
        image = self.images[image_id]
        left = tuple(t for t in image.tags if t != tag)
        self.images[image_id] = dataclasses.replace(image, tags=left)
        records.append(Removed("Untagged", tag))

    def prunable(self, *, every: bool) -> list[str]:
        """The images prune removes, children before parents: untagged ones (`every`:
        all) that no sandbox uses and whose children all go too."""
        kids = {image_id: set(self.children(image_id)) for image_id in self.images}
        doomed: dict[str, None] = {}  # in the order found
        changed = True
        while changed:
            changed = False
            for image_id, image in self.images.items():
                if image_id in doomed or (image.tags and not every):
                    continue
                if not self.sandboxes.get(image_id) and kids[image_id].issubset(doomed):
                    doomed[image_id] = None
                    changed = True
        return list(doomed)

    def unused_layers(self, candidates: Iterable[str]) -> list[str]:
        """The chain IDs among `candidates` that no remaining image uses."""
        used = {chain_id for image in self.images.values() for chain_id in image.layers}
        return sorted(set(candidates) - used)


def _mounted_sandboxes(driver: Driver, store: ImageStore) -> set[str]:
    """The recorded sandboxes that are mounted now."""
    mounted = set()
    for layer_id in store.sandboxes():
        with contextlib.suppress(LayerNotFound):  # removed meanwhile: not mounted
            if driver.exists(layer_id) and driver.mount_count(layer_id):
                mounted.add(layer_id)
    return mounted


# -- layers ----------------------------------------------------------------------------


def _removable_layers(
    driver: Driver, store: ImageStore, chain_ids: Iterable[str]
) -> list[StoredLayer]:
    """The recorded layers among `chain_ids` that the driver would let go, newest first:
    not mounted, and no driver layer outside the set is stacked on them."""
    records = {layer.chain_id: layer for layer in store.layers()}
    doomed = {records[c].layer_id: records[c] for c in chain_ids if c in records}
    needed: set[str] = set()
    for info in driver.layers():
        if info.id in doomed and not driver.mount_count(info.id):
            continue
        needed.add(info.id)
        needed.update(os.path.basename(p) for p in driver.parents(info.id))

    def depth(layer: StoredLayer) -> int:
        n, parent = 0, layer.parent
        while parent is not None and parent in records and n <= len(records):
            n, parent = n + 1, records[parent].parent
        return n

    removable = [layer for layer_id, layer in doomed.items() if layer_id not in needed]
    return sorted(removable, key=lambda layer: (-depth(layer), layer.chain_id))


def _remove_layers(
    driver: Driver, store: ImageStore, layers: list[StoredLayer]
) -> list[StoredLayer]:
    """Remove driver layers, then drop their records; return the ones removed. A layer
    the driver refuses (something was stacked on it or mounted it meanwhile, or an image
    recorded it again) stays, record included."""
    removed = []
    for layer in layers:
        try:
            driver.remove(layer.layer_id)
        except LayerInUse as exc:
            log.info("keeping layer %s: %s", layer.layer_id, exc)
            continue
        except LayerNotFound:
            pass  # gone already (a crash after the driver removal): the record goes now
        with store.transaction() as db:
            if store.drop_layer(db, layer.chain_id):
                removed.append(layer)
    return removed


def _remove_aliases(driver: Driver, images: list[Image]) -> None:
    """Remove the alias of each deleted host base image (never the host's folder)."""
    for image in images:
        if image.layers:
            continue
        with contextlib.suppress(LayerNotFound):
            driver.remove(image.id)


# -- the operations --------------------------------------------------------------------


def remove_image(
    driver: Driver, store: ImageStore, ref: str, *, force: bool = False, prune: bool = True
) -> list[Removed]:
    """Remove one image reference as ``docker rmi`` does (see the module); return the
    ``Untagged`` / ``Deleted`` lines: tags, images, then the layers removed. Raises
    :class:`~winlayer.ImageConflict` (nothing changed) or
    :class:`~winlayer.images.ImageNotFound`."""
    mounted = _mounted_sandboxes(driver, store)
    with store.transaction() as db:
        refs = _References(store, driver, mounted)
        records = refs.remove(db, ref, force=force, prune=prune)
    candidates = refs.unused_layers(c for image in refs.deleted for c in image.layers)
    _remove_aliases(driver, refs.deleted)
    layers = _remove_layers(driver, store, _removable_layers(driver, store, candidates))
    return records + [Removed("Deleted", layer.chain_id) for layer in layers]


def prune(
    driver: Driver, store: ImageStore, *, every: bool = False, dry_run: bool = False
) -> PruneReport:
    """Remove dangling images (untagged, no child, no sandbox; `every`: every image no
    sandbox uses) and every recorded layer no image uses and the driver would let go;
    `dry_run` changes nothing and reports what would go."""
    mounted = _mounted_sandboxes(driver, store)
    records: list[Removed] = []
    with contextlib.ExitStack() as stack:
        db = None if dry_run else stack.enter_context(store.transaction())
        refs = _References(store, driver, mounted)
        for image_id in refs.prunable(every=every):
            refs.drop(db, image_id, records)
    if dry_run:
        layers = _removable_layers(driver, store, refs.unused_layers(_recorded(store)))
    else:
        _remove_aliases(driver, refs.deleted)
        layers = remove_unused_layers(driver, store)
    return PruneReport(images=records, layers=layers, dry_run=dry_run)


def remove_unused_layers(driver: Driver, store: ImageStore) -> list[StoredLayer]:
    """Remove the recorded layers no image uses that the driver lets go (what an image
    removal that did not finish leaves, see the module), newest first; return them.
    ``prune`` does this after its images, ``winlayer gc`` on its own."""
    candidates = _References(store).unused_layers(_recorded(store))
    return _remove_layers(driver, store, _removable_layers(driver, store, candidates))


def _recorded(store: ImageStore) -> list[str]:
    return [layer.chain_id for layer in store.layers()]


def disk_usage(driver: Driver, store: ImageStore) -> DiskUsage:
    """The store-wide summary (see :class:`DiskUsage`)."""
    refs = _References(store, driver, _mounted_sandboxes(driver, store))
    records = {layer.chain_id: layer for layer in store.layers()}
    used = {c for image in refs.images.values() for c in image.layers if c in records}
    active = [i for i in refs.images if refs.sandboxes.get(i)]
    active_chains = {c for i in active for c in refs.images[i].layers}
    images = Usage(
        total=len(refs.images),
        active=len(active),
        size=sum(records[c].size for c in used),
        reclaimable=sum(records[c].size for c in used - active_chains),
    )
    infos = driver.layers()
    stacked = {os.path.basename(p) for info in infos for p in driver.parents(info.id)}
    image_layers = {records[c].layer_id for c in used}
    unused = _removable_layers(driver, store, refs.unused_layers(records))
    prunable = {layer.layer_id for layer in unused}
    read_only = [info for info in infos if not info.read_write]
    layers = Usage(
        total=len(read_only),
        active=sum(1 for i in read_only if i.id in image_layers or i.id in stacked),
        size=sum(i.size or 0 for i in read_only),
        reclaimable=sum(i.size or 0 for i in read_only if i.id in prunable),
    )
    sandbox_sizes = {info.id: driver.diff_size(info.id) for info in infos if info.read_write}
    mounted = {i for i in sandbox_sizes if driver.mount_count(i)}
    sandboxes = Usage(
        total=len(sandbox_sizes),
        active=len(mounted),
        size=sum(sandbox_sizes.values()),
        reclaimable=sum(s for i, s in sandbox_sizes.items() if i not in mounted),
    )
    return DiskUsage(images=images, layers=layers, sandboxes=sandboxes)


def tag_image(store: ImageStore, source: str, target: str) -> str:
    """Point ``target`` (``name[:tag]``, tag ``latest``) at the image `source` names,
    moving the tag if it named another image (``docker tag``); return the image id."""
    name, tag = parse_reference(target)
    image_id = store.resolve(source)
    store.tag(name, tag, image_id, force=True)
    return image_id


def inspect_image(driver: Driver, store: ImageStore, ref: str) -> dict[str, Any]:
    """Docker's ``image inspect`` fields that apply, with winlayer's own under
    ``Winlayer``: the chain IDs, the driver layer ids, the sandboxes made from it and a
    host base image's folder."""
    refs = _References(store, driver)
    image_id = store.resolve(ref)
    image = refs.images[image_id]
    config = _config(image)
    stored = [store.layer(c) for c in image.layers]
    layers = [layer for layer in stored if layer is not None]
    parents = refs.ancestors(image_id)
    result: dict[str, Any] = {
        "Id": f"sha256:{image_id}",
        "RepoTags": list(image.tags),
        "RepoDigests": [],
        "Parent": f"sha256:{parents[0]}" if parents else "",
        "Comment": json_field(config, "comment") or "",
        "Created": image.created,
        "Author": json_field(config, "author") or "",
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "Config": json_field(config, "config") or {},
        "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in layers]},
        "Winlayer": {
            "ChainIDs": list(image.layers),
            "LayerIDs": [layer.layer_id for layer in layers],
            "Sandboxes": refs.sandboxes.get(image_id, []),
            "HostBaseFolder": None if image.layers else driver.metadata(image_id)["dir"],
        },
    }
    for key, field in (("Variant", "variant"), ("OsVersion", "os.version")):
        value = json_field(config, field)
        if value:
            result[key] = value
    return result


def image_history(store: ImageStore, ref: str) -> list[HistoryEntry]:
    """An image's config ``history``, newest first, each layer-making entry with its
    layer (see :class:`HistoryEntry`). An image without history gets one entry per
    layer; layers beyond the history's layer-making entries get one each too."""
    refs = _References(store)
    image_id = store.resolve(ref)
    image = refs.images[image_id]
    history = [h if isinstance(h, dict) else {} for h in _history(image)]
    ends = {len(refs.histories[a]) - 1: a for a in refs.ancestors(image_id) if refs.histories[a]}
    entries = []
    layers = iter(image.layers)
    for i, item in enumerate(history):
        empty = json_field(item, "empty_layer") is True
        chain_id = None if empty else next(layers, None)
        entries.append(_entry(store, image, item, chain_id, ends.get(i), empty))
    entries.extend(_entry(store, image, {}, c, None, False) for c in layers)
    if entries:
        entries[-1] = dataclasses.replace(entries[-1], image=f"sha256:{image_id}")
    return entries[::-1]


def _entry(
    store: ImageStore,
    image: Image,
    item: dict[str, Any],
    chain_id: str | None,
    ends: str | None,
    empty: bool,
) -> HistoryEntry:
    layer = store.layer(chain_id) if chain_id else None
    return HistoryEntry(
        image=f"sha256:{ends}" if ends else None,
        created=str(json_field(item, "created") or image.created),
        created_by=str(json_field(item, "created_by") or ""),
        comment=str(json_field(item, "comment") or ""),
        empty_layer=empty,
        layer=chain_id,
        size=layer.size if layer else 0,
    )
