"""The environment benchmarks run the ``winlayer`` CLI in: as an installed package runs.

pip compiles a package's modules when it installs it, so a user's ``winlayer`` starts
from .pyc files. A development shell may set ``PYTHONDONTWRITEBYTECODE``, and then every
run of the CLI would compile the package again (about 0.1-0.3 s of CPU, counted against
winlayer alone). :func:`cli_env` drops it and writes the .pyc files first.
"""

from __future__ import annotations

import compileall
import os
from collections.abc import Mapping
from pathlib import Path

import winlayer


def cli_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (default: this process's environment) and `extra`, without
    ``PYTHONDONTWRITEBYTECODE``, the package's .pyc files written."""
    compileall.compile_dir(str(Path(winlayer.__file__).parent), quiet=1)
    env = {**(os.environ if base is None else base), **extra}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
