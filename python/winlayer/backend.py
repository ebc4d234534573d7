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

from .errors import BackendUnavailable

ENV_VAR = "WINLAYER_BACKEND"
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


def check_available(name: str) -> None:
    """Raise :class:`BackendUnavailable`, with how to fix it, if `name` cannot run here."""
    if name == "hcs" and sys.platform != "win32":
        raise BackendUnavailable(
            "the 'hcs' backend needs Windows with the Containers feature (vmcompute.dll); "
            f"this is {sys.platform}. Use the 'portable' backend: unset {ENV_VAR} "
            f"or set {ENV_VAR}=portable"
        )
