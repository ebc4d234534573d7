"""winlayer: Windows container image layers from Python.

The public API lives here; the native core is :mod:`winlayer._hcs`.
"""

from __future__ import annotations

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

try:
    from . import _hcs
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"winlayer's native module failed to load ({exc}); reinstall winlayer: "
        "pip install --force-reinstall winlayer (or `pip install -e .` in a checkout)"
    ) from exc

if _hcs.__version__ != __version__:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"winlayer {__version__} found native module winlayer._hcs {_hcs.__version__} "
        f"({_hcs.__file__}); they must match. Rebuild it: pip install --force-reinstall . "
        "(or `pip install -e .` in a checkout)"
    )

# The modules below import the native module: it is checked first, for a clear message.
from .backend import selected_name as _selected_backend
from .driver import Change, DiffStream, Driver, LayerInfo
from .images import Image, ImageNotFound, ImageStore, InvalidArchive
from .layertar import LayerTarEntry, LayerTarListing, list_layer_tar

#: The name of the backend in use: "hcs" or "portable" (see :mod:`winlayer.backend`).
backend: str = _selected_backend()

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
]
