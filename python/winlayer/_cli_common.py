"""What every command module of the CLI shares: the command registry, output (results,
tables, progress bars, tar streams), the store openers and the failure types. The
commands themselves live in ``_cli_layers``, ``_cli_images``, ``_cli_registry`` and
``_cli_build``; ``cli`` builds the parser and runs them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar

from ._common import LayerEvent, lazy_module
from ._output import output_file
from ._stream import detect
from .backend import BASE_IMAGES_VAR
from .errors import WinlayerError

if TYPE_CHECKING:
    import datetime
    import json
    import logging
    import pathlib

    from . import driver, imagestore
else:
    driver = lazy_module("winlayer.driver")
    imagestore = lazy_module("winlayer.imagestore")
    datetime = lazy_module("datetime")
    json = lazy_module("json")
    logging = lazy_module("logging")
    pathlib = lazy_module("pathlib")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
CLI_HOLDER = "cli"  # mounts made by `winlayer mount` outlive the command
#: The failures a command reports in one line (anything else is a bug: a traceback).
FAILURES = (WinlayerError, OSError, ValueError)

Handler = Callable[[argparse.Namespace], None]
T = TypeVar("T")
R = TypeVar("R")


class UsageError(Exception):
    """A command line that parses but asks for something impossible (exit code 2)."""


class Reported(Exception):
    """The command failed and has already said why, one line per failure (exit code 1)."""


class Arg:
    """One argparse argument of a subcommand: ``Arg("--parent", metavar="ID")``."""

    def __init__(self, *flags: str, **options: Any) -> None:
        self.flags = flags
        self.options = options


COMMANDS: dict[str, tuple[Handler, str, tuple[Arg, ...]]] = {}


def command(name: str, help: str, *arguments: Arg) -> Callable[[Handler], Handler]:
    """Register ``winlayer NAME`` (``NAME`` may be two words, e.g. ``"images ls"``): the
    decorated function runs it and prints through :func:`emit`."""

    def register(fn: Handler) -> Handler:
        COMMANDS[name] = (fn, help, arguments)
        return fn

    return register


def emit(args: argparse.Namespace, result: Any, text: str, *, ids: list[str] | None = None) -> None:
    """Print a command's result: JSON with --json, else the human text. A listing passes
    `ids`: with ``-q`` only those are printed, one per line (as ``docker image ls -q``)."""
    if ids is not None and args.quiet:
        result, text = ids, "\n".join(ids)
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def iso_utc(timestamp: float) -> str:
    """Seconds since 1970 as the ISO 8601 UTC time every JSON document uses
    (``2026-12-02T11:39:42Z``)."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns, two spaces apart."""
    cells = [headers, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def open_driver(args: argparse.Namespace) -> Any:
    """The driver of ``--home`` (default: the per-user store). A ``--home`` isolates
    everything: its portable base images are ``<home>/.winlayer/base-images`` unless
    ``$WINLAYER_BASE_IMAGES`` names a folder."""
    base_images = None
    if args.home is not None and not os.environ.get(BASE_IMAGES_VAR):
        base_images = pathlib.Path(args.home) / ".winlayer" / "base-images"
    return driver.Driver(args.home, backend=args.backend, base_images=base_images)


def _rich_progress() -> Any:
    """A rich Progress on stderr with docker's columns, in binary units (MiB, as the
    results say sizes) and an ETA where the total is known; the bar takes what the
    terminal's width leaves. Imported here, not at the top: rich takes a while to import,
    and only a terminal needs it."""
    from rich.console import Console
    from rich.filesize import pick_unit_and_suffix
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        """Bytes per second in the units of DownloadColumn(binary_units=True)."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text("?", style="progress.data.speed")
            units = ["B", "KiB", "MiB", "GiB", "TiB"]
            unit, suffix = pick_unit_and_suffix(int(speed), units, 1024)
            return Text(f"{speed / unit:.1f} {suffix}/s", style="progress.data.speed")

    columns = [
        TextColumn("{task.description}"),
        BarColumn(bar_width=None),
        DownloadColumn(binary_units=True),
        SpeedColumn(),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, console=Console(stderr=True), transient=True, expand=True)


def bar_label(name: str) -> str:
    """A name as a progress bar shows it: an id or digest as its 12 hex digits (as docker
    does), anything else at most 24 characters, so that the bar fits 80 columns."""
    if re.fullmatch(r"(sha256:)?[0-9a-f]{64}", name):
        return short_id(name)
    return name if len(name) <= 24 else name[:23] + "\u2026"


#: A progress callback: bytes done, and the total when the caller knows it (None: keep).
Update = Callable[..., None]


@contextlib.contextmanager
def progress_bar(verb: str, name: str = "", total: int | None = None) -> Iterator[Update | None]:
    """A rich progress bar on stderr when it is a terminal (``<verb> <name>``); yields a
    callback taking the bytes done so far and, optionally, the total, or None when there
    is nothing to draw."""
    if not sys.stderr.isatty():
        yield None
        return
    with _rich_progress() as bar:
        task = bar.add_task(f"{verb} {bar_label(name)}".rstrip(), total=total)

        def update(done: int, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, completed=done, total=total)
            else:
                bar.update(task, completed=done)

        yield update


@contextlib.contextmanager
def layer_progress(json_events: bool = False) -> Iterator[Callable[[LayerEvent], None]]:
    """One progress line per layer blob (``<12 hex>: <state>``, bytes, speed), as docker
    draws a pull or push, on stderr when it is a terminal. Without a terminal, with
    `json_events` (``--json``), each change of a layer's state is one JSON line on stderr
    (``{"digest", "state", "done", "total"}``); else nothing is drawn. Yields the events
    callback (safe from worker threads)."""
    lock = threading.Lock()
    if not sys.stderr.isatty():
        states: dict[str, str] = {}

        def as_json(event: LayerEvent) -> None:
            with lock:
                if states.get(event.digest) == event.state:
                    return
                states[event.digest] = event.state
                line = {
                    "digest": event.digest,
                    "state": event.state,
                    "done": event.done,
                    "total": event.total,
                }
                sys.stderr.write(json.dumps(line, sort_keys=True) + "\n")
                sys.stderr.flush()

        yield as_json if json_events else (lambda _event: None)
        return
    with _rich_progress() as bar:
        tasks: dict[str, Any] = {}

        def on_layer(event: LayerEvent) -> None:
            with lock:
                label = f"{short_id(event.digest)}: {event.state}"
                if event.digest not in tasks:
                    tasks[event.digest] = bar.add_task(label, total=event.total)
                bar.update(
                    tasks[event.digest], description=label, completed=event.done, total=event.total
                )

        yield on_layer


def short_id(digest: str) -> str:
    """The 12 hex digits docker shows for an id or digest."""
    return digest.removeprefix("sha256:")[:12]


def input_stream(path: str) -> Any:
    """What a command reads a tar from: the path, or stdin for ``-``. A terminal on stdin
    is refused at once, as ``docker load`` does: it would wait for a tar nobody types."""
    if path != "-":
        return path
    if sys.stdin.isatty():
        raise UsageError("refusing to read a tar from a terminal; pipe it in or give a FILE")
    return sys.stdin.buffer


def source_total(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as f:
        compressed = detect(f.read(4)) != "none"
    return None if compressed else os.path.getsize(path)


@contextlib.contextmanager
def output_stream(args: argparse.Namespace, path: str | None) -> Iterator[IO[bytes]]:
    """The binary stream a command writes its tar to: a file (see winlayer._output: a
    device or FIFO is written in place, anything else replaced once complete), or stdout
    for ``-``."""
    if path is None or path == "-":
        if args.json:
            raise UsageError("--json cannot be used when the tar goes to stdout; use -o FILE")
        if sys.stdout.isatty():
            raise UsageError("refusing to write a tar to a terminal; use -o FILE or a pipe")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with output_file(path) as f:
        yield f


@contextlib.contextmanager
def image_store(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    driver = open_driver(args)
    with imagestore.ImageStore(driver.home) as store:
        yield driver, store


EPOCH_HELP = (
    "seconds since 1970: the image's created time, and the latest file time of a packed "
    "folder (default: $SOURCE_DATE_EPOCH)"
)


def source_date_epoch(flag: str | None) -> int | None:
    """The ``SOURCE_DATE_EPOCH`` a command uses: `flag` (``--source-date-epoch``), else
    the environment variable, else None. Anything but a whole number of seconds, not
    negative, is a UsageError naming where it came from."""
    where = "--source-date-epoch"
    value = flag
    if value is None:
        where, value = "SOURCE_DATE_EPOCH", os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise UsageError(f"{where} must be a whole number of seconds since 1970, not {value!r}")
    return int(value)


def jobs_arg(help: str, default: int | None = None) -> Arg:
    """``--jobs N`` / ``-j N``; read it with :func:`jobs`."""
    return Arg("--jobs", "-j", type=int, default=default, metavar="N", help=help)


def jobs(args: argparse.Namespace) -> int | None:
    """The ``--jobs`` given (None: the command's default); below 1 is a UsageError."""
    n: int | None = args.jobs
    if n is not None and n < 1:
        raise UsageError("--jobs must be at least 1")
    return n


def each(
    args: argparse.Namespace, items: Iterable[T], fn: Callable[[T], R]
) -> tuple[list[tuple[T, R]], bool]:
    """Run `fn` on each item as docker does with several names: a failure is reported (one
    line on stderr) and the others still run. Returns the (item, result) pairs that
    succeeded and whether any failed (the command then raises :class:`Reported` once its
    results are printed)."""
    done: list[tuple[T, R]] = []
    failed = False
    for item in items:
        try:
            done.append((item, fn(item)))
        except FAILURES as exc:
            report(args, exc)
            failed = True
    return done, failed


def report(args: argparse.Namespace, exc: BaseException) -> None:
    """One line on stderr saying what failed; with -v the traceback too (call it from the
    ``except`` clause that caught `exc`)."""
    if args.verbose:
        logging.exception("%s failed", args.command_name)
    if args.json:
        sys.stderr.write(json.dumps({"error": error_fields(exc)}, sort_keys=True) + "\n")
    else:
        sys.stderr.write(f"winlayer: error: {exc}\n")


#: Attributes of winlayer's exceptions (and OSError's) that say where a failure is; under
#: ``--json`` an error carries those it has.
_ERROR_FIELDS = (
    "entry", "offset", "path", "member", "digest", "expected", "actual", "subject", "ref",
    "registry", "repository", "tag", "status", "layer_id", "image_id", "wanted", "offered",
    "operation", "hresult", "errno", "winerror", "filename",
)  # fmt: skip


def error_fields(exc: BaseException) -> dict[str, Any]:
    """A failure as JSON: its type, its message, and where it is (see _ERROR_FIELDS)."""
    fields: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for name in _ERROR_FIELDS:
        value = getattr(exc, name, None)
        if value is not None and value != "" and isinstance(value, (str, int, list)):
            fields[name] = value
    return fields
