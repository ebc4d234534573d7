"""The real tools image users compare winlayer with, run by the tests: containerd (with
``ctr``), skopeo and the CNCF distribution registry (Debian's ``docker-registry``).

The ``containerd`` and ``registry`` fixtures (tests/conftest.py) start them. Each runs on a
private temporary folder and, for the daemons, a private socket or a free
port on 127.0.0.1, and is stopped when its test ends. A missing tool skips the test with
the package to install (under ``CI=true``, where .ci/run installs them, it fails instead).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from .capabilities import require
from .conftest import require_tools
from .daemons import Containerd, Registry, run_tool


def need(*commands: str, package: str) -> None:
    """Skip (fail under CI) unless every command is on PATH."""
    require_tools([c for c in commands if shutil.which(c) is None], f"apt-get install {package}")


# -- containerd ---------------------------------------------------------------------------


def start_containerd(folder: Path) -> Containerd:
    """A running containerd (root only: it owns its state and mounts snapshots)."""
    need("containerd", "ctr", package="containerd")
    require("euid")
    if os.geteuid() != 0 and os.environ.get("CI", "").lower() != "true":
        pytest.skip("containerd needs root here")
    return Containerd(folder)


# -- skopeo -------------------------------------------------------------------------------


def skopeo(*args: str | os.PathLike[str]) -> str:
    """``skopeo ARGS`` with no signature policy (the test images are unsigned, and a test
    must not depend on /etc/containers/policy.json) and the Windows images of the tests
    chosen wherever skopeo picks a platform; its stdout."""
    need("skopeo", package="skopeo")
    head, *rest = [os.fspath(a) for a in args]
    overrides = ["--override-os", "windows", "--override-arch", "amd64"]
    return run_tool("skopeo", "--insecure-policy", *overrides, head, *rest)


# -- registry -----------------------------------------------------------------------------


def start_registry(folder: Path, **options: Any) -> Registry:
    need("docker-registry", package="docker-registry")
    return Registry(folder, **options)


__all__ = ["Containerd", "Registry", "need", "skopeo", "start_containerd", "start_registry"]
