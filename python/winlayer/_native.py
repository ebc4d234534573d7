"""The native module, checked: every module of the package that calls native code imports
``_hcs`` from here, so the first use of native code refuses a native module of another
version (or a missing one) with the command that rebuilds it. ``import winlayer`` alone
does not load it (see "Start-up" in docs/ARCHITECTURE.md)."""

from __future__ import annotations

from ._version import __version__

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

__all__ = ["_hcs"]
