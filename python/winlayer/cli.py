"""The ``winlayer`` command (also ``python -m winlayer``).

Results go to stdout (aligned text, or one JSON document with ``--json``); progress bars
and errors go to stderr. Exit codes: 0 success, 1 failure, 2 usage error. Every failure
is one line naming what failed and where (``verify`` of several layers: one per bad
layer); ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from . import __version__, backend
from ._output import output_file
from ._stream import detect
from ._units import format_size, parse_size
from .driver import Driver
from .errors import WinlayerError
from .images import ImageStore, install_base_image, load, save
from .layertar import list_layer_tar
from .pack import pack_directory

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
CLI_HOLDER = "cli"  # mounts made by `winlayer mount` outlive the command
#: The failures a command reports in one line (anything else is a bug: a traceback).
FAILURES = (WinlayerError, OSError, ValueError)

Handler = Callable[[argparse.Namespace], None]


class UsageError(Exception):
    """A command line that parses but asks for something impossible (exit code 2)."""


class Reported(Exception):
    """The command failed and has already said why, one line per failure (exit code 1)."""


class Arg:
    """One argparse argument of a subcommand: ``Arg("--parent", metavar="ID")``."""

    def __init__(self, *flags: str, **options: Any) -> None:
        self.flags = flags
        self.options = options


_COMMANDS: dict[str, tuple[Handler, str, tuple[Arg, ...]]] = {}


def command(name: str, help: str, *arguments: Arg) -> Callable[[Handler], Handler]:
    """Register ``winlayer NAME`` (``NAME`` may be two words, e.g. ``"images ls"``): the
    decorated function runs it and prints through :func:`emit`."""

    def register(fn: Handler) -> Handler:
        _COMMANDS[name] = (fn, help, arguments)
        return fn

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="winlayer",
        description="Windows container image layers: import, export, mount and inspect them.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    parser.add_argument("--home", metavar="DIR", help="the layer store (default: per-user)")
    parser.add_argument("--backend", choices=("portable", "hcs"), help="override the backend")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logs, tracebacks")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors only")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, Any] = {}
    for name, (_fn, help_text, arguments) in sorted(_COMMANDS.items()):
        group, _, sub = name.partition(" ")
        if sub:
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(
                    dest="subcommand", metavar="SUBCOMMAND", required=True
                )
            target = groups[group].add_parser(sub, help=help_text, description=help_text)
        else:
            target = top.add_parser(name, help=help_text, description=help_text)
        target.set_defaults(command_name=name)
        for argument in arguments:
            target.add_argument(*argument.flags, **argument.options)
    return parser


def _version_text() -> str:
    return f"winlayer {__version__} (backend: {backend})"


def emit(args: argparse.Namespace, result: Any, text: str) -> None:
    """Print a command's result: JSON with --json, else the human text."""
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns, two spaces apart."""
    cells = [headers, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def open_driver(args: argparse.Namespace) -> Any:
    return Driver(args.home, backend=args.backend)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr when it is a terminal; yields a callback taking the
    bytes done so far, or None when there is nothing to draw."""
    if not sys.stderr.isatty():
        yield None
        return
    # Imported here, not at the top: rich takes a while to import, and only a terminal
    # needs it.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def _source_total(path: str) -> int | None:
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


# -- layer commands ------------------------------------------------------------------


