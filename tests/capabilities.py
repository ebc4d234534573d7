"""What a test needs from the operating system, checked by capability, never by platform
name: Windows Python has no `signal.SIGKILL`, `os.mkfifo`, `os.geteuid`, `os.fork`,
`os.mknod`, `fcntl`, `pty` or `resource`, runs no script by its `#!` line, and has none of
Debian's tools. A test marks what it needs with `@needs("mkfifo")` (or a module's
`pytestmark = needs(...)`), or a helper calls `require("mkfifo")`; either skips where the
capability is missing. tests/test_capabilities.py checks that every use of these names in
tests/ sits under its guard."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal

import pytest


def _importable(module: str) -> bool:
    try:  # pty imports tty, which imports termios: find_spec alone would say yes on Windows
        importlib.import_module(module)
    except ImportError:
        return False
    return True


# Each capability: whether this interpreter has it, and what it is.
CAPABILITIES: dict[str, tuple[bool, str]] = {
    "sigkill": (hasattr(signal, "SIGKILL"), "signal.SIGKILL"),
    "mkfifo": (hasattr(os, "mkfifo"), "os.mkfifo (FIFOs)"),
    "mknod": (hasattr(os, "mknod"), "os.mknod (device nodes)"),
    "euid": (hasattr(os, "geteuid"), "os.geteuid (POSIX user ids)"),
    "fork": (hasattr(os, "fork"), "os.fork"),
    "fcntl": (_importable("fcntl"), "the fcntl module (flock)"),
    "pty": (_importable("pty"), "the pty module (pseudo-terminals)"),
    "resource": (_importable("resource"), "the resource module (getrusage)"),
    "pwd": (_importable("pwd"), "the pwd module (POSIX user database)"),
    # A script runs by its #! line where the OS execs it so (os.name "posix" is the POSIX
    # interface, not a platform name: Cygwin and macOS have it too).
    "shebang": (os.name == "posix", "running a script by its #! line"),
    "mount": (shutil.which("mount") is not None, "the mount command"),
    "unshare": (shutil.which("unshare") is not None, "the unshare command (namespaces)"),
}

# Names whose use in tests/ needs a capability (tests/test_capabilities.py checks it):
# attribute uses (`module.name`) and imports of a whole module.
GUARDED_NAMES: dict[str, str] = {
    "signal.SIGKILL": "sigkill",
    "os.mkfifo": "mkfifo",
    "os.mknod": "mknod",
    "os.geteuid": "euid",
    "os.getuid": "euid",
    "os.setuid": "euid",
    "os.setgid": "euid",
    "os.fork": "fork",
    "fcntl": "fcntl",
    "pty": "pty",
    "resource": "resource",
    "pwd": "pwd",
}


def missing(*names: str) -> list[str]:
    """What of `names` this interpreter lacks, described."""
    unknown = [n for n in names if n not in CAPABILITIES]
    if unknown:
        raise KeyError(f"unknown capability {unknown}; known: {sorted(CAPABILITIES)}")
    return [CAPABILITIES[n][1] for n in names if not CAPABILITIES[n][0]]


def needs(*names: str) -> pytest.MarkDecorator:
    """A mark that skips the test where any capability in `names` is missing."""
    lacking = missing(*names)
    return pytest.mark.skipif(bool(lacking), reason=f"needs {', '.join(lacking)}")


def require(*names: str) -> None:
    """Skips the running test (or fixture) where any capability in `names` is missing."""
    lacking = missing(*names)
    if lacking:
        pytest.skip(f"needs {', '.join(lacking)}")
