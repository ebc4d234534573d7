"""The image and tag store: a SQLite database under the driver's home.

``<home>/.winlayer/images.db`` holds three tables:

- ``images``: id (64 hex digits: the sha256 of the config, or for a host base image the
  seed's SHA-384-derived id), the config bytes exactly as loaded (so that ``save`` gives
  back the same digest), created time, architecture, OS, size, and the layer stack as a
  JSON list of chain IDs, bottom first;
- ``tags``: ``name:tag`` -> image id;
- ``layers``: chain ID -> the driver's layer id, the diffID, the parent chain ID, the
  bytes of file data and the byte size of the uncompressed layer tar;
- ``sandboxes``: a sandbox's driver layer id -> the image it was created from (what
  ``commit`` builds on, and what keeps the image from being removed);
- ``blob_sources``: the registry repositories known to hold a blob (pushed or pulled
  there), from which ``push`` mounts it instead of uploading it again.

Removing an image drops its row and tags in one transaction; the records of its layers
stay until their driver layers are gone (:meth:`ImageStore.drop_layer`), so that a crash
in between leaves layer records no image uses, which the next ``prune`` finds.

Several processes may share a store: the database runs in WAL mode with a busy timeout,
and every change is one ``BEGIN IMMEDIATE`` transaction. Any SQLite error is
:class:`~winlayer.StoreCorrupt` naming the database file (a lock held past the busy
timeout: ``TimeoutError``). The schema is versioned with
``PRAGMA user_version``; opening a store runs the migration steps it has not seen yet, in
order, inside one transaction, and refuses a store written by a newer winlayer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ._reference import DEFAULT_TAG, check_name, check_tag
from ._state import write_denied
from .errors import InvalidArgument, StoreCorrupt, WinlayerError

IMAGE_DB = Path(".winlayer") / "images.db"
BUSY_TIMEOUT_S = 60.0

_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_LAYER_COLUMNS = "chain_id, layer_id, diff_id, parent, size, tar_size"
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8  # primary result codes


class ImageNotFound(WinlayerError, LookupError):
    """No image matches this id, id prefix or ``name:tag``."""

    def __init__(self, ref: str, message: str = "image not found") -> None:
        super().__init__(f"{message}: {ref!r}")
        self.ref = ref


@dataclass(frozen=True)
class Image:
    """One image record.

    `layers` are chain IDs (``sha256:...``), bottom layer first; a host base image
    (registered by :func:`winlayer.images.restore_custom_images`) has none: its single
    layer is the driver layer named by the image id itself (an alternate ID).
    """

    id: str
    config: bytes
    created: str
    architecture: str
    os: str
    size: int
    layers: tuple[str, ...] = ()
    tags: tuple[str, ...] = field(default=(), compare=False)  # "name:tag", sorted

    def as_dict(self) -> dict[str, Any]:
        """The record without its config bytes, for JSON output (``images ls --json``): its
        id as a digest, ``sha256:<hex>`` (as docker's image ids)."""
        return {
            "id": f"sha256:{self.id}",
            "tags": list(self.tags),
            "created": self.created,
            "architecture": self.architecture,
            "os": self.os,
            "size": self.size,
            "layers": list(self.layers),
        }


@dataclass(frozen=True)
class StoredLayer:
    """A layer the image store recorded: its `chain_id`, the driver's `layer_id`, its
    `diff_id`, the chain ID of its `parent` (None for a base layer), `size` (bytes of file
    data) and `tar_size` (bytes of its uncompressed tar)."""

    chain_id: str
    layer_id: str  # the driver's layer id
    diff_id: str
    parent: str | None  # chain ID of the layer below
    size: int  # bytes of file data
    tar_size: int  # bytes of the uncompressed layer tar


def parse_reference(ref: str) -> tuple[str, str]:
    """``name[:tag]`` -> (name, tag); the tag defaults to ``latest``. Raises ValueError."""
    if "@" in ref:
        raise InvalidArgument(f"image references by digest are not supported: {ref!r}")
    name, tag = ref, DEFAULT_TAG
    head, sep, tail = ref.rpartition(":")
    if sep and "/" not in tail:
        name, tag = head, tail
    check_name(name)
    check_tag(tag)
    return name, tag


def normalize_id(image_id: str) -> str:
    """``sha256:<hex>`` or ``<hex>`` -> ``<hex>``; ValueError for anything else."""
    hex_id = image_id.removeprefix("sha256:")
    if not _HEX64.fullmatch(hex_id):
        raise InvalidArgument(f"invalid image id {image_id!r}: expected 64 lowercase hex digits")
    return hex_id


# -- schema -------------------------------------------------------------------------------


def _schema_1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE images (
            id TEXT PRIMARY KEY,
            config BLOB NOT NULL,
            created TEXT NOT NULL,
            architecture TEXT NOT NULL,
            os TEXT NOT NULL,
            size INTEGER NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE tags (
            name TEXT NOT NULL,
            tag TEXT NOT NULL,
            image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            PRIMARY KEY (name, tag)
        )"""
    )


def _schema_2(db: sqlite3.Connection) -> None:
    """Loaded images: the layer table (dedup by chain ID) and each image's layer stack."""
    db.execute(
        """CREATE TABLE layers (
            chain_id TEXT PRIMARY KEY,
            layer_id TEXT NOT NULL UNIQUE,
            diff_id TEXT NOT NULL,
            parent TEXT REFERENCES layers(chain_id),
            size INTEGER NOT NULL,
            tar_size INTEGER NOT NULL
        )"""
    )
    db.execute("ALTER TABLE images ADD COLUMN layers TEXT NOT NULL DEFAULT '[]'")
    db.execute("CREATE INDEX tags_by_image ON tags(image_id)")


def _schema_3(db: sqlite3.Connection) -> None:
    """Sandboxes made from an image. No foreign key: a sandbox is the driver's, and a row
    whose sandbox is gone is ignored (see :meth:`ImageStore.sandbox_image`)."""
    db.execute(
        """CREATE TABLE sandboxes (
            layer_id TEXT PRIMARY KEY,
            image_id TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX sandboxes_by_image ON sandboxes(image_id)")


def _schema_4(db: sqlite3.Connection) -> None:
    """Where blobs are known to be, registry by registry (for cross-repository mounts)."""
    db.execute(
        """CREATE TABLE blob_sources (
            digest TEXT NOT NULL,
            registry TEXT NOT NULL,
            repository TEXT NOT NULL,
            PRIMARY KEY (digest, registry, repository)
        )"""
    )


#: Migration steps; step ``n`` takes a store from version ``n - 1`` to ``n``. A new store
#: runs them all, so every step is exercised on every fresh database.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _schema_1,
    _schema_2,
    _schema_3,
    _schema_4,
)
SCHEMA_VERSION = len(MIGRATIONS)


class ImageStore:
    """The default image and tag store; implements :class:`winlayer.images.Tagger` and
    :class:`winlayer.images.Recorder`.

    ``ImageStore(home)`` opens (and creates or migrates) ``<home>/.winlayer/images.db``.
    Safe to share between threads; several processes may open the same store. Where this
    process may not write (a read-only mount, no permission) the database is opened
    read-only: queries work, changes raise PermissionError naming it.
    """

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.path = Path(home).absolute() / IMAGE_DB
        self._lock = threading.RLock()
        #: Why this process may not change the store (an errno), or 0.
        self.write_denied = write_denied(self.path.parent) if self.path.parent.is_dir() else 0
        if not self.write_denied:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # A read-only store that never recorded an image has none: an empty database in
        # memory answers the reads; changes are refused in transaction().
        self._none_recorded = bool(self.write_denied) and not self.path.exists()
        self._migrated = False
        with _errors_named(self.path):
            self._db = sqlite3.connect(
                ":memory:" if self._none_recorded else self._uri(),
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        try:
            with self._sqlite() as db:
                db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                if not self.write_denied:
                    db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
                db.execute("PRAGMA foreign_keys = ON")
                self._migrate()
                self._migrated = True
        except BaseException:
            self._db.close()
            raise

    def _uri(self) -> str:
        """The database's URI: read-only where this process may not write. Without a
        ``-wal`` file every change is in the database file, which is then opened
        ``immutable`` (a WAL database cannot be read without creating its ``-shm`` file)."""
        uri = self.path.as_uri()
        if not self.write_denied:
            return uri
        wal = self.path.with_name(self.path.name + "-wal")
        return uri + ("?mode=ro" if wal.exists() else "?mode=ro&immutable=1")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ImageStore({str(self.path)!r})"

    @property
    def schema_version(self) -> int:
        """The version of the database's schema (SQLite's ``user_version``)."""
        with self._sqlite() as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    @contextlib.contextmanager
    def _sqlite(self) -> Iterator[sqlite3.Connection]:
        """The connection, held under the store's lock: every use of the database goes
        through here, so that any SQLite error (a damaged page, a dropped table, a
        truncated file) comes out as one error naming the database file."""
        with self._lock, _errors_named(self.path, self.write_denied or errno.EACCES):
            yield self._db

    def _migrate(self) -> None:
        if self.write_denied and not self._none_recorded:
            self._check_version(self.schema_version)
            return
        with self.transaction() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            self._check_version(version)
            for step in MIGRATIONS[version:]:
                step(db)
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(
                f"image store has schema version {version}, newer than this winlayer "
                f"understands ({SCHEMA_VERSION}); upgrade winlayer",
                str(self.path),
            )
        if version < SCHEMA_VERSION and self.write_denied and not self._none_recorded:
            raise PermissionError(
                self.write_denied,
                f"image store has schema version {version} and must be upgraded to "
                f"{SCHEMA_VERSION}, but it is read-only here",
                str(self.path),
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: it waits for other writers, so a
        read inside it cannot be made stale by another process before the commit)."""
        if self.write_denied and self._migrated:
            # Refused before SQLite is asked: an immutable database would let a
            # transaction that happens to write nothing pass.
            message = "image store is read-only here"
            if self._none_recorded:
                message += " (no image store exists, and none can be made)"
            raise PermissionError(self.write_denied, message, str(self.path))
        with self._sqlite() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._sqlite() as db:
            return list(db.execute(sql, args).fetchall())

    # -- Recorder -------------------------------------------------------------------

    def exists(self, image_id: str) -> bool:
        """Whether an image with this id (hex or ``sha256:<hex>``) is recorded."""
        return bool(self._query("SELECT 1 FROM images WHERE id = ?", (normalize_id(image_id),)))

    def register(self, image: Image) -> None:
        """Record an image; registering an id that exists already changes nothing."""
        with self.transaction() as db:
            self.insert_image(db, image)

    def insert_image(self, db: sqlite3.Connection, image: Image) -> None:
        """Record `image` inside an open :meth:`transaction` (no-op if it exists)."""
        missing = [c for c in image.layers if not self._layer_row(db, c)]
        if missing:
            raise ValueError(
                f"image {image.id} names layers not in the store: {', '.join(missing)}"
            )
        db.execute(
            "INSERT OR IGNORE INTO images (id, config, created, architecture, os, size, layers)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                normalize_id(image.id),
                image.config,
                image.created,
                image.architecture,
                image.os,
                image.size,
                json.dumps(list(image.layers)),
            ),
        )

    # -- Tagger ---------------------------------------------------------------------

    def tag(self, name: str, tag: str, image_id: str, *, force: bool = False) -> None:
        """Point ``name:tag`` at an image. Without `force`, moving an existing tag to
        another image is refused (ValueError)."""
        with self.transaction() as db:
            self.set_tag(db, name, tag, image_id, force=force)

    def set_tag(
        self, db: sqlite3.Connection, name: str, tag: str, image_id: str, *, force: bool
    ) -> None:
        """:meth:`tag` inside an open :meth:`transaction`."""
        check_name(name)
        check_tag(tag)
        hex_id = normalize_id(image_id)
        if not db.execute("SELECT 1 FROM images WHERE id = ?", (hex_id,)).fetchone():
            raise ImageNotFound(image_id)
        row = db.execute(
            "SELECT image_id FROM tags WHERE name = ? AND tag = ?", (name, tag)
        ).fetchone()
        if row and row[0] != hex_id and not force:
            raise ValueError(f"tag {name}:{tag} already names image {row[0]}")
        db.execute(
            "INSERT INTO tags (name, tag, image_id) VALUES (?, ?, ?)"
            " ON CONFLICT (name, tag) DO UPDATE SET image_id = excluded.image_id",
            (name, tag, hex_id),
        )

    def untag(self, ref: str) -> str:
        """Remove the tag ``name[:tag]``; return the id it named."""
        name, tag = parse_reference(ref)
        with self.transaction() as db:
            row = db.execute(
                "SELECT image_id FROM tags WHERE name = ? AND tag = ?", (name, tag)
            ).fetchone()
            if not row:
                raise ImageNotFound(ref, "no such tag")
            self.remove_tag(db, f"{name}:{tag}")
            return str(row[0])

    def remove_tag(self, db: sqlite3.Connection, ref: str) -> None:
        """Drop the tag ``name[:tag]`` inside an open :meth:`transaction`."""
        name, tag = parse_reference(ref)
        db.execute("DELETE FROM tags WHERE name = ? AND tag = ?", (name, tag))

    def delete_image(self, db: sqlite3.Connection, image_id: str) -> None:
        """Drop an image and its tags inside an open :meth:`transaction`. Its layer
        records stay: :meth:`drop_layer` removes each once its driver layer is gone."""
        hex_id = normalize_id(image_id)
        db.execute("DELETE FROM tags WHERE image_id = ?", (hex_id,))
        db.execute("DELETE FROM images WHERE id = ?", (hex_id,))

    # -- queries --------------------------------------------------------------------

    def images(self) -> list[Image]:
        """Every image, newest first."""
        rows = self._query(
            "SELECT id, config, created, architecture, os, size, layers FROM images"
            " ORDER BY created DESC, id"
        )
        tags = self._all_tags()
        return [self._image(row, tags.get(str(row[0]), ())) for row in rows]

    def get(self, ref: str) -> Image:
        """The image named by a full id (with or without ``sha256:``), ``name[:tag]``,
        or a unique id prefix; :class:`ImageNotFound` otherwise."""
        image_id = self.resolve(ref)
        rows = self._query(
            "SELECT id, config, created, architecture, os, size, layers FROM images WHERE id = ?",
            (image_id,),
        )
        if not rows:
            raise ImageNotFound(ref)
        return self._image(rows[0], self._all_tags().get(image_id, ()))

    def resolve(self, ref: str) -> str:
        """The image id `ref` names (see :meth:`get`)."""
        return self.lookup(ref)[0]

    def lookup(self, ref: str) -> tuple[str, str | None]:
        """The image id `ref` names (see :meth:`get`), and the ``name:tag`` it was found
        by, or None when `ref` is an id or id prefix."""
        with contextlib.suppress(ValueError):
            hex_id = normalize_id(ref)
            if self.exists(hex_id):
                return hex_id, None
        with contextlib.suppress(ValueError):
            name, tag = parse_reference(ref)
            rows = self._query("SELECT image_id FROM tags WHERE name = ? AND tag = ?", (name, tag))
            if rows:
                return str(rows[0][0]), f"{name}:{tag}"
        prefix = ref.removeprefix("sha256:")
        if re.fullmatch(r"[0-9a-f]{1,63}", prefix):
            rows = self._query(
                "SELECT id FROM images WHERE substr(id, 1, ?) = ?", (len(prefix), prefix)
            )
            if len(rows) > 1:
                raise ImageNotFound(ref, "ambiguous image id prefix")
            if rows:
                return str(rows[0][0]), None
        raise ImageNotFound(ref)

    def layer(self, chain_id: str) -> StoredLayer | None:
        """The recorded layer of this chain ID, or None."""
        with self._sqlite() as db:
            return self._layer_row(db, chain_id)

    def layers(self) -> list[StoredLayer]:
        """Every recorded layer, sorted by chain ID."""
        rows = self._query(f"SELECT {_LAYER_COLUMNS} FROM layers ORDER BY chain_id")
        return [_stored_layer(row) for row in rows]

    def add_layer(self, db: sqlite3.Connection, layer: StoredLayer) -> None:
        """Record a layer inside an open :meth:`transaction` (no-op if it exists)."""
        db.execute(
            "INSERT OR IGNORE INTO layers (chain_id, layer_id, diff_id, parent, size, tar_size)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                layer.chain_id,
                layer.layer_id,
                layer.diff_id,
                layer.parent,
                layer.size,
                layer.tar_size,
            ),
        )

    def image_users(self, db: sqlite3.Connection, layer_ids: Collection[str]) -> list[str]:
        """The images (each by its first tag, else its short id) whose layer stack holds a
        recorded layer with one of these driver ids, or whose id is one of them (a host
        base image's layer is the alias named by its id); read inside a
        :meth:`transaction` so that no load records one meanwhile."""
        ids = set(layer_ids)
        chains = {
            str(row[0])
            for row in db.execute("SELECT chain_id, layer_id FROM layers").fetchall()
            if row[1] in ids
        }
        users = []
        for image_id, stack in db.execute("SELECT id, layers FROM images ORDER BY id").fetchall():
            if image_id in ids or chains.intersection(self._stack(image_id, stack)):
                tags = self._all_tags().get(str(image_id), ())
                users.append(tags[0] if tags else str(image_id)[:12])
        return users

    def drop_layer(self, db: sqlite3.Connection, chain_id: str) -> bool:
        """Drop the record of layer `chain_id` inside an open :meth:`transaction`, unless
        an image uses it or another record names it as parent; return whether it went."""
        if self._layer_row(db, chain_id) is None:
            return False
        if db.execute("SELECT 1 FROM layers WHERE parent = ?", (chain_id,)).fetchone():
            return False
        for image_id, stack in db.execute("SELECT id, layers FROM images").fetchall():
            if chain_id in self._stack(image_id, stack):
                return False
        db.execute("DELETE FROM layers WHERE chain_id = ?", (chain_id,))
        return True

    # -- sandboxes ------------------------------------------------------------------

    def record_sandbox(self, db: sqlite3.Connection, layer_id: str, image_id: str) -> None:
        """Record, inside an open :meth:`transaction`, that sandbox `layer_id` was created
        from `image_id` (replacing what an earlier sandbox of that id recorded)."""
        hex_id = normalize_id(image_id)
        if not db.execute("SELECT 1 FROM images WHERE id = ?", (hex_id,)).fetchone():
            raise ImageNotFound(image_id)
        db.execute(
            "INSERT INTO sandboxes (layer_id, image_id) VALUES (?, ?)"
            " ON CONFLICT (layer_id) DO UPDATE SET image_id = excluded.image_id",
            (layer_id, hex_id),
        )

    def forget_sandbox(self, db: sqlite3.Connection, layer_id: str) -> None:
        """Drop the record of sandbox `layer_id` inside an open :meth:`transaction`."""
        db.execute("DELETE FROM sandboxes WHERE layer_id = ?", (layer_id,))

    def sandbox_image(self, layer_id: str) -> str | None:
        """The id of the image sandbox `layer_id` was created from, if one was recorded.
        The caller checks that the sandbox still exists (the driver owns it)."""
        rows = self._query("SELECT image_id FROM sandboxes WHERE layer_id = ?", (layer_id,))
        return str(rows[0][0]) if rows else None

    def sandboxes(self) -> dict[str, str]:
        """Every recorded sandbox: driver layer id -> image id."""
        return {str(k): str(v) for k, v in self._query("SELECT layer_id, image_id FROM sandboxes")}

    # -- blob sources ---------------------------------------------------------------

    def record_blob_source(self, digest: str, registry: str, repository: str) -> None:
        """Remember that `registry`/`repository` holds blob `digest`."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO blob_sources (digest, registry, repository)"
                " VALUES (?, ?, ?)",
                (digest, registry, repository),
            )

    def blob_sources(self, digest: str, registry: str) -> list[str]:
        """The repositories of `registry` known to hold blob `digest`."""
        rows = self._query(
            "SELECT repository FROM blob_sources WHERE digest = ? AND registry = ?"
            " ORDER BY repository",
            (digest, registry),
        )
        return [str(row[0]) for row in rows]

    @staticmethod
    def _layer_row(db: sqlite3.Connection, chain_id: str) -> StoredLayer | None:
        row = db.execute(
            f"SELECT {_LAYER_COLUMNS} FROM layers WHERE chain_id = ?",
            (chain_id,),
        ).fetchone()
        return _stored_layer(row) if row else None

    def _stack(self, image_id: object, layers: object) -> list[str]:
        """An image's recorded layer list (JSON), or StoreCorrupt naming the image."""
        try:
            stack = json.loads(str(layers))
        except ValueError:
            stack = None
        if not isinstance(stack, list):
            raise StoreCorrupt(f"image {image_id} has an unreadable layer list", str(self.path))
        return [str(c) for c in stack]

    def _all_tags(self) -> dict[str, tuple[str, ...]]:
        found: dict[str, list[str]] = {}
        for image_id, name, tag in self._query(
            "SELECT image_id, name, tag FROM tags ORDER BY name, tag"
        ):
            found.setdefault(str(image_id), []).append(f"{name}:{tag}")
        return {k: tuple(v) for k, v in found.items()}

    def _image(self, row: tuple[object, ...], tags: tuple[str, ...]) -> Image:
        image_id, config, created, arch, os_name, size, layers = row
        stack = self._stack(image_id, layers)
        return Image(
            id=str(image_id),
            config=bytes(config)
            if isinstance(config, (bytes, bytearray, memoryview))
            else str(config).encode(),
            created=str(created),
            architecture=str(arch),
            os=str(os_name),
            size=int(str(size)),
            layers=tuple(stack),
            tags=tags,
        )


@contextlib.contextmanager
def _errors_named(path: Path, read_only_errno: int = errno.EACCES) -> Iterator[None]:
    """Re-raise a SQLite error as what it means for the store at `path`: it is read-only
    (PermissionError with `read_only_errno`), it stayed locked past the busy timeout
    (TimeoutError), else it is damaged (StoreCorrupt). Python before 3.11 has no result
    codes: every error is StoreCorrupt there."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
        if code == _SQLITE_READONLY:
            message = f"image store is read-only here ({exc})"
            raise PermissionError(read_only_errno, message, str(path)) from None
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            message = f"image store stayed locked ({exc})"
            raise TimeoutError(errno.ETIMEDOUT, message, str(path)) from None
        raise StoreCorrupt(f"unreadable image store ({exc})", str(path)) from None


def _stored_layer(row: tuple[object, ...]) -> StoredLayer:
    chain_id, layer_id, diff_id, parent, size, tar_size = row
    return StoredLayer(
        chain_id=str(chain_id),
        layer_id=str(layer_id),
        diff_id=str(diff_id),
        parent=str(parent) if parent is not None else None,
        size=int(str(size)),
        tar_size=int(str(tar_size)),
    )
