"""The layer commands: import, export, create, mount, unmount, rm, ls, inspect, changes,
du, verify, pack, gc, and ``tar ls``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from ._cli_common import (
    CLI_HOLDER,
    Arg,
    Reported,
    UsageError,
    command,
    each,
    emit,
    image_store,
    input_stream,
    iso_utc,
    open_driver,
    output_stream,
    progress_bar,
    source_date_epoch,
    source_total,
    table,
)
from ._common import lazy_module
from ._units import format_size, parse_size

if TYPE_CHECKING:
    import shutil
    import tempfile

    from . import images, imagestore, layertar, pack
else:
    shutil = lazy_module("shutil")
    tempfile = lazy_module("tempfile")
    images = lazy_module("winlayer.images")
    imagestore = lazy_module("winlayer.imagestore")
    layertar = lazy_module("winlayer.layertar")
    pack = lazy_module("winlayer.pack")

#: How much of a JSON listing is held in memory before it spills to a temporary file.
JSON_SPOOL = 16 << 20


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
    source: Any = input_stream(args.file)
    with progress_bar("importing", args.id, source_total(args.file)) as progress:
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
        progress_bar("exporting", args.id) as progress,
    ):
        written = 0
        while chunk := tar.read(1 << 20):
            out.write(chunk)
            written += len(chunk)
            if progress:
                progress(written)
    if args.output not in (None, "-"):
        emit(args, {"id": args.id, "output": args.output, "size": written}, "")


@command(
    "create",
    "create an empty layer (a read/write sandbox with --read-write, --image or an *-init parent)",
    Arg("id"),
    Arg("--parent", metavar="ID"),
    Arg("--read-write", action="store_true", help="a sandbox layer on the parent"),
    Arg("--image", metavar="REF", help="a sandbox on this image, for `winlayer commit`"),
    Arg("--size", metavar="SIZE", help="sandbox size limit, e.g. 20GB"),
)
def _create(args: argparse.Namespace) -> None:
    size = parse_size(args.size) if args.size else None
    if args.image is None:
        driver = open_driver(args)
        driver.create(args.id, args.parent, read_write=args.read_write, size=size)
        emit(args, _layer_json(driver, args.id), "")
        return
    if args.parent is not None:
        raise UsageError("--image and --parent exclude each other: the image names the parent")
    with image_store(args) as (driver, store):
        image = images.create_sandbox(driver, store, args.id, args.image, size=size)
        emit(args, {**_layer_json(driver, args.id), "image": f"sha256:{image.id}"}, "")


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
    # As docker rm: each layer on its own; a failure is reported and the others still go.
    driver = open_driver(args)
    done, failed = each(args, args.ids, driver.remove)
    removed = [layer_id for layer_id, _ in done]
    emit(args, {"removed": removed}, "\n".join(removed))
    if failed:
        raise Reported


def _layer_json(driver: Any, layer_id: str) -> dict[str, Any]:
    """A layer as JSON. Its ``created`` time is its folder's (ISO 8601 UTC): the store
    records no other."""
    info = driver.info(layer_id)
    folder_time = os.stat(driver.metadata(layer_id)["dir"]).st_mtime
    return {
        "id": info.id,
        "parent": info.parent,
        "size": info.size,
        "read_write": info.read_write,
        "diff_id": info.diff_id,
        "created": iso_utc(folder_time),
    }


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
        table(rows, ["ID", "PARENT", "SIZE", "MODE"]),
        ids=[layer.id for layer in layers],
    )


@command("inspect", "show everything known about a layer", Arg("id"))
def _inspect(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    result = {
        **_layer_json(driver, args.id),
        "dir": driver.metadata(args.id)["dir"],
        "parents": driver.parents(args.id),
        "mounts": driver.mount_count(args.id),
    }
    width = max(len(k) for k in result)
    text = "\n".join(f"{k.ljust(width)}  {_readable(v)}" for k, v in result.items())
    emit(args, result, text)


def _readable(value: object) -> str:
    """A value as a person reads it: ``-`` for none, ``yes``/``no``, a list comma-joined
    (its JSON form is the one for programs)."""
    if value is None or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


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
    done, failed = each(args, args.ids, driver.verify)
    results = [{"id": layer_id, "diff_id": diff_id, "ok": True} for layer_id, diff_id in done]
    emit(args, results, "\n".join(f"{k}  {v}  ok" for k, v in done))
    if failed:
        raise Reported


@command(
    "pack",
    "turn a directory into a Windows layer tar (deterministic, default Windows metadata)",
    Arg("dir"),
    Arg("-o", "--output", metavar="FILE", required=True, help="the layer tar to write"),
    Arg(
        "--source-date-epoch",
        metavar="SECONDS",
        help="clamp later file times to this (default: $SOURCE_DATE_EPOCH)",
    ),
)
def _pack(args: argparse.Namespace) -> None:
    epoch = source_date_epoch(args.source_date_epoch)
    diff_id = pack.pack_directory(args.dir, args.output, source_date_epoch=epoch)
    emit(args, {"output": args.output, "diff_id": diff_id}, f"{args.output}  {diff_id}")


@command("gc", "sweep what crashed operations left behind")
def _gc(args: argparse.Namespace) -> None:
    driver = open_driver(args)
    swept = driver.cleanup()
    if (driver.home / imagestore.IMAGE_DB).exists():  # layers an unfinished image removal left
        with imagestore.ImageStore(driver.home) as store:
            removed = images.remove_unused_layers(driver, store)
        swept += [f"removed layer {layer.layer_id}, which no image uses" for layer in removed]
    emit(args, {"swept": swept}, "\n".join(swept))


# -- tar ls ----------------------------------------------------------------------------


@command(
    "tar ls",
    "list a layer tar's entries with their Windows metadata, then its diffID (no store needed)",
    Arg("file", metavar="FILE", help="layer tar, plain, gzip or zstd; - for stdin"),
    Arg("--parent-links", action="store_true", help="accept hard links to targets not in FILE"),
)
def _tar_ls(args: argparse.Namespace) -> None:
    # The text listing is printed as it is read (a layer can hold millions of entries): on
    # failure it stops where the problem is and stderr says why. The JSON document is
    # written to a spool (memory, then a temporary file) and printed only once complete,
    # so that a failure never leaves half a document on stdout.
    source: Any = input_stream(args.file)
    if args.json:
        with tempfile.SpooledTemporaryFile(JSON_SPOOL) as spool:
            layertar.write_listing_json(source, spool, allow_parent_links=args.parent_links)
            spool.seek(0)
            sys.stdout.flush()
            shutil.copyfileobj(spool, sys.stdout.buffer)
        return
    out = sys.stdout
    with layertar.list_layer_tar(source, allow_parent_links=args.parent_links) as listing:
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
