from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("WINLAYER_FIXTURES", REPO.parent / "shared" / "fixtures"))


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (for import-time behaviour)."""
    full_env = {k: v for k, v in os.environ.items() if k != "WINLAYER_BACKEND"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=False
    )


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
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"fixtures not found at {FIXTURES} (set WINLAYER_FIXTURES)")
    return FIXTURES
