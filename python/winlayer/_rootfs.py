"""An image's merged file system: ``export-rootfs`` (what ``docker export`` and ``crane
export`` give) and read-only views (``ctr snapshots view``), both from an image of the
store by reference.

The merge itself is the driver's (:meth:`Driver.merged` and :meth:`Driver.view`); this
module finds an image's top layer and writes output files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ._common import CHUNK
from ._imagebuild import top_layer
from ._output import output_file
from .driver import DiffStream, Driver
from .imagestore import Image, ImageStore


@dataclass(frozen=True)
class RootfsExport:
    """What :func:`export_rootfs` wrote: the image, its top driver layer, the tar's size."""

    image: str  # the image id, "sha256:<hex>"
    layer: str  # the driver layer whose chain was merged
    size: int  # bytes of the tar written


@dataclass(frozen=True)
class ImageView:
    """A read-only view of an image (:func:`mount_image`): where its files are."""

    image: str  # the image id, "sha256:<hex>"
    layer: str  # the driver layer whose chain the view shows
    path: Path


def _image_layer(store: ImageStore, ref: str) -> tuple[Image, str]:
    """The image `ref` names and the driver layer at the top of its chain."""
    image = store.get(ref)
    return image, top_layer(store, image)


def export_rootfs(
    driver: Driver, store: ImageStore, ref: str, out: str | os.PathLike[str] | IO[bytes]
) -> RootfsExport:
    """Write the merged file system of image `ref` as one base-layer tar to `out` (a path,
    written as ``export -o`` writes, see :mod:`winlayer._output`; or a binary file).

    The tar is what :meth:`Driver.merged` gives for the image's top layer: importing it
    gives a base layer with the files a container of the image starts with. The image and
    its layers are checked before anything is written: a bad reference creates no file.
    """
    image, layer = _image_layer(store, ref)
    with driver.merged(layer) as tar:
        if isinstance(out, (str, os.PathLike)):
            with output_file(out) as f:
                size = _copy(tar, f)
        else:
            size = _copy(tar, out)
    return RootfsExport(image=f"sha256:{image.id}", layer=layer, size=size)


def mount_image(driver: Driver, store: ImageStore, ref: str, *, holder: str) -> ImageView:
    """A read-only view of image `ref`'s files (:meth:`Driver.view` of its top layer), held
    by `holder` until :func:`unmount_image` with the same holder."""
    image, layer = _image_layer(store, ref)
    path = driver.view(layer, holder=holder)
    return ImageView(image=f"sha256:{image.id}", layer=layer, path=path)


def unmount_image(driver: Driver, store: ImageStore, ref: str, *, holder: str) -> str:
    """Release a view made by :func:`mount_image` (the last release of `holder` destroys
    it, with anything written there); returns the image id, ``sha256:<hex>``."""
    image, layer = _image_layer(store, ref)
    driver.unview(layer, holder=holder)
    return f"sha256:{image.id}"


def _copy(source: DiffStream, out: IO[bytes]) -> int:
    written = 0
    while chunk := source.read(CHUNK):
        out.write(chunk)
        written += len(chunk)
    return written
