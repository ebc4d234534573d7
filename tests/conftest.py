from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from winlayer import _hcs

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("WINLAYER_FIXTURES", REPO.parent / "shared" / "fixtures"))


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (for import-time behaviour)."""
    full_env = {k: v for k, v in os.environ.items() if k != "WINLAYER_BACKEND"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=False
    )


def rss_budget_kib(mib: int) -> int:
    """A peak-memory budget in KiB for a test that measures ru_maxrss: twice as much under
    ci/sanitize.sh, whose AddressSanitizer adds redzones and quarantines freed memory."""
    sanitized = "libasan" in os.environ.get("LD_PRELOAD", "")
    return mib * 1024 * (2 if sanitized else 1)


def require_tools(missing: list[str], install: str) -> None:
    """Skip a test whose tools are missing, except under CI (``CI=true``) on a Debian
    system, where .ci/run installs them: a missing tool there is a failure, never a silent
    skip. Where there is no dpkg (the Windows runners of .github/workflows) .ci/run cannot
    install them, and the test skips under CI too."""
    if not missing:
        return
    message = f"missing {', '.join(missing)}: {install}"
    if os.environ.get("CI", "").lower() == "true" and shutil.which("dpkg-query"):
        pytest.fail(message + " (CI=true: .ci/run should have installed it)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _unmount_leftovers(tmp_path: Path) -> Iterator[None]:
    """Sandbox views are overlay mounts: a test that fails while one is mounted must not
    leave it behind (pytest could not delete its temp folder, and later runs would fail)."""
    yield
    mounts = Path("/proc/mounts")
    if not mounts.exists():
        return
    prefix = str(tmp_path) + "/"
    targets = [
        line.split()[1]
        for line in mounts.read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for target in sorted(targets, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def available_backends() -> list[str]:
    """Backends that can run here: portable always, hcs where vmcompute.dll works."""
    from winlayer import _hcs

    names = ["portable"]
    try:
        _hcs.hcs_backend()
    except ImportError:  # BackendUnavailable
        pass
    else:
        names.append("hcs")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes `backend_name` once per available backend."""
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", available_backends())


@pytest.fixture
def backend(tmp_path: Path) -> _hcs.Backend:
    """The portable backend, for tests of it alone (the contract tests and the hcs
    integration tests define their own `backend`)."""
    return _hcs.portable_backend(str(tmp_path / "base-images"))


@pytest.fixture
def info(tmp_path: Path) -> _hcs.DriverInfo:
    """A driver info for a fresh home folder, as `backend` takes it."""
    (tmp_path / "home").mkdir()
    return _hcs.DriverInfo(1, str(tmp_path / "home"))


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"fixtures not found at {FIXTURES} (set WINLAYER_FIXTURES)")
    return FIXTURES


class Cli:
    def __init__(self, home: Path, base_images: Path) -> None:
        self.env = {**os.environ, "WINLAYER_BASE_IMAGES": str(base_images)}
        self.env.pop("WINLAYER_BACKEND", None)
        self.home = home

    def __call__(
        self, *args: str, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "winlayer", "--home", str(self.home), *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            check=False,
            timeout=120,
        )

    def json(self, *args: str) -> object:
        result = self("--json", *args)
        assert result.returncode == 0, result.stderr.decode()
        return json.loads(result.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home", tmp_path / "base")


# The real tools (tests/realtools.py, imported here, not at the top: it imports this module).
@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Any]:
    """A containerd daemon of its own, stopped after the test (realtools.Containerd)."""
    from .realtools import start_containerd

    with start_containerd(tmp_path / "containerd") as daemon:
        yield daemon


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Any]:
    """A distribution registry of its own on 127.0.0.1 (realtools.Registry)."""
    from .realtools import start_registry

    with start_registry(tmp_path / "registry") as server:
        yield server
