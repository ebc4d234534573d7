"""Small names shared by every layer of the package; this module imports nothing of it.

The package is layered (docs/ARCHITECTURE.md, "Module layering"); a module imports only
modules below it. Names several layers need live here rather than in the highest module
that happened to need them first.
"""

from __future__ import annotations

import importlib
import ntpath
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, NamedTuple

#: Layer folder flavours and HCS's DriverInfo.Flavour code for each.
FLAVOURS = {"windowsdiff": 0, "windowsfilter": 1}

#: ``progress(n)``: bytes of layer data imported so far.
ProgressCallback = Callable[[int], None]

#: ``progress(done, total)``: bytes of layer blobs read from an image archive (load) or
#: written to one (save). Called from worker threads; `total` is 0 while unknown.
Progress = Callable[[int, int], None]

#: ``on_layer(event)``: what a pull or push is doing with one layer blob (see
#: :class:`LayerEvent`). Called from worker threads.
LayerEvents = Callable[["LayerEvent"], None]

#: A layer tar or archive as a user gives it: a path or a readable binary stream.
Source = str | os.PathLike[str] | IO[bytes]

#: The size of one read of layer or blob data.
CHUNK = 1 << 20


class _LazyModule(ModuleType):
    """Stands for a module not imported yet: the first attribute asked of it imports the
    module (importlib's locks make that safe from any thread) and every access is
    answered by the module itself."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


def lazy_module(name: str) -> ModuleType:
    """Module `name` (``"winlayer.images"``, ``"json"``), imported on its first attribute
    access. The CLI's command modules reach the facades through these, and the modules
    start-up imports reach the standard library modules only some commands need, so that
    building the parser (``--help``, ``--version``) imports none of them; each also imports
    its module under ``TYPE_CHECKING``, which type checkers and tests/test_layering.py read
    (docs/ARCHITECTURE.md, "Start-up"). The stand-in is not put in ``sys.modules``: an
    ``import`` elsewhere gets the real module. Nothing is looked up before that first
    access (a missing module raises ModuleNotFoundError there)."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    return _LazyModule(name)


if TYPE_CHECKING:
    import json
    import pathlib
    from pathlib import Path
else:  # for the commands that need them
    json = lazy_module("json")
    pathlib = lazy_module("pathlib")


def data_root() -> Path:
    """The folder of winlayer's data when no other is named: the machine's
    ``C:\\ProgramData\\winlayer`` on Windows (layers are the machine's, as Docker's
    ``C:\\ProgramData\\docker``), the user's data folder elsewhere
    (``$XDG_DATA_HOME/winlayer`` or ``~/.local/share/winlayer``; on macOS
    ``~/Library/Application Support/winlayer``), as platformdirs finds them. The platform
    is read when called (``sys.platform``)."""
    # platformdirs is imported here, not at the top: only a store without a named home
    # needs it.
    if sys.platform == "win32":
        from platformdirs.windows import Windows

        return pathlib.Path(Windows("winlayer", appauthor=False).site_data_dir)
    if sys.platform == "darwin":
        from platformdirs.macos import MacOS

        return pathlib.Path(MacOS("winlayer").user_data_dir)
    from platformdirs.unix import Unix

    return pathlib.Path(Unix("winlayer").user_data_dir)


def data_roots_by_os() -> dict[str, str]:
    """Where :func:`data_root` is on each OS, as help text says it (``~`` for the user's
    home, the environment variables it reads unset); tests/test_cli_conventions.py checks
    the entry of the OS it runs on against :func:`data_root`."""
    return {
        "Linux": "~/.local/share/winlayer ($XDG_DATA_HOME)",
        "macOS": "~/Library/Application Support/winlayer",
        "Windows": r"C:\ProgramData\winlayer",
    }


def win32_path(path: str | os.PathLike[str], platform: str | None = None) -> str:
    r"""`path` as the facade hands it to Python's file calls when what lies below it may
    pass MAX_PATH (260 characters): on Windows (`platform`, default ``sys.platform``) the
    absolute, normalized path with the ``\\?\`` prefix (``\\?\UNC\server\share\...`` for
    a UNC path), which lifts the limit without the machine's ``LongPathsEnabled``
    setting; a path that has the prefix already is kept. Elsewhere `path` as given."""
    text = os.fspath(path)
    if (platform or sys.platform) != "win32":
        return text
    if text.replace("/", "\\").startswith(("\\\\?\\", "\\\\.\\")):
        return text.replace("/", "\\")
    if not ntpath.splitdrive(text)[0]:  # relative, or rooted on the current drive
        text = ntpath.join(os.getcwd(), text)
    # The prefix turns off Win32's normalization: "..", "." and "/" are resolved here.
    text = ntpath.normpath(text)
    if text.startswith("\\\\"):
        return "\\\\?\\UNC\\" + text[2:]
    return "\\\\?\\" + text


_PARTIAL_SUFFIX = ".tmp"


def partial_writer(name: str) -> int | None:
    """The process id of an :func:`atomic_write` temporary file's writer, from its name
    (``.<name>.<pid>.tmp``), or None for any other name: a sweep removes the ones whose
    writer died between creating and renaming them."""
    if not (name.startswith(".") and name.endswith(_PARTIAL_SUFFIX)):
        return None
    pid = name[: -len(_PARTIAL_SUFFIX)].rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


def atomic_write(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a reader, or the store after a crash, sees the
    old file or the new one, never a part.

    The data goes to a temporary file beside `path` that is renamed over it. `durable`
    (what the store's own files need: layer records, chains, alternate IDs, intent
    markers, base-image metadata) also syncs the file before the rename and the folder
    after it, so that a file reported written survives a power loss. Mount state is
    written with ``durable=False``: it describes live processes, which a machine crash
    ends, so it needs atomicity only. `mode` is the new file's mode (before the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_PARTIAL_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable and sys.platform != "win32":  # Windows commits a rename with its file
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class LayerEvent(NamedTuple):
    """One step of a layer blob in a pull or push, as docker's progress lines show them.

    `state` is one of ``waiting``, ``downloading``, ``verifying``, ``extracting``,
    ``exists`` (already there: not transferred), ``mounted`` (linked from another
    repository), ``pushing``, ``done``; `done` and `total` are bytes of the blob
    (`total` None while unknown).
    """

    digest: str
    state: str
    done: int = 0
    total: int | None = None


_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def go_json(value: object, *, sort_keys: bool = False) -> bytes:
    """JSON as Go's ``json.Marshal`` writes it: compact, UTF-8, HTML-safe escapes
    (``<``, ``>``, ``&``, U+2028, U+2029); with `sort_keys`, object keys in byte order,
    as Go writes a map."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    for char, escape in _GO_ESCAPES.items():
        text = text.replace(char, escape)
    return text.encode("utf-8")
