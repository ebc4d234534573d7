"""The graph-driver API: Docker's Windows driver (``windowsfilter`` / ``windowsdiff``) in Python.

A :class:`Driver` manages the layers in one home folder through a backend (HCS's layer
API). It behaves like the 2015 driver where that was right, and fixes what it got wrong:
the parent must exist before anything is created, ``get``/``put`` are reference counted
across threads and processes and undo what they did on failure, ``diff`` streams do not
touch the mount count, ``changes`` and ``diff_size`` work, ``remove`` renames before it
destroys and refuses a layer in use, alternate IDs are honoured everywhere, and leftovers
of crashed operations are swept when a driver opens its home.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from . import _applyjobs, _baseimages, chain
from ._baseimages import Recorder, Tagger
from ._common import FLAVOURS, ProgressCallback, Source, data_root
from ._native import _hcs
from ._pipeline import TarFeed, digest_of, plain_tar
from ._reference import DIGEST
from ._state import Mounts, StateStore, named_holder, process_holder, write_denied
from ._units import parse_size
from .backend import Backend, default_base_images, load
from .errors import (
    DigestMismatch,
    DriverClosed,
    InvalidArgument,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    StoreCorrupt,
    WinlayerError,
)
from .imagestore import IMAGE_DB, ImageStore

log = logging.getLogger(__name__)

REMOVING_SUFFIX = "-removing"
VIEW_SUFFIX = "-winlayer-view"  # read-only views: "<layer>-<token>-winlayer-view" (Driver.view)
DEFAULT_MAX_LAYER_SIZE = 1 << 40


def default_home(flavour: str = "windowsfilter") -> Path:
    """``$WINLAYER_HOME``, else ``<data root>/<flavour>`` (as Docker's ``windowsfilter`` folder)."""
    env = os.environ.get("WINLAYER_HOME")
    return Path(env) if env else data_root() / flavour


@dataclass(frozen=True)
class Change:
    """One path a layer changes relative to its parents; ``kind`` is ``"A"`` (added),
    ``"C"`` (modified) or ``"D"`` (deleted), as ``docker diff`` prints them."""

    path: str
    kind: str


@dataclass(frozen=True)
class LayerInfo:
    """What :meth:`Driver.info` and :meth:`Driver.layers` say of a layer: its `id`, the
    folder name of its nearest `parent` (None for a base layer), `size` (bytes of file
    data) and `diff_id` when winlayer imported it, and whether it is a sandbox
    (`read_write`)."""

    id: str
    parent: str | None  # folder name of the nearest parent
    size: int | None  # bytes of file data, when the layer was imported by winlayer
    diff_id: str | None
    read_write: bool


class Driver:
    """A layer store in `home` (default: :func:`default_home`).

    `flavour` is ``"windowsfilter"`` (HCS filter driver) or ``"windowsdiff"`` (HCS diff
    flavour: a layer tar is extracted straight into the layer's folder). `backend` is
    ``"portable"``, ``"hcs"``, a backend object, or None for :data:`winlayer.backend`.
    `max_layer_size` (default ``$WINLAYER_MAX_LAYER_SIZE`` or 1 TiB) caps what one
    compressed layer may expand to, wherever one is decompressed (apply_diff, load,
    install_base_image).
    The driver is safe to share between threads; several processes may share a home.
    A home this process may not write (a read-only mount, no permission) can still be
    read; see :attr:`write_denied`.

    A driver is a context manager: ``with Driver(home) as driver:`` closes it at the end
    (:meth:`close`). It keeps no file, lock or connection open between calls (each
    operation takes its layer locks and opens the image store for itself), so closing it
    only ends its use; mounts made with :meth:`get` stay until :meth:`put`, or until the
    process ends.

    Raises :class:`~winlayer.InvalidArgument` for an unknown flavour or a bad
    `max_layer_size`, :class:`~winlayer.BackendUnavailable` for a backend that cannot
    run here, and ``OSError`` when the home cannot be made.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        flavour: str = "windowsfilter",
        backend: str | Backend | None = None,
        *,
        base_images: str | os.PathLike[str] | None = None,
        max_layer_size: int | str | None = None,
    ) -> None:
        if flavour not in FLAVOURS:
            raise InvalidArgument(
                f"unknown flavour {flavour!r}: choose windowsfilter or windowsdiff"
            )
        self._closed = False
        self.flavour = flavour
        #: Largest uncompressed layer apply_diff accepts from compressed input (bombs).
        self.max_layer_size = parse_size(
            max_layer_size or os.environ.get("WINLAYER_MAX_LAYER_SIZE") or DEFAULT_MAX_LAYER_SIZE
        )
        #: The portable backend's base-image directory (see :func:`default_base_images`).
        self.base_images = Path(base_images if base_images else default_base_images()).absolute()
        if backend is None or isinstance(backend, str):
            self._backend: Backend = load(backend, str(self.base_images))
        else:
            self._backend = backend
        # The backend's import publishes the layer with one rename, the driver's chain and
        # record in it (the portable backend; not HCS, whose import makes the folder).
        self._publishes_files = bool(getattr(self._backend, "publishes_layer_files", False))
        self.home = Path(home if home is not None else default_home(flavour)).absolute()
        self.home.mkdir(parents=True, exist_ok=True)
        #: Why this process may not change the store (an errno: EROFS for a read-only
        #: mount, EACCES without write permission), or 0. A read-only store can be read
        #: (ls, info, diff, verify, changes); what would change it raises PermissionError.
        self.write_denied = write_denied(self.home)
        self._info = _hcs.DriverInfo(FLAVOURS[flavour], str(self.home))
        # Layers outside the home (host base images) are named by their full path.
        self._path_info = _hcs.DriverInfo(FLAVOURS[flavour], "")
        self._state = StateStore(self.home, read_only=bool(self.write_denied))
        self._mounts = Mounts(self._state, self._backend, self._ref)
        if not self.write_denied:
            self._sweep(stale_mounts=False)

    # -- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """End the use of this driver: any later call raises
        :class:`~winlayer.errors.DriverClosed`. Closing again does nothing. Diff streams
        it gave out stay readable until they are closed themselves."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Driver:
        """The driver itself; :class:`~winlayer.errors.DriverClosed` if it is closed."""
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the driver."""
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DriverClosed(str(self.home))

    # -- identity -------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """The name of the backend in use ("portable" or "hcs")."""
        return self._backend.name

    def __str__(self) -> str:
        return self.flavour

    def __repr__(self) -> str:
        return (
            f"Driver(home={str(self.home)!r}, flavour={self.flavour!r}, backend={self.backend!r})"
        )

    def status(self) -> list[tuple[str, str]]:
        """Docker's driver status pairs: ``[("Windows", "")]``, as the Windows driver gives."""
        self._check_open()
        return [("Windows", "")]

    def metadata(self, id: str) -> dict[str, str]:
        """Driver information about a layer: its folder (the resolved one)."""
        return {"dir": str(self._dir(self._resolve(id)))}

    # -- queries --------------------------------------------------------------------

    def exists(self, id: str) -> bool:
        """Whether layer `id` (or the layer its alternate ID names) exists; False for a
        damaged alias. Raises :class:`~winlayer.InvalidArgument` for an invalid id."""
        try:
            rid = self._resolve(id)
        except StoreCorrupt:
            return False
        return self._backend.layer_exists(*self._ref(rid))

    def parents(self, id: str) -> list[str]:
        """Parent layer folders, nearest first, as recorded in ``layerchain.json``."""
        return chain.read_chain(self._dir(self._require(id)))

    def layers(self) -> list[LayerInfo]:
        """Every layer in the home, sorted by id."""
        self._check_open()
        found = []
        for entry in sorted(os.scandir(self.home), key=lambda e: e.name):
            if not entry.is_dir() or self._is_internal_name(entry.name):
                continue
            if chain.read_alt_id(Path(entry.path)) is not None:
                continue  # an alias (e.g. a restored image id), not a layer
            if not self._backend.layer_exists(self._info, entry.name):
                continue
            found.append(self.info(entry.name))
        return found

    def info(self, id: str) -> LayerInfo:
        """The :class:`LayerInfo` of layer `id`; :class:`~winlayer.LayerNotFound` if there
        is none, :class:`~winlayer.StoreCorrupt` if its files are damaged."""
        rid = self._require(id)
        folder = self._dir(rid)
        parents = chain.read_chain(folder)
        record = self._read_record(rid)
        return LayerInfo(
            id=rid,
            parent=os.path.basename(parents[0]) if parents else None,
            size=record.get("size"),
            diff_id=record.get("diff_id"),
            read_write=bool(record.get("read_write", False)),
        )

    # -- create / remove ------------------------------------------------------------

    def create(
        self,
        id: str,
        parent: str | None = None,
        *,
        read_write: bool = False,
        size: int | str | None = None,
    ) -> None:
        """Create an empty layer on `parent`.

        As in Docker, a parent named ``*-init`` makes a read/write (sandbox) layer on the
        init layer's own parents; ``read_write=True`` asks for one on `parent` itself.
        `size` (bytes or e.g. ``"20GB"``) limits a sandbox.
        """
        self._check_writable()
        _check_id(id)
        limit = parse_size(size) if size is not None else None
        rpid = self._require(parent) if parent else ""
        sandbox = read_write or rpid.endswith("-init")
        if limit is not None and not sandbox:
            raise InvalidArgument("size applies to read/write layers only")
        with self._locked(id, rpid):
            if self._home_dir(id).exists():
                raise LayerExists(id)
            if rpid and not self._backend.layer_exists(*self._ref(rpid)):
                raise LayerNotFound(parent or rpid, "parent layer not found")
            layer_chain = self._chain_below(rpid, include_parent=not rpid.endswith("-init"))
            if sandbox and not layer_chain:
                raise InvalidArgument(
                    f"cannot create a read/write layer without a parent layer: {id!r}"
                )
            _check_depth(layer_chain, parent, read_write=sandbox)
            self._state.mark_pending(id)
            try:
                if sandbox:
                    self._backend.create_sandbox_layer(self._info, id, layer_chain[0], layer_chain)
                    if limit is not None:
                        self._backend.expand_sandbox_size(self._info, id, limit)
                else:
                    self._backend.create_layer(self._info, id, self._ref(rpid)[1] if rpid else "")
                chain.write_chain(self._home_dir(id), layer_chain)
                self._write_record(id, {"read_write": sandbox})
            except BaseException:
                self._destroy_quietly(id)
                raise
            finally:
                self._state.clear_pending(id)

    def remove(self, id: str) -> None:
        """Destroy a layer. Refused (:class:`LayerInUse`) while it is mounted, being
        exported, the parent of another layer, or used by an image of the image store
        (``<home>/.winlayer/images.db``, when there is one); nothing is lost then.
        Removing a sandbox forgets the image it was recorded as created from. For a
        restored host base image only its alias goes: the image belongs to the host."""
        self._check_writable()
        rid = self._require(id)
        if self._dir(rid).parent != self.home:
            if rid == id:
                raise WinlayerError(f"{id!r} is a host base image, not a layer of this store")
            with self._state.lock(id), self._unused_by_images(id, rid):
                self._remove_alias_folder(id)
            return
        with self._layer_locked(id) as rid, self._unused_by_images(id, rid):
            state = self._state.load(rid)
            if state.in_use:
                raise LayerInUse(id, "layer is mounted or being exported")
            children = self._children(rid)
            if any(child.endswith(VIEW_SUFFIX) for child in children):
                raise LayerInUse(id, "layer is shown by a read-only view (Driver.view)")
            if children:
                raise LayerInUse(id, f"layer is the parent of {', '.join(children)}")
            self._mounts.release(rid, state)  # left prepared by a process that died
            # Rename first: a crash after this point leaves only a `-removing` folder,
            # which the next sweep destroys, never a half-destroyed layer under its id.
            doomed = f"{rid}-{secrets.token_hex(4)}{REMOVING_SUFFIX}"
            os.replace(self._home_dir(rid), self._home_dir(doomed))
            try:
                self._backend.destroy_layer(self._info, doomed)
            except BaseException:
                if self._home_dir(doomed).is_dir():  # nothing destroyed: put the layer back
                    os.replace(self._home_dir(doomed), self._home_dir(rid))
                raise
        if rid != id and self._home_dir(id).is_dir():
            with self._state.lock(id):
                self._remove_alias_folder(id)

    def cleanup(self) -> list[str]:
        """Sweep what crashed operations left: ``*-removing`` folders, half-done creates
        and imports, staging folders, and mounts whose holders are all gone. Returns
        what was swept, one description each."""
        self._check_writable()
        return self._sweep(stale_mounts=True)

    def restore_custom_images(self, tagger: Tagger, recorder: Recorder) -> list[str]:
        """Register the backend's base images as images; return the ids newly registered.
        See :func:`winlayer.images.restore_custom_images`."""
        self._check_writable()
        return _baseimages.register(self._backend.get_base_images(), self.home, tagger, recorder)

    def install_base_image(
        self,
        name: str,
        version: str,
        source: Source,
        *,
        base_images: str | os.PathLike[str] | None = None,
        created: datetime | None = None,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Install a base layer tar as a base image of the portable backend; return its
        folder. See :func:`winlayer.images.install_base_image`."""
        self._check_open()
        root = Path(base_images if base_images is not None else default_base_images())
        return _baseimages.install(
            self._backend,
            self.flavour,
            root.absolute(),
            name,
            version,
            source,
            max_uncompressed=self.max_layer_size,
            created=created,
            progress=progress,
        )

    def new_staging_dir(self) -> Path:
        """A new private folder (not yet created) beside the layers, on their volume, for
        files an operation holds for a while; the caller removes it. Folders left by
        processes that died are removed here."""
        self._check_open()
        return self._state.new_staging_dir()

    # -- mount ----------------------------------------------------------------------

    def get(self, id: str, *, holder: str | None = None) -> Path:
        """Mount a layer and return the path of its contents (reference counted).

        The first ``get`` activates and prepares the layer; later ones return the cached
        mount path. On failure what was done is undone (unprepare, then deactivate).
        The reference belongs to this process (released if it dies) unless `holder`
        names a holder that keeps it until ``put(id, holder=...)``.
        """
        self._check_writable()
        owner = named_holder(holder) if holder else process_holder()
        with self._layer_locked(id) as rid:
            parents = chain.read_chain(self._dir(rid))
            return Path(self._mounts.get(rid, owner, parents, str(self._dir(rid))))

    def put(self, id: str, *, holder: str | None = None) -> None:
        """Release one :meth:`get`. The last one unprepares and deactivates the layer.

        If the backend fails, the count stays true: a layer still prepared stays counted
        as mounted (``put`` may be retried); an unprepared one is no longer counted.
        """
        self._check_writable()
        owner = named_holder(holder) if holder else process_holder()
        with self._layer_locked(id) as rid:
            who = f"holder {holder!r}" if holder else "this process"
            self._mounts.put(rid, owner, f"layer {id!r} is not mounted by {who}")

    def view(self, id: str, *, holder: str | None = None) -> Path:
        """A read-only view of layer `id` on its parents (``ctr snapshots view``): the path
        of the merged files, reference counted per holder as :meth:`get` is, until
        :meth:`unview`.

        The view is a hidden sandbox on the layer (``<id>-<token>-winlayer-view``, not listed by
        :meth:`layers`), made by the first ``view`` of a holder and destroyed by its last
        ``unview``. Where the backend can, writes into it fail (the portable backend's
        overlay view: ``EROFS``); elsewhere (HCS, the portable copy view) they succeed but
        are discarded with the view. While a view exists the layer cannot be removed.
        A failed view leaves nothing; the sweep destroys views nobody holds.
        """
        self._check_writable()
        owner = named_holder(holder) if holder else process_holder()
        rid = self._require(id)
        vid = _view_id(rid, owner)
        with self._locked(rid, vid):
            if not self._dir(rid).is_dir():
                raise LayerNotFound(id)
            layer_chain = [str(self._dir(rid)), *chain.read_chain(self._dir(rid))]
            if not self._home_dir(vid).is_dir():
                _check_depth(layer_chain, id, read_write=True)
                self._state.mark_pending(vid)
                try:
                    self._backend.create_view_layer(self._info, vid, layer_chain[0], layer_chain)
                    chain.write_chain(self._home_dir(vid), layer_chain)
                    self._write_record(vid, {"read_write": True, "view": rid})
                except BaseException:
                    self._destroy_quietly(vid)
                    raise
                finally:
                    self._state.clear_pending(vid)
            try:
                return Path(self._mounts.get(vid, owner, layer_chain, str(self._dir(vid))))
            except BaseException:
                self._destroy_idle_view(vid)
                raise

    def unview(self, id: str, *, holder: str | None = None) -> None:
        """Release one :meth:`view` of `holder` (default: this process); the last one
        unmounts the view and destroys it, with whatever was written into it."""
        self._check_writable()
        owner = named_holder(holder) if holder else process_holder()
        rid = self._require(id)
        vid = _view_id(rid, owner)
        who = f"holder {holder!r}" if holder else "this process"
        with self._locked(rid, vid):
            if not self._home_dir(vid).is_dir():
                raise WinlayerError(f"layer {id!r} has no view held by {who}")
            self._mounts.put(vid, owner, f"layer {id!r} has no view held by {who}")
            self._destroy_idle_view(vid)

    def _destroy_idle_view(self, vid: str) -> bool:
        """Destroy view `vid` if nobody holds it (its lock held); whether it was."""
        state = self._state.load(vid)
        if state.in_use or not self._home_dir(vid).is_dir():
            return False
        self._mounts.release(vid, state)
        self._backend.destroy_layer(self._info, vid)
        return True

    @contextlib.contextmanager
    def mounted(self, id: str) -> Iterator[Path]:
        """``with driver.mounted(id) as path:`` -- get on entry, put on exit."""
        path = self.get(id)
        try:
            yield path
        finally:
            self.put(id)

    def mount_count(self, id: str) -> int:
        """How many gets (all processes) currently hold the layer."""
        with self._layer_locked(id) as rid:
            return self._state.load(rid).mounts

    # -- layer data -----------------------------------------------------------------

    def apply_diff(
        self,
        id: str,
        parent: str | None,
        source: Source | TarFeed,
        *,
        digest: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Import a layer tar (path or binary stream; plain, gzip or zstd) as layer `id`
        on `parent`; return the bytes of file data it holds. The tar goes through the
        import pipeline (:mod:`winlayer._pipeline`): decompressed on a read-ahead thread
        while the importer parses it.

        `digest` (``sha256:<hex>``) is the diffID the uncompressed tar must have; a
        mismatch leaves nothing behind. If `id` already holds imported data (another
        thread or process imported it first), nothing is unpacked again: the same content
        (`digest`, or without it the source's diffID, hashed) returns the stored size,
        other content is :class:`LayerExists` naming both diffIDs.
        """
        self._check_writable()
        _check_id(id)
        _check_digest(digest)
        rpid = self._require(parent) if parent else ""
        with self._locked(id, rpid):
            layer_chain = self._existing_chain(parent, rpid)
            return self._import(id, parent, layer_chain, source, digest, progress, None)

    def apply_diffs(
        self,
        diffs: Sequence[Diff],
        *,
        jobs: int | None = None,
        on_commit: Callable[[int, int], None] | None = None,
    ) -> list[int]:
        """Import several layers, up to `jobs` at a time (default: the number of cores,
        at most the number of layers); return the bytes of file data of each, as
        :meth:`apply_diff` does one.

        A :class:`Diff`'s parent is a layer of the store or an earlier diff of the list.
        A layer on an earlier diff is parsed and written into its own staging folder while
        its parent is still being written; only what needs the parent waits for the
        parent's commit (a hard link to a parent's file, the utility VM, and the commit
        itself), so layers commit parent first. `on_commit(i, size)` is called on the
        layer's thread once diff i is committed, before any layer on it commits.

        A failure stops the layers after it in the list (the ones before it go on to their
        commits): layers not committed leave nothing behind, layers committed stay (each
        was given to `on_commit`); the first failure in list order is raised once every
        started import has ended. ``jobs=1`` imports one layer after the other.
        """
        self._check_writable()
        if jobs is not None and jobs < 1:
            raise InvalidArgument(f"jobs must be at least 1, not {jobs}")
        index: dict[str, int] = {}
        parents: list[int | None] = []
        chains: list[list[str]] = []
        for i, d in enumerate(diffs):
            _check_id(d.id)
            _check_digest(d.digest)
            if d.id in index:
                raise InvalidArgument(f"layer {d.id!r} is given twice")
            index[d.id] = i
            j = index.get(d.parent) if d.parent else None
            parents.append(j)
            if j is not None:
                chains.append([str(self._home_dir(diffs[j].id)), *chains[j]])
            else:
                rpid = self._require(d.parent) if d.parent else ""
                chains.append(self._chain_below(rpid, include_parent=True))
            _check_depth(chains[i], d.parent, read_write=False)
        sizes = [0] * len(diffs)

        def job(i: int) -> _applyjobs.Job:
            d = diffs[i]

            def run(wait_parent: Callable[[], None] | None, check: Callable[[], None]) -> None:
                with _opened(d.source) as source:
                    if wait_parent is not None:  # the parent is one of these: not locked
                        with self._locked(d.id):
                            sizes[i] = self._import(
                                d.id,
                                d.parent,
                                chains[i],
                                source,
                                d.digest,
                                _ticks(check, source),
                                wait_parent,
                            )
                    else:
                        rpid = self._require(d.parent) if d.parent else ""
                        with self._locked(d.id, rpid):
                            layer_chain = self._existing_chain(d.parent, rpid)
                            sizes[i] = self._import(
                                d.id,
                                d.parent,
                                layer_chain,
                                source,
                                d.digest,
                                _ticks(check, source),
                                None,
                            )
                if wait_parent is not None:
                    wait_parent()  # a layer found imported already did not wait
                if on_commit is not None:
                    on_commit(i, sizes[i])

            return run

        workers = _applyjobs.worker_count(jobs, len(diffs))
        _applyjobs.run([job(i) for i in range(len(diffs))], parents, workers)
        return sizes

    def _existing_chain(self, parent: str | None, rpid: str) -> list[str]:
        """The chain of a new layer on the committed layer `rpid` (its lock held)."""
        if rpid and not self._backend.layer_exists(*self._ref(rpid)):
            raise LayerNotFound(parent or rpid, "parent layer not found")
        return self._chain_below(rpid, include_parent=True)

    def _import(
        self,
        id: str,
        parent: str | None,
        layer_chain: list[str],
        source: Source | TarFeed,
        digest: str | None,
        progress: ProgressCallback | None,
        wait_for_parents: Callable[[], None] | None,
    ) -> int:
        """apply_diff's import, with the lock of `id` held; `wait_for_parents` for a
        parent still being imported (see :meth:`apply_diffs`)."""
        _check_depth(layer_chain, parent, read_write=False)
        existing = self._already_imported(id, source, digest)
        if existing is not None:
            return existing

        def record(diff_id: str, size: int) -> dict[str, Any]:
            return {"diff_id": diff_id, "size": size, "read_write": False}

        def import_native(files: Callable[[str, int], dict[str, bytes]] | None) -> Any:
            extra = {} if files is None else {"layer_files": files}
            try:
                with plain_tar(source, max_uncompressed=self.max_layer_size) as tar:
                    return self._backend.import_layer(
                        self._info,
                        id,
                        layer_chain,
                        tar,
                        digest,
                        progress,
                        wait_for_parents,
                        **extra,
                    )
            except DigestMismatch as exc:
                raise exc.about(f"layer {id!r}") from None

        if self._publishes_files:
            # The chain and the record are published with the layer (one sync, one rename):
            # no half-created layer to mark (see "Crash safety" in docs/ARCHITECTURE.md).
            def files(diff_id: str, size: int) -> dict[str, bytes]:
                return {
                    chain.CHAIN_FILE: chain.encode_chain(layer_chain),
                    chain.RECORD_FILE: chain.record_bytes(
                        self._home_dir(id), record(diff_id, size)
                    ),
                }

            result = import_native(files)
        else:
            self._state.mark_pending(id)
            try:
                result = import_native(None)
                try:
                    chain.write_chain(self._home_dir(id), layer_chain)
                    self._write_record(id, record(result.diff_id, result.size))
                except BaseException:
                    self._destroy_quietly(id)
                    raise
            finally:
                self._state.clear_pending(id)
        log.info("imported layer %s (%d bytes of file data)", id, result.size)
        return int(result.size)

    def diff(self, id: str, parent: str | None = None, *, original: bool = False) -> DiffStream:
        """The layer's changes as a tar stream (a readable binary file and a context manager).

        Canonical (deterministic) by default; ``original=True`` gives back the imported
        tar byte for byte. Closing the stream does not touch the layer's mount count.
        """

        def open_native(rid: str, parents: list[str]) -> Any:
            return self._backend.export_layer(*self._ref(rid), parents, original)

        return self._export(id, parent, open_native)

    def merged(self, id: str) -> DiffStream:
        """The merged file system of layer `id` on its parents as one base-layer tar stream,
        the way ``docker export`` gives a container's: the nearest version of every path,
        nothing a layer deleted, no whiteouts, Windows metadata kept; hard links stay links
        only where the merged view has their file (see ``native/core/merged_layer.hpp``).
        Canonical, so a chain of one layer gives that layer's :meth:`diff`. Like ``diff``,
        it counts as an export of `id` while open (the parents cannot go while `id` lives).
        """
        return self._export(id, None, self._open_merged)

    def _open_merged(self, rid: str, parents: list[str]) -> Any:
        layers = [(*self._ref(rid), parents)]
        for depth, folder in enumerate(parents):
            info, name = self._folder_ref(folder)
            layers.append((info, name, parents[depth + 1 :]))
        return self._backend.export_merged(layers)

    def _export(
        self, id: str, parent: str | None, open_native: Callable[[str, list[str]], Any]
    ) -> DiffStream:
        """A tar stream `open_native(rid, parents)` of layer `id`, counted as an export of
        it until closed (a remove is refused meanwhile)."""
        pid = os.getpid()
        counted = not self.write_denied  # a read-only store cannot be changed meanwhile
        with self._layer_locked(id) as rid:
            parents = self._check_parent(rid, parent)
            if counted:
                state = self._state.load(rid)
                state.exports[pid] = state.exports.get(pid, 0) + 1
                self._state.save(rid, state)

        def end() -> None:
            if counted:
                self._end_export(rid)

        try:
            native = open_native(rid, parents)
        except BaseException:
            end()
            raise
        return DiffStream(native, end, rid)

    def verify(self, id: str) -> str:
        """Re-hash the stored layer (its original tar, rebuilt) against the diffID it was
        imported with; return that diffID or raise :class:`DigestMismatch`."""
        rid = self._require(id)
        expected = self._read_record(rid).get("diff_id")
        if not expected:
            raise WinlayerError(f"layer {id!r} has no recorded diffID: it was not imported")
        with self.diff(rid, original=True) as stream:
            actual, _size = digest_of(stream)
        if actual != expected:
            raise DigestMismatch(expected, actual, f"layer {id!r}")
        return actual

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        """What the layer adds (``A``), modifies (``C``) and deletes (``D``), by path."""
        return [change for change, _size in self._changes_with_sizes(id, parent)]

    def diff_size(self, id: str, parent: str | None = None) -> int:
        """Bytes of file data the layer adds or modifies."""
        return sum(
            size for change, size in self._changes_with_sizes(id, parent) if change.kind != "D"
        )

    # -- internals --------------------------------------------------------------------

    def _check_writable(self) -> None:
        self._check_open()
        if self.write_denied:
            raise PermissionError(
                self.write_denied, "the layer store is read-only here", str(self.home)
            )

    def _changes_with_sizes(self, id: str, parent: str | None) -> list[tuple[Change, int]]:
        # The backend's reader walks the layer's entries (no tar is written or parsed);
        # the layer's lock keeps a remove out meanwhile.
        with self._layer_locked(id) as rid:
            parents = self._check_parent(rid, parent)
            entries = self._backend.layer_changes(*self._ref(rid), parents)
        sizes: dict[str, tuple[str, int]] = {}
        for path, entry_kind, entry_size in entries:
            if entry_kind == "whiteout":
                sizes[path] = ("D", 0)
            elif entry_kind == "stream":
                owner = path.split(":", 1)[0]
                kind, size = sizes.get(owner, ("C", 0))
                sizes[owner] = (kind, size + entry_size)
            else:
                kind = "C" if _exists_in_chain(path, parents) else "A"
                sizes[path] = (kind, entry_size if entry_kind == "file" else 0)
        return [(Change(path, kind), size) for path, (kind, size) in sorted(sizes.items())]

    def _end_export(self, rid: str) -> None:
        pid = os.getpid()
        with self._state.lock(rid):
            state = self._state.load(rid)
            left = state.exports.get(pid, 0) - 1
            if left > 0:
                state.exports[pid] = left
            else:
                state.exports.pop(pid, None)
            self._state.save(rid, state)

    def _check_parent(self, rid: str, parent: str | None) -> list[str]:
        parents = chain.read_chain(self._dir(rid))
        if parent:
            expected = self._dir(self._require(parent))
            if not parents or Path(parents[0]) != expected:
                raise ValueError(f"{parent!r} is not the parent of layer {rid!r}")
        return parents

    def _already_imported(
        self, id: str, source: Source | TarFeed, digest: str | None
    ) -> int | None:
        """Size of `id` if it already holds this content (`digest`, else the diffID of
        `source`, hashed without importing it); None if it must be imported (an empty
        read-only layer made by :meth:`create` is replaced). Other content is LayerExists."""
        folder = self._home_dir(id)
        if not folder.exists():
            return None
        record = self._read_record(id)
        if "diff_id" in record:
            stored = record["diff_id"]
            new = digest or self._diff_id_of(source)
            if new != stored:
                raise LayerExists(
                    id, f"layer already holds diffID {stored}, the new content has {new}"
                )
            log.info("layer %s was imported already; not unpacking it again", id)
            return int(record.get("size", 0))
        if not record or record.get("read_write"):
            # Not made by create() here (or a sandbox): it is someone's data.
            raise LayerExists(id, "layer already exists and holds data")
        if not self._publishes_files:  # else the import's rename replaces it, crash-safely
            self._backend.destroy_layer(self._info, id)
        return None

    def _diff_id_of(self, source: Source | TarFeed) -> str:
        """The diffID of a layer tar (path or stream; plain, gzip or zstd), not imported."""
        with plain_tar(source, max_uncompressed=self.max_layer_size) as tar:
            return str(_hcs.tar_digest(tar))

    def _chain_below(self, rpid: str, *, include_parent: bool) -> list[str]:
        """The parent chain of a new layer on `rpid`."""
        if not rpid:
            return []
        below = chain.read_chain(self._dir(rpid))
        return [str(self._dir(rpid)), *below] if include_parent else below

    def _children(self, rid: str) -> list[str]:
        folder = str(self._dir(rid))
        children = []
        for entry in os.scandir(self.home):
            if (
                entry.is_dir()
                and (not self._is_internal_name(entry.name) or entry.name.endswith(VIEW_SUFFIX))
                and entry.name != rid
            ):
                try:
                    if folder in chain.read_chain(Path(entry.path)):
                        children.append(entry.name)
                except StoreCorrupt:
                    continue
        return sorted(children)

    def _sweep(self, *, stale_mounts: bool) -> list[str]:
        swept = []
        for entry in os.scandir(self.home):
            if entry.is_dir() and entry.name.endswith(REMOVING_SUFFIX):
                self._destroy_quietly(entry.name)
                swept.append(f"removed leftover {entry.name}")
        swept.extend(
            f"removed {name}, left by a crash" for name in self._state.sweep_partial_files()
        )
        for layer_id in self._state.pending_ids():
            lock = self._state.lock(layer_id)
            if not lock.acquire(blocking=False):
                continue  # the operation is still running in some process
            try:
                if layer_id in self._state.pending_ids():
                    # An import whose record is written completed: only the marker's
                    # removal was lost (it is not synced).
                    if not chain.is_imported(self._home_dir(layer_id)):
                        log.warning("destroying layer %s left half-created by a crash", layer_id)
                        self._destroy_quietly(layer_id)
                        swept.append(f"destroyed half-created layer {layer_id}")
                    self._state.clear_pending(layer_id)
            finally:
                lock.release()
        sweep = getattr(self._backend, "sweep", None)
        if sweep is not None:
            swept.extend(f"removed staging folder {name}" for name in sweep(self._info) or ())
        if stale_mounts:
            for layer_id in self._state.mounted_ids():
                try:
                    if self._mounts.release_abandoned(layer_id, self._dir(layer_id).is_dir()):
                        swept.append(f"released abandoned mount of {layer_id}")
                except (WinlayerError, OSError) as exc:
                    log.warning("could not release the mount of %s: %s", layer_id, exc)
                    swept.append(f"could not release the mount of {layer_id}: {exc}")
        swept.extend(self._sweep_views())
        return swept

    def _sweep_views(self) -> list[str]:
        """Destroy the views nobody holds (their holders died, or a crash came between
        a view's creation and its mount, or its unmount and its removal)."""
        swept = []
        for entry in os.scandir(self.home):
            if not (entry.is_dir() and entry.name.endswith(VIEW_SUFFIX)):
                continue
            lock = self._state.lock(entry.name)
            if not lock.acquire(blocking=False):
                continue  # a view being made or released right now
            try:
                if self._destroy_idle_view(entry.name):
                    swept.append(f"removed unused view {entry.name}")
            except (WinlayerError, OSError) as exc:
                log.warning("could not remove the view %s: %s", entry.name, exc)
            finally:
                lock.release()
        return swept

    def _destroy_quietly(self, folder_name: str) -> None:
        try:
            if self._home_dir(folder_name).exists():
                self._backend.destroy_layer(self._info, folder_name)
        except Exception:
            log.warning("could not destroy layer folder %s", folder_name, exc_info=True)

    def _remove_alias_folder(self, id: str) -> None:
        folder = self._home_dir(id)
        for name in os.listdir(folder):
            if name.lower() in chain.DRIVER_FILES:
                (folder / name).unlink()
        folder.rmdir()

    @contextlib.contextmanager
    def _unused_by_images(self, *ids: str) -> Iterator[None]:
        """Hold the image store's write transaction (when there is a store) while a layer
        goes, once no image is found to use it, and forget the sandbox records of its ids.
        A load records its images in a transaction that checks that their layers exist,
        so it cannot record one on a layer being removed. Taken after the layer's lock
        (the order everywhere: layer locks, then the store's transaction)."""
        if not (self.home / IMAGE_DB).exists():
            yield
            return
        with ImageStore(self.home) as store, store.transaction() as db:
            users = store.image_users(db, ids)
            if users:
                raise LayerInUse(ids[0], f"layer is used by image {', '.join(users)}")
            for layer_id in ids:
                store.forget_sandbox(db, layer_id)
            yield

    @contextlib.contextmanager
    def _layer_locked(self, id: str) -> Iterator[str]:
        """Hold the lock of layer `id` and yield its resolved id; the layer is checked to
        exist once the lock is held (a concurrent remove may have won the race)."""
        rid = self._require(id)
        with self._state.lock(rid):
            if not self._dir(rid).is_dir():
                raise LayerNotFound(id)
            yield rid

    @contextlib.contextmanager
    def _locked(self, *ids: str) -> Iterator[None]:
        """Hold the locks of several layers, always taken in sorted order (no deadlock)."""
        with contextlib.ExitStack() as stack:
            for layer_id in sorted({i for i in ids if i}):
                stack.enter_context(self._state.lock(layer_id))
            yield

    def _resolve(self, id: str) -> str:
        """The folder name that holds `id`'s data (its alternate ID, if it has one)."""
        self._check_open()
        _check_id(id)
        alt = chain.read_alt_id(self._home_dir(id))
        return alt if alt is not None else id

    def _require(self, id: str) -> str:
        rid = self._resolve(id)
        if not self._dir(rid).is_dir():
            raise LayerNotFound(id)
        return rid

    def _home_dir(self, folder_name: str) -> Path:
        """A folder of this home: new layers, aliases, leftovers."""
        return self.home / folder_name

    def _dir(self, folder_name: str) -> Path:
        """The folder of an existing layer: in the home, or a host base image's folder
        (which only an alias made by restore_custom_images leads to)."""
        local = self.home / folder_name
        if local.exists():
            return local
        return self._base_image_dirs().get(folder_name, local)

    def _ref(self, rid: str) -> tuple[Any, str]:
        """How the backend names a layer: (driver info, id)."""
        return self._folder_ref(self._dir(rid))

    def _folder_ref(self, folder: str | Path) -> tuple[Any, str]:
        """How the backend names the layer in `folder` (e.g. a parent chain's entry): by
        its name in the home, else by its full path."""
        path = Path(folder)
        if path.parent == self.home:
            return self._info, path.name
        return self._path_info, str(path)

    def _base_image_dirs(self) -> dict[str, Path]:
        """Folder name -> folder of each base image the backend reports (restored images'
        alternate IDs name these)."""
        try:
            listing = json.loads(self._backend.get_base_images())
        except (ValueError, WinlayerError, OSError):
            log.warning("could not list the host's base images", exc_info=True)
            return {}
        images = listing.get("Images") if isinstance(listing, dict) else None
        found = {}
        for image in images or []:
            path = image.get("Path") if isinstance(image, dict) else None
            if isinstance(path, str) and path:
                found[os.path.basename(path.rstrip("/\\"))] = Path(path)
        return found

    def _read_record(self, rid: str) -> dict[str, Any]:
        return chain.read_record(self._dir(rid))

    def _write_record(self, rid: str, record: dict[str, Any]) -> None:
        chain.update_record(self._dir(rid), record)

    @staticmethod
    def _is_internal_name(name: str) -> bool:
        return name.startswith(".") or name.endswith((REMOVING_SUFFIX, VIEW_SUFFIX))


class DiffStream(io.RawIOBase):
    """Layer `layer_id`'s tar, streamed from the backend; a readable binary file. A stored
    layer that no longer matches its record fails a read with DigestMismatch naming it."""

    def __init__(self, native: Any, on_close: Callable[[], None], layer_id: str) -> None:
        super().__init__()
        self._native = native
        self._on_close: Callable[[], None] | None = on_close
        self._lock = threading.Lock()
        self.layer_id = layer_id

    def readable(self) -> bool:
        """True: the stream is read."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into `buffer`; the bytes read, 0 at the end of the tar. Raises
        :class:`~winlayer.DigestMismatch` naming the layer if its data was changed."""
        try:
            return int(self._native.readinto(buffer))
        except DigestMismatch as exc:
            raise exc.about(f"layer {self.layer_id!r}") from None

    def close(self) -> None:
        """Close the stream and end its count as an export of the layer (a remove is
        refused while it is open). Closing again does nothing."""
        with self._lock:
            on_close, self._on_close = self._on_close, None
        if on_close is None:
            return
        try:
            self._native.close()
        finally:
            super().close()
            on_close()


@dataclass(frozen=True)
class Diff:
    """One layer for :meth:`Driver.apply_diffs`: its id, its parent (a layer of the store,
    an earlier diff of the same call, or None), its tar (as for :meth:`Driver.apply_diff`:
    a path or a binary stream; or a function returning a context manager that gives one,
    called on the layer's thread when its turn comes, so that only the layers being
    imported hold their sources open) and the diffID it must have."""

    id: str
    parent: str | None
    source: Source | TarFeed | Callable[[], AbstractContextManager[Source | TarFeed]]
    digest: str | None = None


def _opened(
    source: Source | TarFeed | Callable[[], AbstractContextManager[Source | TarFeed]],
) -> AbstractContextManager[Source | TarFeed]:
    if callable(source) and not hasattr(source, "read"):  # an opener
        return source()
    return contextlib.nullcontext(cast("Source | TarFeed", source))


def _ticks(check: Callable[[], None], source: Source | TarFeed) -> ProgressCallback:
    """A progress callback that checks whether the import should stop, and tells a feed
    how far the importer read (for a slice of a file it reads itself)."""
    if not isinstance(source, TarFeed):
        return lambda _done: check()

    def tick(done: int) -> None:
        check()
        source.imported(done)

    return tick


def _check_digest(digest: str | None) -> None:
    if digest is not None and not DIGEST.fullmatch(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")


def _check_id(id: str) -> None:
    if (
        not id
        or id in (".", "..")
        or "/" in id
        or "\\" in id
        or "\0" in id
        or id.startswith(".")
        or id.endswith((REMOVING_SUFFIX, VIEW_SUFFIX))
    ):
        raise InvalidArgument(f"invalid layer id {id!r}")


def _view_id(rid: str, owner: str) -> str:
    """The folder of `owner`'s view of layer `rid`."""
    token = hashlib.sha256(owner.encode()).hexdigest()[:16]
    return f"{rid}-{token}{VIEW_SUFFIX}"


def _check_depth(layer_chain: list[str], parent: str | None, *, read_write: bool) -> None:
    """Refuse a new layer whose chain would pass :data:`chain.MAX_DEPTH` read-only layers
    (a read/write layer may top a full stack, as Docker's init and container layers do)."""
    depth = len(layer_chain) + 1
    if depth > chain.MAX_DEPTH + (1 if read_write else 0):
        kind = "read/write" if read_write else "read-only"
        raise ValueError(
            f"a {kind} layer on {parent!r} would be {depth} layers deep; a chain holds at "
            f"most {chain.MAX_DEPTH} read-only layers"
        )


def _exists_in_chain(path: str, parents: list[str]) -> bool:
    """Whether a layer path (``Files/...``) exists in one of the parent folders.

    Looks at the parents' folders on disk, case-insensitively as NTFS does. A path a
    parent deleted and this layer re-creates counts as modified, not added.
    """
    parts = path.split("/")
    return any(_exists_case_insensitive(Path(parent), parts) for parent in parents)


def _exists_case_insensitive(base: Path, parts: list[str]) -> bool:
    current = base
    for part in parts:
        candidate = current / part
        if candidate.exists():
            current = candidate
            continue
        try:
            names = os.listdir(current)
        except (FileNotFoundError, NotADirectoryError):
            return False
        lowered = part.lower()
        match = next((n for n in names if n.lower() == lowered), None)
        if match is None:
            return False
        current = current / match
    return True
