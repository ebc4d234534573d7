"""The driver's own bookkeeping, kept under ``<home>/.winlayer/`` so that every process
sharing a home sees it:

- ``locks/<id>.lock``: one lock per layer id; every structural change and every mount
  state change of that layer happens under it.
- ``mounts/<id>.json``: who holds the layer mounted (get/put counts per holder), open
  diff streams per process, and whether the backend has it activated and prepared. A
  holder is a process (``pid:<n>``: it stops counting when it dies, its entries are
  dropped when the state is next read) or a name (``name:<s>``: it holds until released
  by that name, as ``winlayer mount`` from the command line does).
- ``staging/load-<pid>-<n>/``: files held during one operation (an archive load's
  blobs that arrive before their turn), on the layers' volume; removed by the operation,
  or by the next one once its process has died.
- ``pending/<id>``: an intent marker written before a create or an import and removed
  when it is complete; a marker whose layer lock is free names an operation that died
  half-way, and its layer is destroyed by the sweep.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import atomic_write, partial_writer
from ._locks import FileLock, pid_alive
from .backend import Backend
from .errors import StoreCorrupt, WinlayerError

log = logging.getLogger(__name__)

STATE_DIR = ".winlayer"
_STAGING_PREFIX = "load-"


@dataclass
class MountState:
    holders: dict[str, int] = field(default_factory=dict)  # holder -> get count
    exports: dict[int, int] = field(default_factory=dict)  # pid -> open diff streams
    activated: bool = False
    prepared: bool = False
    path: str = ""

    @property
    def mounts(self) -> int:
        return sum(self.holders.values())

    @property
    def in_use(self) -> bool:
        return bool(self.holders or self.exports)

    def drop_dead(self) -> None:
        self.holders = {h: n for h, n in self.holders.items() if n > 0 and _holder_alive(h)}
        self.exports = {p: n for p, n in self.exports.items() if n > 0 and pid_alive(p)}

    def is_idle(self) -> bool:
        return not (self.in_use or self.activated or self.prepared)


class StateStore:
    """The state of the store in `home`. A store this process may only read
    (`read_only`) is read as it is: nothing is created in it, its locks are taken
    read-only (see :class:`FileLock`)."""

    def __init__(self, home: Path, *, read_only: bool = False) -> None:
        self.root = home / STATE_DIR
        self.read_only = read_only
        if not read_only:
            for sub in ("locks", "mounts", "pending"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)

    def lock(self, layer_id: str) -> FileLock:
        return FileLock(self.root / "locks" / f"{layer_id}.lock", read_only=self.read_only)

    def load(self, layer_id: str) -> MountState:
        path = self.root / "mounts" / f"{layer_id}.json"
        try:
            raw = json.loads(path.read_bytes())
            state = MountState(
                holders={str(k): int(v) for k, v in raw.get("holders", {}).items()},
                exports={int(k): int(v) for k, v in raw.get("exports", {}).items()},
                activated=bool(raw.get("activated", False)),
                prepared=bool(raw.get("prepared", False)),
                path=str(raw.get("path", "")),
            )
        except FileNotFoundError:
            return MountState()
        except (ValueError, TypeError, AttributeError) as exc:
            raise StoreCorrupt(f"unreadable mount state ({exc})", str(path)) from None
        state.drop_dead()
        return state

    def save(self, layer_id: str, state: MountState) -> None:
        path = self.root / "mounts" / f"{layer_id}.json"
        if state.is_idle():
            path.unlink(missing_ok=True)
            return
        data = {
            "holders": dict(state.holders),
            "exports": {str(k): v for k, v in state.exports.items()},
            "activated": state.activated,
            "prepared": state.prepared,
            "path": state.path,
        }
        # Mount state is about live processes: atomic, not synced (see atomic_write).
        atomic_write(path, json.dumps(data, sort_keys=True).encode(), durable=False, mode=0o666)

    def mounted_ids(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "mounts").glob("*.json"))

    def mark_pending(self, layer_id: str) -> None:
        atomic_write(self.root / "pending" / layer_id, str(os.getpid()).encode(), mode=0o666)

    def clear_pending(self, layer_id: str) -> None:
        (self.root / "pending" / layer_id).unlink(missing_ok=True)

    def pending_ids(self) -> list[str]:
        # A dot name is a marker being written (atomic_write's temporary file): no layer
        # id starts with a dot.
        names = (p.name for p in (self.root / "pending").iterdir())
        return sorted(name for name in names if not name.startswith("."))

    def sweep_partial_files(self) -> list[str]:
        """Remove the temporary files of markers and mount records whose writer died
        before renaming them (see :func:`~winlayer._common.atomic_write`); their names."""
        removed = []
        for sub in ("pending", "mounts"):
            folder = self.root / sub
            for entry in folder.iterdir() if folder.is_dir() else ():
                pid = partial_writer(entry.name)
                if pid is not None and not pid_alive(pid):
                    entry.unlink(missing_ok=True)
                    removed.append(f"{sub}/{entry.name}")
        return removed

    def new_staging_dir(self) -> Path:
        """A new folder name under ``staging/`` for this process (not created); the
        folders of processes that died are removed first."""
        root = self.root / "staging"
        if root.is_dir():
            for entry in root.iterdir():
                pid = entry.name.removeprefix(_STAGING_PREFIX).split("-", 1)[0]
                if (
                    entry.name.startswith(_STAGING_PREFIX)
                    and pid.isdigit()
                    and not pid_alive(int(pid))
                ):
                    shutil.rmtree(entry, ignore_errors=True)
        return root / f"{_STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


class Mounts:
    """The mount lifecycle of a store's layers over `backend`: the first holder activates
    and prepares a layer, the last one unprepares and deactivates it. The state is written
    ahead of each backend call: a process killed in the call leaves the layer marked
    "maybe activated/prepared", and the release of an abandoned mount (cleanup, remove)
    undoes it. The caller holds the layer's lock; `ref` names a layer to the backend
    (driver info, id)."""

    def __init__(
        self, state: StateStore, backend: Backend, ref: Callable[[str], tuple[Any, str]]
    ) -> None:
        self._state = state
        self._backend = backend
        self._ref = ref

    def get(self, rid: str, owner: str, parents: list[str], folder: str) -> str:
        """Add a hold of `owner`, mounting the layer first if nobody has; its path."""
        state = self._state.load(rid)
        if not state.prepared:
            activated_here = False
            if not state.activated:
                state.activated = True
                self._state.save(rid, state)
                try:
                    self._backend.activate_layer(*self._ref(rid))
                except BaseException:
                    state.activated = False
                    self._state.save(rid, state)
                    raise
                activated_here = True
            state.prepared = True
            self._state.save(rid, state)
            prepared = False
            try:
                self._backend.prepare_layer(*self._ref(rid), parents)
                prepared = True
                state.path = self._backend.get_layer_mount_path(*self._ref(rid))
            except BaseException:
                self._undo(rid, state, prepared, activated_here)
                raise
            state.path = state.path or folder
        state.holders[owner] = state.holders.get(owner, 0) + 1
        self._state.save(rid, state)
        return state.path

    def put(self, rid: str, owner: str, not_held: str) -> None:
        """Drop a hold of `owner` (WinlayerError(`not_held`) if it has none); the last
        one unmounts the layer. If the backend fails, the count stays true: a layer still
        prepared stays counted, an unprepared one no longer is."""
        state = self._state.load(rid)
        if state.holders.get(owner, 0) == 0:
            raise WinlayerError(not_held)
        if state.mounts > 1:
            state.holders[owner] -= 1
            if not state.holders[owner]:
                del state.holders[owner]
            self._state.save(rid, state)
            return
        if state.prepared:
            self._backend.unprepare_layer(*self._ref(rid))
            state.prepared = False
            state.path = ""
        state.holders.pop(owner)
        self._state.save(rid, state)
        self.release(rid, state)

    def release(self, rid: str, state: MountState) -> None:
        """Unprepare and deactivate a layer nobody holds."""
        if state.prepared:
            self._backend.unprepare_layer(*self._ref(rid))
            state.prepared = False
            state.path = ""
            self._state.save(rid, state)
        if state.activated:
            self._backend.deactivate_layer(*self._ref(rid))
            state.activated = False
            self._state.save(rid, state)

    def release_abandoned(self, rid: str, present: bool) -> bool:
        """Unmount a layer whose holders are all gone (takes the layer's lock); whether
        there was anything to release. A layer no longer `present` is only forgotten."""
        with self._state.lock(rid):
            state = self._state.load(rid)
            if state.is_idle():
                self._state.save(rid, state)  # only dead holders were left: forget them
                return False
            if state.in_use:
                return False
            if not present:
                state.prepared = state.activated = False
                self._state.save(rid, state)
                return True
            self.release(rid, state)
            return True

    def _undo(self, rid: str, state: MountState, prepared: bool, activated_here: bool) -> None:
        """Roll back a failed get: unprepare, then deactivate what this get activated."""
        if prepared:
            try:
                self._backend.unprepare_layer(*self._ref(rid))
            except Exception:
                log.warning("could not unprepare layer %s after a failed get", rid, exc_info=True)
                self._state.save(rid, state)  # still prepared: say so
                return
        state.prepared = False
        state.path = ""
        if activated_here:
            try:
                self._backend.deactivate_layer(*self._ref(rid))
                state.activated = False
            except Exception:
                log.warning("could not deactivate layer %s after a failed get", rid, exc_info=True)
        self._state.save(rid, state)


def process_holder() -> str:
    return f"pid:{os.getpid()}"


def named_holder(name: str) -> str:
    return f"name:{name}"


def _holder_alive(holder: str) -> bool:
    kind, _, value = holder.partition(":")
    return kind != "pid" or pid_alive(int(value))


def write_denied(folder: Path) -> int:
    """0 if this process may write in `folder`, else the errno a write would fail with
    (EROFS on a read-only mount, EACCES without permission)."""
    if os.access(folder, os.W_OK):
        return 0
    if hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY:
        return errno.EROFS
    return errno.EACCES
