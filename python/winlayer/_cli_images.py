"""The image commands: ``images ls/restore/install-base/rm/tag/inspect/history``,
``load``, ``save``, ``prune`` and ``df``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._cli_common import (
    Arg,
    Reported,
    command,
    each,
    emit,
    image_store,
    input_stream,
    jobs,
    jobs_arg,
    open_driver,
    output_stream,
    progress_bar,
    source_total,
    table,
)
from ._common import lazy_module
from ._units import format_size

if TYPE_CHECKING:
    import dataclasses
    import json

    from . import images
else:
    dataclasses = lazy_module("dataclasses")
    json = lazy_module("json")
    images = lazy_module("winlayer.images")

#: How ``prune --dry-run`` words what ``prune`` would do.
WOULD = {"Deleted": "Would delete", "Untagged": "Would untag"}
#: Docker's width of the CREATED BY column of ``history`` (without --no-trunc).
CREATED_BY_WIDTH = 45


def _image_rows(found: list[Any]) -> str:
    rows = [
        [
            ", ".join(image.tags) or "<none>",
            image.id.removeprefix("sha256:")[:12],
            image.created[:19].replace("T", " "),
            format_size(image.size),
        ]
        for image in found
    ]
    return table(rows, ["TAGS", "IMAGE ID", "CREATED", "SIZE"])


@command("images ls", "list the images in the store")
def _images_ls(args: argparse.Namespace) -> None:
    with image_store(args) as (_driver, store):
        found = store.images()
    emit(
        args,
        [image.as_dict() for image in found],
        _image_rows(found),
        ids=[image.id[:12] for image in found],
    )


@command("images restore", "register the host's base images as images (lower(name):version)")
def _images_restore(args: argparse.Namespace) -> None:
    with image_store(args) as (driver, store):
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
    source: Any = input_stream(args.file)
    with progress_bar("installing", args.name, source_total(args.file)) as progress:
        folder = images.install_base_image(
            driver,
            args.name,
            args.version,
            source,
            base_images=driver.base_images,
            progress=progress,
        )
    emit(args, {"name": args.name, "version": args.version, "path": str(folder)}, str(folder))


@command(
    "load",
    "load a docker-save archive or an OCI image layout (tar, plain, gzip or zstd; - for "
    "stdin; or a layout directory)",
    Arg("archive"),
    Arg("--tag", metavar="NAME:TAG", help="also tag the loaded image"),
    Arg(
        "--platform",
        metavar="OS/ARCH[:OS.VERSION]",
        help="the platform to load from a multi-platform archive (default: the host's, "
        "e.g. windows/amd64:10.0.20348.2227)",
    ),
    jobs_arg("layers imported at a time (default: the number of cores); 1: one after another"),
)
def _load(args: argparse.Namespace) -> None:
    source: Any = input_stream(args.archive)
    # The total is the library's: the bytes of the layer blobs to import, as counted.
    with image_store(args) as (driver, store), progress_bar("loading") as progress:
        loaded = images.load(
            driver,
            store,
            source,
            tag=args.tag,
            platform=args.platform,
            progress=progress,
            jobs=jobs(args),
        )
    platforms = [images.config_platform(image.config) for image in loaded]
    emit(
        args,
        [
            {**image.as_dict(), "platform": platform.as_dict()}
            for image, platform in zip(loaded, platforms, strict=True)
        ],
        "\n".join(
            f"Loaded image: {', '.join(i.tags) or f'sha256:{i.id}'} ({platform})"
            for i, platform in zip(loaded, platforms, strict=True)
        ),
    )


@command(
    "save",
    "write images to a docker-save archive with their original layers",
    Arg("images", nargs="+", metavar="IMAGE"),
    Arg("-o", "--output", metavar="FILE", help="where to write (default: stdout)"),
)
def _save(args: argparse.Namespace) -> None:
    to_file = args.output not in (None, "-")
    with image_store(args) as (driver, store), progress_bar("saving") as progress:
        if to_file:  # save opens the file once the images are found
            images.save(driver, store, args.images, args.output, progress=progress)
        else:
            with output_stream(args, args.output) as out:
                images.save(driver, store, args.images, out, progress=progress)
    if to_file:
        emit(args, {"images": args.images, "output": args.output}, "")


@command(
    "images rm",
    "remove images as docker rmi does: tags, then images nothing needs, then their layers",
    Arg("images", nargs="+", metavar="IMAGE", help="name[:tag], id or id prefix"),
    Arg(
        "-f",
        "--force",
        action="store_true",
        help="remove an image with several tags, or one an unmounted sandbox uses",
    ),
    Arg("--no-prune", action="store_true", help="keep untagged images it was built on"),
)
def _images_rm(args: argparse.Namespace) -> None:
    # Each image is removed on its own (as docker rmi): a failure is one line on stderr,
    # the others still go, and the exit code says that something failed.
    with image_store(args) as (driver, store):
        done, failed = each(
            args,
            args.images,
            lambda ref: images.remove_image(
                driver, store, ref, force=args.force, prune=not args.no_prune
            ),
        )
    records = [record for _, removed in done for record in removed]
    emit(args, [r.as_dict() for r in records], "\n".join(str(r) for r in records))
    if failed:
        raise Reported


@command(
    "images tag",
    "tag an image (an existing tag moves to it, as docker tag does)",
    Arg("source", metavar="SOURCE", help="name[:tag], id or id prefix"),
    Arg("target", metavar="TARGET", help="name[:tag] (tag latest)"),
)
def _images_tag(args: argparse.Namespace) -> None:
    with image_store(args) as (_driver, store):
        image_id = images.tag_image(store, args.source, args.target)
    name, tag = images.parse_reference(args.target)
    emit(args, {"id": f"sha256:{image_id}", "tag": f"{name}:{tag}"}, "")


@command(
    "images inspect",
    "show images as docker image inspect does (a JSON array, with or without --json)",
    Arg("images", nargs="+", metavar="IMAGE"),
)
def _images_inspect(args: argparse.Namespace) -> None:
    with image_store(args) as (driver, store):
        done, failed = each(args, args.images, lambda ref: images.inspect_image(driver, store, ref))
    found = [doc for _, doc in done]
    emit(args, found, json.dumps(found, indent=2, sort_keys=True))
    if failed:
        raise Reported


@command(
    "images history",
    "show an image's history, newest first (docker history's columns)",
    Arg("image", metavar="IMAGE"),
    Arg("--no-trunc", action="store_true", help="do not shorten ids and CREATED BY"),
)
def _images_history(args: argparse.Namespace) -> None:
    with image_store(args) as (_driver, store):
        entries = images.image_history(store, args.image)
    rows = []
    for entry in entries:
        image = entry.image or "<missing>"
        created_by = entry.created_by
        if not args.no_trunc:
            image = image.removeprefix("sha256:")[:12] if entry.image else image
            if len(created_by) > CREATED_BY_WIDTH:
                created_by = created_by[: CREATED_BY_WIDTH - 1] + "\u2026"
        rows.append(
            [
                image,
                entry.created[:19].replace("T", " "),
                created_by,
                format_size(entry.size),
                entry.comment,
            ]
        )
    headers = ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    emit(args, [e.as_dict() for e in entries], table(rows, headers) if rows else "")


@command(
    "prune",
    "remove dangling images (-a: all images no sandbox uses) and layers no image uses",
    Arg("-a", "--all", action="store_true", help="every image no sandbox uses, tagged too"),
    Arg("--dry-run", action="store_true", help="only list what would be removed"),
)
def _prune(args: argparse.Namespace) -> None:
    with image_store(args) as (driver, store):
        result = images.prune(driver, store, every=args.all, dry_run=args.dry_run)
    records = [
        *result.images,
        *(images.Removed("Deleted", layer.chain_id) for layer in result.layers),
    ]
    if result.dry_run:
        records = [dataclasses.replace(r, action=WOULD[r.action]) for r in records]
    verb = "Would reclaim" if result.dry_run else "Total reclaimed space"
    lines = [*map(str, records), f"{verb}: {format_size(result.size)}"]
    emit(args, result.as_dict(), "\n".join(lines))


@command("df", "show the store's disk usage: images, layers, sandboxes (docker system df)")
def _df(args: argparse.Namespace) -> None:
    with image_store(args) as (driver, store):
        usage = images.disk_usage(driver, store)

    def row(kind: str, u: images.Usage) -> list[str]:
        share = f" ({100 * u.reclaimable // u.size}%)" if u.size else ""
        return [
            kind,
            str(u.total),
            str(u.active),
            format_size(u.size),
            format_size(u.reclaimable) + share,
        ]

    rows = [
        row("Images", usage.images),
        row("Layers", usage.layers),
        row("Sandboxes", usage.sandboxes),
    ]
    emit(args, usage.as_dict(), table(rows, ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]))