@command(
    "import",
    "import a layer tar (plain, gzip or zstd; - for stdin) as layer ID",
    Arg("id"),
    Arg("file"),
    Arg("--parent", metavar="ID", help="the parent layer"),
    Arg("--digest", metavar="sha256:HEX", help="the diffID the uncompressed tar must have"),
)
def _import(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    source: Any = sys.stdin.buffer if args.file == "-" else args.file
    with progress_bar(f"importing {args.id}", _source_total(args.file)) as progress:
        size = driver.apply_diff(
            args.id, args.parent, source, digest=args.digest, progress=progress
        )
    info = driver.info(args.id)
    result = {"id": args.id, "parent": args.parent, "size": size, "diff_id": info.diff_id}
    emit(args, result, f"{args.id}  {info.diff_id}  {format_size(size)}")


@command(
    "export",
    "write layer ID's diff as a tar (canonical by default)",
    Arg("id"),
    Arg("-o", "--output", metavar="FILE", help="where to write (default: stdout)"),
    Arg("--original", action="store_true", help="the imported tar, byte for byte"),
)
def _export(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    with (
        driver.diff(args.id, original=args.original) as tar,  # a missing layer: nothing written
        output_stream(args, args.output) as out,
        progress_bar(f"exporting {args.id}", None) as progress,
    ):
        written = 0
        while chunk := tar.read(1 << 20):
            out.write(chunk)
            written += len(chunk)
            if progress:
                progress(written)
    if args.output not in (None, "-"):
        emit(args, {"id": args.id, "output": args.output, "bytes": written}, "")


@command(
    "create",
    "create an empty layer (a read/write sandbox with --read-write or an *-init parent)",
    Arg("id"),
    Arg("--parent", metavar="ID"),
    Arg("--read-write", action="store_true", help="a sandbox layer on the parent"),
    Arg("--size", metavar="SIZE", help="sandbox size limit, e.g. 20GB"),
)
def _create(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    size = parse_size(args.size) if args.size else None
    driver.create(args.id, args.parent, read_write=args.read_write, size=size)
    emit(args, _layer_json(driver, args.id), "")


@command("mount", "mount a layer and print the path of its contents", Arg("id"))
def _mount(args: argparse.Namespace) -> None:
    path = open_driver(args).get(args.id, holder=CLI_HOLDER)
    emit(args, {"id": args.id, "path": str(path)}, str(path))


@command("unmount", "release a mount made by `winlayer mount`", Arg("id"))
def _unmount(args: argparse.Namespace) -> None:
    open_driver(args).put(args.id, holder=CLI_HOLDER)
    emit(args, {"id": args.id}, "")


@command("rm", "remove layers", Arg("ids", nargs="+", metavar="ID"))
def _rm(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    for layer_id in args.ids:
        driver.remove(layer_id)
    emit(args, {"removed": args.ids}, "")


def _layer_json(driver: Any, layer_id: str) -> dict[str, Any]:
    info = driver.info(layer_id)
    return {"id": info.id, "parent": info.parent, "size": info.size, "read_write": info.read_write}


@command("ls", "list the layers in the store")
def _ls(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    layers = driver.layers()
    rows = [
        [
            layer.id,
            layer.parent or "-",
            format_size(layer.size) if layer.size is not None else "-",
            "rw" if layer.read_write else "ro",
        ]
        for layer in layers
    ]
    emit(
        args,
        [_layer_json(driver, layer.id) for layer in layers],
        table(rows, ["ID", "PARENT", "SIZE", "MODE"]) if rows else "",
    )


@command("inspect", "show everything known about a layer", Arg("id"))
def _inspect(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    info = driver.info(args.id)
    result = {
        **_layer_json(driver, args.id),
        "diff_id": info.diff_id,
        "dir": driver.metadata(args.id)["dir"],
        "parents": driver.parents(args.id),
        "mounts": driver.mount_count(args.id),
    }
    width = max(len(k) for k in result)
    text = "\n".join(f"{k.ljust(width)}  {v}" for k, v in result.items())
    emit(args, result, text)


@command("changes", "list what a layer adds (A), modifies (C) and deletes (D)", Arg("id"))
def _changes(args: argparse.Namespace) -> None:
    changes = open_driver(args).changes(args.id)
    emit(
        args,
        [{"path": c.path, "kind": c.kind} for c in changes],
        "\n".join(f"{c.kind} {c.path}" for c in changes),
    )


@command("du", "bytes of file data a layer adds or modifies", Arg("id"))
def _du(args: argparse.Namespace) -> None:
    size = open_driver(args).diff_size(args.id)
    emit(args, {"id": args.id, "size": size}, f"{size}\t{args.id}")


@command(
    "verify",
    "re-hash stored layers against their diffIDs (each is checked; failures go to stderr)",
    Arg("ids", nargs="+", metavar="ID"),
)
def _verify(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    verified = {}
    failed = False
    for layer_id in args.ids:
        try:
            verified[layer_id] = driver.verify(layer_id)
        except FAILURES as exc:
            report(args, exc)
            failed = True
    emit(args, verified, "\n".join(f"{k}  {v}  ok" for k, v in verified.items()))
    if failed:
        raise Reported


@command(
    "pack",
    "turn a directory into a Windows layer tar (deterministic, default Windows metadata)",
    Arg("dir"),
    Arg("-o", "--output", metavar="FILE", required=True, help="the layer tar to write"),
)
def _pack(args: argparse.Namespace) -> None:
    diff_id = pack_directory(args.dir, args.output)
    emit(args, {"output": args.output, "diff_id": diff_id}, f"{args.output}  {diff_id}")


@command("gc", "sweep what crashed operations left behind")
def _gc(args: argparse.Namespace) -> None:
    swept = open_driver(args).cleanup()
    emit(args, {"swept": swept}, "\n".join(swept))


# -- tar ls ----------------------------------------------------------------------------


@command(
    "tar ls",
    "list a layer tar's entries with their Windows metadata, then its diffID (no store needed)",
    Arg("file", metavar="FILE", help="layer tar, plain, gzip or zstd; - for stdin"),
    Arg("--parent-links", action="store_true", help="accept hard links to targets not in FILE"),
    Arg("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"),
)
def _tar_ls(args: argparse.Namespace) -> None:
    # Entries are printed as they are read (a layer can hold millions): on failure the
    # output stops where the problem is and stderr says why.
    source: Any = sys.stdin.buffer if args.file == "-" else args.file
    out = sys.stdout
    with list_layer_tar(source, allow_parent_links=args.parent_links) as listing:
        if args.json:
            out.write('{\n  "entries": [')
            for i, entry in enumerate(listing):
                out.write(
                    ("," if i else "") + "\n    " + json.dumps(entry.to_json(), sort_keys=True)
                )
            summary = {
                "compression": listing.compression,
                "data_size": listing.data_size,
                "diff_id": listing.diff_id,
            }
            tail = json.dumps(summary, indent=2, sort_keys=True)[1:]  # the rest of the object
            out.write("\n  ],\n" + tail.lstrip("\n") + "\n")
            return
        out.write(
            f"{'TYPE':<16}  {'MODE':<6}  {'SIZE':>12}  {'MODIFIED (UTC)':<19}  {'OWNER':<8}  PATH\n"
        )
        count = 0
        for entry in listing:
            count += 1
            modified = entry.last_write_time
            when = modified.strftime("%Y-%m-%d %H:%M:%S") if modified else "-"
            size = str(entry.size) if entry.type in ("file", "alternate_stream") else "-"
            owner = str(entry.owner) if entry.owner else "-"
            arrow = ""
            if entry.type == "hard_link":
                arrow = f" => {entry.link_target}"
            elif entry.type == "symlink":
                arrow = f" -> {entry.link_target}" + (" (junction)" if entry.mount_point else "")
            out.write(
                f"{entry.type:<16}  {entry.mode:<6}  {size:>12}  {when:<19}  {owner:<8}  "
                f"{entry.path}{arrow}\n"
            )
        out.write(
            f"\n{count} entries, {listing.data_size} bytes of data, "
            f"compression {listing.compression}\ndiffID {listing.diff_id}\n"
        )


# -- images ----------------------------------------------------------------------------


def _image_rows(images: list[Any]) -> str:
    rows = [
        [
            ", ".join(image.tags) or "<none>",
            image.id.removeprefix("sha256:")[:12],
            image.created[:19].replace("T", " "),
            format_size(image.size),
        ]
        for image in images
    ]
    return table(rows, ["TAGS", "IMAGE ID", "CREATED", "SIZE"]) if rows else ""


@contextlib.contextmanager
def _image_store(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    driver = open_driver(args)
    with ImageStore(driver.home) as store:
        yield driver, store


@command("images ls", "list the images in the store")
def _images_ls(args: argparse.Namespace) -> None:
    with _image_store(args) as (_driver, store):
        images = store.images()
    emit(args, [image.as_dict() for image in images], _image_rows(images))


@command("images restore", "register the host's base images as images (lower(name):version)")
def _images_restore(args: argparse.Namespace) -> None:
    with _image_store(args) as (driver, store):
        restored = driver.restore_custom_images(store, store)
    emit(args, {"restored": restored}, "\n".join(restored))


@command(
    "images install-base",
    "install a base layer tar as a host base image (portable backend)",
    Arg("name"),
    Arg("version"),
    Arg("file", help="the base layer tar (plain, gzip or zstd; - for stdin)"),
)
def _images_install_base(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    source: Any = sys.stdin.buffer if args.file == "-" else args.file
    with progress_bar(f"installing {args.name}", _source_total(args.file)) as progress:
        folder = install_base_image(
            driver,
            args.name,
            args.version,
            source,
            base_images=driver.base_images,
            progress=progress,
        )
    emit(args, {"name": args.name, "version": args.version, "path": str(folder)}, str(folder))


def _pair_progress(callback: Callable[[int], None] | None) -> Callable[[int, int], None] | None:
    """Adapts a bytes-done progress callback to load/save's (done, total) callbacks."""
    return None if callback is None else (lambda done, _total: callback(done))


@command(
    "load",
    "load a docker-save archive or an OCI image layout (tar, plain, gzip or zstd; - for stdin)",
    Arg("archive"),
    Arg("--tag", metavar="NAME:TAG", help="also tag the loaded image"),
)
def _load(args: argparse.Namespace) -> None:
    source: Any = sys.stdin.buffer if args.archive == "-" else args.archive
    total = None if args.archive == "-" else os.path.getsize(args.archive)
    with _image_store(args) as (driver, store), progress_bar("loading", total) as progress:
        images = load(driver, store, source, tag=args.tag, progress=_pair_progress(progress))
    emit(
        args,
        [image.as_dict() for image in images],
        "\n".join(f"Loaded image: {', '.join(i.tags) or i.id}" for i in images),
    )


@command(
    "save",
    "write images to a docker-save archive with their original layers",
    Arg("images", nargs="+", metavar="IMAGE"),
    Arg("-o", "--output", metavar="FILE", help="where to write (default: stdout)"),
)
def _save(args: argparse.Namespace) -> None:
    to_file = args.output not in (None, "-")
    with _image_store(args) as (driver, store), progress_bar("saving", None) as progress:
        if to_file:  # save opens the file once the images are found
            save(driver, store, args.images, args.output, progress=_pair_progress(progress))
        else:
            with output_stream(args, args.output) as out:
                save(driver, store, args.images, out, progress=_pair_progress(progress))
    if to_file:
        emit(args, {"images": args.images, "output": args.output}, "")


# -- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("winlayer: error: a COMMAND is required\n")
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING,
        format="winlayer: %(levelname)s: %(message)s",
    )
    fn = _COMMANDS[args.command_name][0]
    try:
        fn(args)
    except UsageError as exc:
        sys.stderr.write(f"winlayer: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("winlayer: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `winlayer export x | head`): not our failure.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Reported:
        return EXIT_FAILURE
    except FAILURES as exc:
        report(args, exc)
        return EXIT_FAILURE
    return EXIT_OK


def report(args: argparse.Namespace, exc: BaseException) -> None:
    """One line on stderr saying what failed; with -v the traceback too (call it from the
    ``except`` clause that caught `exc`)."""
    if args.verbose:
        logging.exception("%s failed", args.command_name)
    sys.stderr.write(f"winlayer: error: {exc}\n")


__all__ = ["Arg", "command", "emit", "main", "open_driver", "progress_bar", "table"]
