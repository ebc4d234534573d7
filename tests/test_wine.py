"""The Windows backend under Wine (marker ``wine``).

``ci/wine/run.sh`` cross-compiles native/windows, the core, the portable backend and the
HCS emulator (a vmcompute.dll look-alike) with mingw-w64 and runs ci/wine/wine_test.cpp
under Wine: every vmcompute call the backend makes, the HRESULT mapping and retries,
staging-folder import and export, Unicode and 300-character paths, and the Backup API paths
(hives, a base layer through the base writer exported and re-imported, a delta layer's
UtilityVM clone exported and re-imported, a sandbox on that base, BackupRead of exports,
privileges) through the emulator's Backup API emulation
(native/hcs_emulator/backup_emulation.cpp). Real ACLs and privilege
checks are covered on Windows only, by tests/test_hcs_integration.py.

Skipped only where the toolchain is missing and ``CI`` is not ``true``: in CI a missing
toolchain is a failure (.ci/run installs it), so the run cannot silently disappear.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_tools

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "ci" / "wine" / "run.sh"
TOOLS = ("x86_64-w64-mingw32-g++-posix", "x86_64-w64-mingw32-dlltool")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)
CALLS = re.compile(r"^calls (\w+) (\d+)$", re.MULTILINE)
VMCOMPUTE_DEF = REPO / "native" / "windows" / "vmcompute.def"
# The Backup API table of native/windows/backup_api.hpp.
BACKUP_API_CALLS = (
    "BackupRead",
    "BackupWrite",
    "OpenThreadToken",
    "ImpersonateSelf",
    "RevertToSelf",
    "LookupPrivilegeValueW",
    "AdjustTokenPrivileges",
)


def _vmcompute_exports() -> list[str]:
    text = VMCOMPUTE_DEF.read_text(encoding="utf-8").split("EXPORTS", 1)[1]
    return [line.strip() for line in text.splitlines() if line.strip()]


def unreached_calls(output: str) -> list[str]:
    """The vmcompute exports and Backup API calls the Wine run's counts show as never
    reached (0, or missing from the counts)."""
    counts = {name: int(n) for name, n in CALLS.findall(output)}
    return [n for n in (*_vmcompute_exports(), *BACKUP_API_CALLS) if counts.get(n, 0) == 0]


def _wine() -> str | None:
    found = shutil.which("wine64") or shutil.which("wine")
    if found:
        return found
    debian = Path("/usr/lib/wine/wine64")  # Debian's wine64 package installs it here
    return str(debian) if os.access(debian, os.X_OK) else None


def _missing_tools() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if _wine() is None:
        missing.append("wine64")
    if shutil.which("bash") is None:
        missing.append("bash")
    return missing


@pytest.mark.wine
@pytest.mark.skipif(
    sys.platform == "win32", reason="on Windows the hcs tests run the real vmcompute.dll"
)
def test_windows_backend_under_wine() -> None:
    require_tools(
        _missing_tools(), "apt-get install g++-mingw-w64-x86-64-posix mingw-w64-tools wine64"
    )

    env = dict(os.environ)
    env["WINE"] = _wine() or "wine64"
    proc = subprocess.run(
        ["bash", str(RUN)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=1800,
        check=False,
    )
    output = proc.stdout + proc.stderr
    tail = "\n".join(output.splitlines()[-60:])
    summaries = SUMMARY.findall(proc.stdout)
    assert proc.returncode == 0, f"ci/wine/run.sh failed (exit {proc.returncode}):\n{tail}"
    assert summaries, f"no 'N passed, M failed' summary in the output:\n{tail}"
    passed, failed = (int(n) for n in summaries[-1])
    assert failed == 0, tail
    # The program runs well over 20 checks; far fewer means tests stopped being reached.
    assert passed >= 20, f"only {passed} Wine tests ran:\n{tail}"
    assert unreached_calls(proc.stdout) == [], f"calls never reached under Wine:\n{tail}"


def test_unreached_calls_names_each_call_not_reached() -> None:
    every = [*_vmcompute_exports(), *BACKUP_API_CALLS]
    assert "ImportLayer" in every
    assert "BackupWrite" in every
    output = "".join(f"calls {n} 3\n" for n in every if n not in ("BackupRead", "ExportLayer"))
    output += "calls BackupRead 0\n"
    assert unreached_calls(output) == ["ExportLayer", "BackupRead"]
    assert unreached_calls(output + "calls BackupRead 1\ncalls ExportLayer 2\n") == []


def _run_sh_with_stub_tools(tmp_path: Path, env: dict[str, str]) -> str:
    """Runs a copy of ci/wine/run.sh in a tree of empty sources, with a compiler, dlltool and
    Wine that only make their outputs; returns the WINEPREFIX that Wine was given."""
    tree = tmp_path / "tree"
    for source in (
        "native/core/a.cpp",
        "native/portable/a.cpp",
        "native/windows/a.cpp",
        "native/windows/vmcompute.def",
        "native/hcs_emulator/a.cpp",
        "ci/wine/wine_test.cpp",
    ):
        (tree / source).parent.mkdir(parents=True, exist_ok=True)
        (tree / source).touch()
    shutil.copy(RUN, tree / "ci" / "wine" / "run.sh")
    stubs = {
        "cxx": 'while [ $# -gt 0 ]; do [ "$1" = -o ] && touch "$2"; shift; done',
        "dlltool": 'while [ $# -gt 0 ]; do [ "$1" = -y ] && touch "$2"; shift; done',
        "wine": 'echo "$WINEPREFIX" > "$(dirname "$0")/prefix"',
    }
    for name, body in stubs.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    proc = subprocess.run(
        ["bash", str(tree / "ci" / "wine" / "run.sh")],
        env={
            "PATH": "/usr/bin:/bin",
            "MINGW_CXX": str(tmp_path / "cxx"),
            "MINGW_DLLTOOL": str(tmp_path / "dlltool"),
            "WINE": str(tmp_path / "wine"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(tree.rglob("prefix")), "the Wine prefix must stay out of the source tree"
    return (tmp_path / "prefix").read_text().strip()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HOME": "{tmp}/home"}, "{tmp}/home/.cache/winlayer/wine-prefix"),
        (
            {"HOME": "{tmp}/home", "XDG_CACHE_HOME": "{tmp}/cache"},
            "{tmp}/cache/winlayer/wine-prefix",
        ),
        ({"HOME": "{tmp}/home", "WINLAYER_WINE_BUILD": "{tmp}/out"}, "{tmp}/out/prefix"),
    ],
    ids=["home-cache", "xdg-cache", "wine-build-dir"],
)
def test_wine_prefix_is_kept_out_of_the_source_tree(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    prefix = _run_sh_with_stub_tools(tmp_path, env)
    assert prefix == expected.format(tmp=tmp_path)
    assert Path(prefix).parent.is_dir()  # Wine makes the prefix itself, not its parents
