"""The layers one image operation (``load``, ``commit``, ``append``) brings into the
store: imported in chain order, recorded in the image store at the end, removed again if
the operation fails.

A new layer's driver id is its chain ID's hex (:func:`~winlayer._archive_plan.layer_id_for`),
so that every way of making a layer agrees: a layer that an ``append`` made and a ``load``
of its saved archive brings again is the same layer, imported once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ._archive_plan import layer_id_for
from ._pipeline import TarFeed, digest_of
from .driver import Diff, Driver
from .errors import DigestMismatch, LayerInUse, WinlayerError
from .imagestore import ImageStore, StoredLayer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewLayer:
    """A layer to import: its chain ID, diffID and parent's chain ID, the function that
    makes its feed (called on its import thread, when its turn comes) and the name of
    its blob for errors."""

    chain_id: str
    diff_id: str
    parent: str | None
    feed: Callable[[], TarFeed]
    name: str = ""


class LayerRecorder:
    """Imports layers for one operation and undoes its imports on failure.

    :meth:`known` adopts a layer the store and driver hold already, :meth:`import_layer`
    imports one through a :class:`~winlayer._pipeline.TarFeed` and :meth:`import_layers`
    several, some at the same time; :meth:`record_layers`
    (inside the operation's one store transaction) records them all, and
    :meth:`rollback` removes the layers this operation created.
    """

    def __init__(self, driver: Driver, store: ImageStore) -> None:
        self.driver = driver
        self.store = store
        self.layers: dict[str, StoredLayer] = {}  # chain ID -> layer, for this operation
        self.created: list[str] = []  # driver layer ids this operation made

    def known(self, chain_id: str) -> StoredLayer | None:
        """The layer of `chain_id` if the store and the driver hold it (then it is not
        imported again), else None."""
        stored = self.store.layer(chain_id)
        if stored is not None and self.driver.exists(stored.layer_id):
            log.info("layer %s is in the store already; not importing it", chain_id)
            self.layers[chain_id] = stored
            return stored
        return None

    def import_layer(
        self, chain_id: str, diff_id: str, parent: str | None, feed: TarFeed
    ) -> StoredLayer:
        """Import `feed` as the layer of `chain_id` on the layer of chain ID `parent` (one
        of this operation's layers); the tar must have `diff_id`. Closes the feed."""
        try:
            self.import_layers([NewLayer(chain_id, diff_id, parent, lambda: feed)], jobs=1)
        finally:
            feed.close()  # also when the import did not start
        return self.layers[chain_id]

    def import_layers(
        self,
        layers: Sequence[NewLayer],
        *,
        jobs: int | None = None,
        on_commit: Callable[[StoredLayer], None] | None = None,
    ) -> None:
        """Import `layers` (in chain order; a parent is one of this operation's layers or
        an earlier one of `layers`), up to `jobs` at a time, as
        :meth:`Driver.apply_diffs <winlayer.driver.Driver.apply_diffs>` does;
        `on_commit` is called with each layer once it is committed, parents first."""
        tar_sizes: dict[str, int] = {}

        def committed(i: int, size: int) -> None:
            layer = layers[i]
            stored = StoredLayer(
                layer.chain_id,
                layer_id_for(layer.chain_id),
                layer.diff_id,
                layer.parent,
                size,
                tar_sizes[layer.chain_id],
            )
            self.layers[layer.chain_id] = stored
            if on_commit is not None:
                on_commit(stored)

        diffs = [
            Diff(
                layer_id_for(layer.chain_id),
                self._layer_id(layer.parent),
                functools.partial(self._fed, layer, tar_sizes),
                layer.diff_id,
            )
            for layer in layers
        ]
        self.driver.apply_diffs(diffs, jobs=jobs, on_commit=committed)

    def _layer_id(self, chain_id: str | None) -> str | None:
        """The driver id of a parent: a layer of this operation, or one being imported."""
        if chain_id is None:
            return None
        stored = self.layers.get(chain_id)
        return stored.layer_id if stored is not None else layer_id_for(chain_id)

    @contextlib.contextmanager
    def _fed(self, layer: NewLayer, tar_sizes: dict[str, int]) -> Iterator[TarFeed]:
        """The feed of `layer`, on its import thread; afterwards the feed is verified to
        its end and the tar's size noted. A diffID mismatch names the layer's blob."""
        layer_id = layer_id_for(layer.chain_id)
        started = time.monotonic()
        feed = layer.feed()
        try:
            try:
                yield feed
            except DigestMismatch as exc:
                if not layer.name or exc.expected != layer.diff_id:
                    raise  # the blob's own digest: the feed named the blob
                raise DigestMismatch(
                    exc.expected, exc.actual, f"the layer in {layer.name!r}"
                ) from None
            if feed.handed_over:
                self.created.append(layer_id)
                feed.finish()
                tar_sizes[layer.chain_id] = feed.tar_size
            else:  # another process imported it first (or it survived a crash)
                tar_sizes[layer.chain_id] = self._measure(layer_id, layer.diff_id)
            log.info(
                "imported layer %s (diffID %s verified, %d bytes of tar) in %.2f s",
                layer_id[:12],
                layer.diff_id,
                tar_sizes[layer.chain_id],
                time.monotonic() - started,
            )
        finally:
            feed.close()

    def keep(self, chain_id: str) -> None:
        """Record an imported layer in the store now, in a transaction of its own, so that
        a later failure keeps it: it is no longer this operation's to undo (a pull keeps
        its complete layers for the next try)."""
        stored = self.layers[chain_id]
        with self.store.transaction() as db:
            self.store.add_layer(db, stored)
        if stored.layer_id in self.created:
            self.created.remove(stored.layer_id)

    def _measure(self, layer_id: str, diff_id: str) -> int:
        """Byte size of a stored layer's original tar, checked against its diffID."""
        with self.driver.diff(layer_id, original=True) as stream:
            actual, size = digest_of(stream)
        if actual != diff_id:
            raise DigestMismatch(diff_id, actual, f"layer {layer_id!r}")
        return size

    def record_layers(self, db: sqlite3.Connection) -> None:
        """Record this operation's layers inside an open store transaction; a layer
        removed meanwhile (by another process) fails the operation."""
        for stored in self.layers.values():
            if not self.driver.exists(stored.layer_id):
                raise WinlayerError(
                    f"layer {stored.layer_id} was removed while the image was made; "
                    "run the command again"
                )
            self.store.add_layer(db, stored)

    def rollback(self) -> None:
        """Removes the layers this operation created (newest first), unless something
        now depends on them (``Driver.remove`` refuses a layer another layer or a
        recorded image uses, checked inside the image store's transaction)."""
        for layer_id in reversed(self.created):
            try:
                self.driver.remove(layer_id)
            except LayerInUse:
                log.info("keeping layer %s: something now depends on it", layer_id)
            except Exception:
                log.warning(
                    "could not remove layer %s after a failed operation", layer_id, exc_info=True
                )
