"""The image commands: ``images ls/restore/install-base``, ``load`` and ``save``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._cli_common import (
    Arg,
    command,
    emit,
    image_store,
    open_driver,
    output_stream,
    pair_progress,
    progress_bar,
    source_total,
    table,
)
from ._units import format_size
from .images import config_platform, install_base_image, load, save


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


@command("images ls", "list the images in the store")
def _images_ls(args: argparse.Namespace) -> None:
    with image_store(args) as (_driver, store):
        images = store.images()
    emit(args, [image.as_dict() for image in images], _image_rows(images))


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
    source: Any = sys.stdin.buffer if args.file == "-" else args.file
    with progress_bar(f"installing {args.name}", source_total(args.file)) as progress:
        folder = install_base_image(
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
)
def _load(args: argparse.Namespace) -> None:
    source: Any = sys.stdin.buffer if args.archive == "-" else args.archive
    total = None if args.archive == "-" or os.path.isdir(source) else os.path.getsize(source)
    with image_store(args) as (driver, store), progress_bar("loading", total) as progress:
        images = load(
            driver,
            store,
            source,
            tag=args.tag,
            platform=args.platform,
            progress=pair_progress(progress),
        )
    platforms = [config_platform(image.config) for image in images]
    emit(
        args,
        [
            {**image.as_dict(), "platform": platform.as_dict()}
            for image, platform in zip(images, platforms, strict=True)
        ],
        "\n".join(
            f"Loaded image: {', '.join(i.tags) or i.id} ({platform})"
            for i, platform in zip(images, platforms, strict=True)
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
    with image_store(args) as (driver, store), progress_bar("saving", None) as progress:
        if to_file:  # save opens the file once the images are found
            save(driver, store, args.images, args.output, progress=pair_progress(progress))
        else:
            with output_stream(args, args.output) as out:
                save(driver, store, args.images, out, progress=pair_progress(progress))
    if to_file:
        emit(args, {"images": args.images, "output": args.output}, "")
