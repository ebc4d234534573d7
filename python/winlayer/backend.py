"""Backend selection.

``hcs`` calls the Host Compute Service in ``vmcompute.dll`` (Windows with the Containers
feature); ``portable`` gives the same layer semantics on a plain filesystem and runs
everywhere. The platform default is ``hcs`` on Windows and ``portable`` elsewhere; the
environment variable ``WINLAYER_BACKEND=hcs|portable`` overrides it. The name in use is
:data:`winlayer.backend`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._common import data_root, lazy_module
from .errors import BackendUnavailable

if TYPE_CHECKING:
    import pathlib
    from pathlib import Path

    from ._hcs import DriverInfo, ImportResult
else:
    pathlib = lazy_module("pathlib")

ENV_VAR = "WINLAYER_BACKEND"
BASE_IMAGES_VAR = "WINLAYER_BASE_IMAGES"
NAMES = ("hcs", "portable")


def default_name() -> str:
    """The backend this platform uses when nothing else is asked for."""
    return "hcs" if sys.platform == "win32" else "portable"


def selected_name(name: str | None = None) -> str:
    """Resolve an explicit name, else ``$WINLAYER_BACKEND``, else the platform default."""
    chosen = name if name is not None else os.environ.get(ENV_VAR) or default_name()
    chosen = chosen.strip().lower()
    if chosen not in NAMES:
        source = "backend argument" if name is not None else f"${ENV_VAR}"
        raise BackendUnavailable(
            f"unknown winlayer backend {chosen!r} (from {source}); choose one of: "
            + ", ".join(NAMES)
        )
    return chosen


def check_available(name: str, *, from_env: bool = False) -> None:
    """Raise :class:`BackendUnavailable`, with how to fix it, if `name` cannot run here:
    ``hcs`` off Windows, or on a Windows without ``vmcompute.dll`` in System32 (the
    Containers feature is off). `from_env`: the name came from ``$WINLAYER_BACKEND``
    (the fix then names it)."""
    if name != "hcs":
        return
    fix = (
        f"unset {ENV_VAR} or set {ENV_VAR}=portable"
        if from_env
        else "ask for backend 'portable' (--backend portable)"
    )
    if sys.platform == "win32":
        dll = vmcompute_path()
        if not dll.is_file():
            raise BackendUnavailable(
                f"the 'hcs' backend needs the Host Compute Service, and {dll} does not exist: "
                "enable the Containers feature (Enable-WindowsOptionalFeature -Online "
                "-FeatureName Containers, then restart Windows), or use the 'portable' "
                f"backend: {fix}"
            )
        return
    raise BackendUnavailable(
        "the 'hcs' backend needs Windows with the Containers feature (vmcompute.dll); "
        f"this is {sys.platform}. Use the 'portable' backend: {fix}"
    )


def vmcompute_path() -> Path:
    """Where Windows keeps ``vmcompute.dll``: ``%SYSTEMROOT%\\System32``, the only folder
    the native code loads it from."""
    return (
        pathlib.Path(os.environ.get("SYSTEMROOT") or r"C:\Windows") / "System32" / "vmcompute.dll"
    )


def default_base_images() -> str:
    """The portable backend's base-image directory: ``$WINLAYER_BASE_IMAGES`` or a
    per-user folder beside the default layer store."""
    return os.environ.get(BASE_IMAGES_VAR) or str(data_root() / "base-images")


def load(name: str | None = None, base_images: str | None = None) -> Backend:
    """The backend object for `name` (see :func:`selected_name`)."""
    chosen = selected_name(name)
    check_available(chosen, from_env=name is None and bool(os.environ.get(ENV_VAR)))
    # The package's one import inside a function (tests/test_layering.py allows exactly
    # this one): `import winlayer` resolves the backend's name through this module, and
    # must not load the native module to do it.
    from ._native import _hcs

    if chosen == "hcs":
        return _hcs.hcs_backend()
    return _hcs.portable_backend(base_images or default_base_images())


class Backend(Protocol):
    """HCS's layer API (``winlayer._hcs.Backend`` implements it for both backends).

    A layer is named by a :class:`~winlayer._hcs.DriverInfo` (flavour and home) and an
    `id`, its folder's name in the home (or, with an empty home, its full path); `parents`
    are layer folder paths, nearest first. Failures are the errors of
    :mod:`winlayer.errors`: ``OSError`` subclasses, :class:`~winlayer.HcsError`,
    :class:`~winlayer.LayerNotFound`, :class:`~winlayer.InvalidLayer`..."""

    @property
    def name(self) -> str:
        """``"hcs"`` or ``"portable"``."""
        ...

    def activate_layer(self, info: DriverInfo, id: str) -> None:
        """Make the layer's folder usable (HCS ActivateLayer)."""
        ...

    def deactivate_layer(self, info: DriverInfo, id: str) -> None:
        """Undo :meth:`activate_layer` (HCS DeactivateLayer)."""
        ...

    def create_layer(self, info: DriverInfo, id: str, parent_id: str) -> None:
        """Create an empty read-only layer on `parent_id` (HCS CreateLayer)."""
        ...

    def create_sandbox_layer(
        self, info: DriverInfo, id: str, parent_id: str, parents: list[str]
    ) -> None:
        """Create a read/write layer on the chain `parents` (HCS CreateSandboxLayer)."""
        ...

    def create_view_layer(
        self, info: DriverInfo, id: str, parent_id: str, parents: list[str]
    ) -> None:
        """Beyond HCS's API: a sandbox for reading `parents`, read-only where the backend
        can make it so (the portable overlay view); else a plain sandbox, which the
        caller discards."""
        ...

    def expand_sandbox_size(self, info: DriverInfo, id: str, size: int) -> None:
        """Let a sandbox grow to `size` bytes (HCS ExpandSandboxSize)."""
        ...

    def destroy_layer(self, info: DriverInfo, id: str) -> None:
        """Remove the layer and its folder (HCS DestroyLayer)."""
        ...

    def layer_exists(self, info: DriverInfo, id: str) -> bool:
        """Whether the layer exists (HCS LayerExists)."""
        ...

    def get_layer_mount_path(self, info: DriverInfo, id: str) -> str:
        """Where a prepared layer's files are seen (HCS GetLayerMountPath)."""
        ...

    def prepare_layer(self, info: DriverInfo, id: str, parents: list[str]) -> None:
        """Mount an activated layer on its chain `parents` (HCS PrepareLayer)."""
        ...

    def unprepare_layer(self, info: DriverInfo, id: str) -> None:
        """Undo :meth:`prepare_layer` (HCS UnprepareLayer)."""
        ...

    def get_base_images(self) -> str:
        """The host's base images as HCS's GetBaseImages JSON (``{"Images": [...]}``)."""
        ...

    def import_layer(
        self,
        info: DriverInfo,
        id: str,
        parents: list[str],
        source: Any,
        expected_digest: str | None = None,
        progress: Callable[[int], None] | None = None,
        wait_for_parents: Callable[[], None] | None = None,
    ) -> ImportResult:
        """Import a plain layer tar (path or binary stream) as layer `id` on `parents`;
        its diffID and size. A tar whose diffID is not `expected_digest` is
        :class:`~winlayer.DigestMismatch` and leaves nothing; `progress(n)` gets the bytes
        imported so far; `wait_for_parents()`, when given, blocks until the parents are
        committed (a layer imported beside its parent): called at most once, before the
        first entry that reads the parents and before the commit."""
        ...

    def export_layer(
        self, info: DriverInfo, id: str, parents: list[str], original: bool = False
    ) -> Any:
        """The layer as a tar stream: canonical, or with `original` the imported tar
        byte for byte."""
        ...

    def export_merged(self, layers: list[tuple[DriverInfo, str, list[str]]]) -> Any:
        """Beyond HCS's API: the merged file system of a chain, each layer
        ``(info, id, its parents)``, nearest first, as one canonical layer tar stream
        without whiteouts."""
        ...

    def layer_changes(
        self, info: DriverInfo, id: str, parents: list[str]
    ) -> list[tuple[str, str, int]]:
        """Beyond HCS's API: ``(path, kind, size)`` of each entry of the layer in export
        order; kind is ``dir``, ``file``, ``symlink``, ``stream``, ``link`` or
        ``whiteout``."""
        ...
