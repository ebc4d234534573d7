"""The commands on an image's merged file system: ``export-rootfs`` (``docker export``)
and ``images mount`` / ``images unmount`` (``ctr images mount``: a read-only view)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ._cli_common import CLI_HOLDER, Arg, command, emit, image_store, output_stream
from ._common import lazy_module

if TYPE_CHECKING:
    from . import images
else:
    images = lazy_module("winlayer.images")


@command(
    "export-rootfs",
    "write an image's merged file system as one base-layer tar (whiteouts applied)",
    Arg("ref", metavar="IMAGE", help="image id, id prefix or name[:tag]"),
    Arg("-o", "--output", metavar="FILE", help="where to write (default: stdout)"),
)
def _export_rootfs(args: argparse.Namespace) -> None:
    with image_store(args) as (driver, store):
        if args.output not in (None, "-"):
            result = images.export_rootfs(driver, store, args.ref, args.output)
        else:
            with output_stream(args, args.output) as out:
                images.export_rootfs(driver, store, args.ref, out)
            return
    emit(
        args,
        {"image": result.image, "layer": result.layer, "output": args.output, "size": result.size},
        "",
    )


@command(
    "images mount",
    "give a read-only view of an image's files and print its path (until images unmount)",
    Arg("ref", metavar="IMAGE", help="image id, id prefix or name[:tag]"),
)
def _images_mount(args: argparse.Namespace) -> None:
    with image_store(args) as (driver, store):
        view = images.mount_image(driver, store, args.ref, holder=CLI_HOLDER)
    emit(args, {"image": view.image, "layer": view.layer, "path": str(view.path)}, str(view.path))


@command(
    "images unmount",
    "release a view made by `winlayer images mount` (what was written there is discarded)",
    Arg("ref", metavar="IMAGE", help="image id, id prefix or name[:tag]"),
)
def _images_unmount(args: argparse.Namespace) -> None:
    with image_store(args) as (driver, store):
        image = images.unmount_image(driver, store, args.ref, holder=CLI_HOLDER)
    emit(args, {"image": image}, "")
