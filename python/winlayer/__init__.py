"""winlayer: Windows container image layers from Python.

The public API lives here; the native core is :mod:`winlayer._hcs`.

``import winlayer`` is light: the errors, the version and the backend's name. Every other
public name is imported from its module the first time it is used (``__getattr__``
below, PEP 562), so that ``winlayer --version`` does not pay for the native module,
SQLite or the HTTP client (docs/ARCHITECTURE.md, "Start-up").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import backend as _backend
from . import errors
from ._version import __version__
from .errors import (
    BackendUnavailable,
    BuildError,
    DigestMismatch,
    HcsError,
    ImageConflict,
    InvalidArgument,
    InvalidLayer,
    InvalidPlatform,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    PlatformNotFound,
    StoreCorrupt,
    WinlayerError,
)

if TYPE_CHECKING:  # what the lazy names below are, for type checkers
    from .driver import Change, DiffStream, Driver, LayerInfo
    from .images import Image, ImageNotFound, ImageStore, InvalidArchive, load, save
    from .layertar import LayerTarEntry, LayerTarListing, list_layer_tar
    from .registry import pull, push

#: Public names imported on first use, and the module of each (tests/test_package.py
#: checks this table against the TYPE_CHECKING imports above).
_LAZY = {
    "Change": "driver",
    "DiffStream": "driver",
    "Driver": "driver",
    "LayerInfo": "driver",
    "Image": "images",
    "ImageNotFound": "images",
    "ImageStore": "images",
    "InvalidArchive": "images",
    "load": "images",
    "save": "images",
    "LayerTarEntry": "layertar",
    "LayerTarListing": "layertar",
    "list_layer_tar": "layertar",
    "pull": "registry",
    "push": "registry",
}

# The `backend` attribute is the name in use, not the module that resolves it (which is
# reached as sys.modules["winlayer.backend"]); an unknown name is refused when it is used.
globals().pop("backend", None)
try:
    #: The name of the backend in use: "hcs" or "portable" (see :mod:`winlayer.backend`).
    backend: str = _backend.selected_name()
except BackendUnavailable as _unknown:
    _backend_error: BackendUnavailable | None = _unknown
else:
    _backend_error = None


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later uses find it directly
        return value
    if name == "backend" and _backend_error is not None:
        raise _backend_error
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BackendUnavailable",
    "BuildError",
    "Change",
    "DiffStream",
    "DigestMismatch",
    "Driver",
    "HcsError",
    "Image",
    "ImageConflict",
    "ImageNotFound",
    "ImageStore",
    "InvalidArchive",
    "InvalidArgument",
    "InvalidLayer",
    "InvalidPlatform",
    "LayerExists",
    "LayerInUse",
    "LayerInfo",
    "LayerNotFound",
    "LayerTarEntry",
    "LayerTarListing",
    "PlatformNotFound",
    "StoreCorrupt",
    "WinlayerError",
    "__version__",
    "backend",
    "errors",
    "list_layer_tar",
    "load",
    "pull",
    "push",
    "save",
]
