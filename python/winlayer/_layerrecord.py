"""The layers one image operation (``load``, ``commit``, ``append``) brings into the
store: imported in chain order, recorded in the image store at the end, removed again if
the operation fails.

A new layer's driver id is its chain ID's hex (:func:`~winlayer._archive_plan.layer_id_for`),
so that every way of making a layer agrees: a layer that an ``append`` made and a ``load``
of its saved archive brings again is the same layer, imported once.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

from ._archive_plan import layer_id_for
from ._pipeline import TarFeed, digest_of
from .errors import DigestMismatch, LayerInUse, WinlayerError
from .imagestore import ImageStore, StoredLayer

if TYPE_CHECKING:
    from .driver import Driver

log = logging.getLogger(__name__)


class LayerRecorder:
    """Imports layers for one operation and undoes its imports on failure.

    :meth:`known` adopts a layer the store and driver hold already, :meth:`import_layer`
    imports one through a :class:`~winlayer._pipeline.TarFeed`; :meth:`record_layers`
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
        layer_id = layer_id_for(chain_id)
        parent_id = self.layers[parent].layer_id if parent else None
        try:
            size = self.driver.apply_diff(layer_id, parent_id, feed, digest=diff_id)
            if feed.handed_over:
                self.created.append(layer_id)
                feed.finish()
                tar_size = feed.tar_size
            else:  # another process imported it first (or it survived a crash)
                tar_size = self._measure(layer_id, diff_id)
        finally:
            feed.close()
        stored = StoredLayer(chain_id, layer_id, diff_id, parent, size, tar_size)
        self.layers[chain_id] = stored
        return stored

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
