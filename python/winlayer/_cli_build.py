"""The commands that make images: ``commit`` (a sandbox's changes as a new image) and
``append`` (layer tars and folders added to an image). ``create --image`` (in
``_cli_layers``) makes the sandbox a commit builds on.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._cli_common import (
    EPOCH_HELP,
    Arg,
    command,
    emit,
    image_store,
    progress_bar,
    source_date_epoch,
)
from ._common import lazy_module

if TYPE_CHECKING:
    from . import images
else:
    images = lazy_module("winlayer.images")


def _result(image: images.Image, ref: str) -> tuple[dict[str, Any], str]:
    result = {
        "id": f"sha256:{image.id}",
        "tag": ref,
        "created": image.created,
        "size": image.size,
        "layers": list(image.layers),
    }
    return result, f"sha256:{image.id}"


@command(
    "commit",
    "make a sandbox's changes a new image (one layer on the image it was created from)",
    Arg("sandbox", metavar="SANDBOX"),
    Arg("ref", metavar="NEW_REF", help="name[:tag] of the new image"),
    Arg("--from", dest="from_ref", metavar="IMAGE", help="the image the sandbox is on"),
    Arg("-m", "--message", help="the history entry's comment"),
    Arg("-a", "--author", help="the image's author"),
    Arg("--source-date-epoch", metavar="SECONDS", help=EPOCH_HELP),
)
def _commit(args: argparse.Namespace) -> None:
    epoch = source_date_epoch(args.source_date_epoch)
    with image_store(args) as (driver, store):
        image = images.commit(
            driver,
            store,
            args.sandbox,
            args.ref,
            from_ref=args.from_ref,
            message=args.message,
            author=args.author,
            source_date_epoch=epoch,
        )
    emit(args, *_result(image, args.ref))


@command(
    "append",
    "add layers to an image: each a layer tar (plain, gzip or zstd) or a folder to pack",
    Arg("base", metavar="BASE_REF"),
    Arg("sources", nargs="+", metavar="LAYER_OR_DIR"),
    Arg("-t", "--tag", metavar="NEW_REF", required=True, help="name[:tag] of the new image"),
    Arg("--source-date-epoch", metavar="SECONDS", help=EPOCH_HELP),
)
def _append(args: argparse.Namespace) -> None:
    epoch = source_date_epoch(args.source_date_epoch)
    with image_store(args) as (driver, store), progress_bar("appending", args.tag) as progress:
        image = images.append(
            driver,
            store,
            args.base,
            args.sources,
            tag=args.tag,
            source_date_epoch=epoch,
            progress=progress,
        )
    emit(args, *_result(image, args.tag))
