"""Images: host base images, the image and tag store, image archives.

- :func:`restore_custom_images` registers the base images the backend reports (HCS's
  shared base images on Windows, the base-image directory of the portable backend) as
  images, the way Docker's Windows driver did at start-up; :func:`install_base_image` puts
  a base layer into the portable backend's base-image directory.
- :class:`ImageStore` (:mod:`winlayer.imagestore`) is the default store; it implements
  the :class:`Tagger` and :class:`Recorder` protocols.
- :func:`load` and :func:`save` (:mod:`winlayer.archive`) read and write ``docker save``
  archives and OCI image layouts.
- :func:`create_sandbox`, :func:`commit` and :func:`append` make images: a sandbox on an
  image, a sandbox's changes as a new image (``docker commit``), layer tars and folders
  added to an image (``crane append``).
- The lifecycle (:mod:`winlayer._imagerefs`, which says who needs what):
  :func:`remove_image` (``docker rmi``), :func:`tag_image`, :func:`inspect_image`,
  :func:`image_history`, :func:`prune`, :func:`remove_unused_layers` and
  :func:`disk_usage`.
- :func:`export_rootfs` writes an image's merged file system as one layer tar (``docker
  export``); :func:`mount_image` / :func:`unmount_image` give a read-only view of it
  (``ctr images mount``).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from ._baseimages import Recorder, Tagger, base_image_id
from ._common import ProgressCallback, Source
from ._imagebuild import append, commit, create_sandbox
from ._imagerefs import (
    DiskUsage,
    HistoryEntry,
    PruneReport,
    Removed,
    Usage,
    disk_usage,
    image_history,
    inspect_image,
    prune,
    remove_image,
    remove_unused_layers,
    tag_image,
)
from ._platform import host_architecture
from ._rootfs import ImageView, RootfsExport, export_rootfs, mount_image, unmount_image
from .archive import (
    InvalidArchive,
    Platform,
    Progress,
    chain_ids,
    config_platform,
    host_platform,
    layer_id_for,
    load,
    parse_platform,
    save,
)
from .driver import Driver
from .imagestore import Image, ImageNotFound, ImageStore, StoredLayer, parse_reference

__all__ = [
    "DiskUsage",
    "HistoryEntry",
    "Image",
    "ImageNotFound",
    "ImageStore",
    "ImageView",
    "InvalidArchive",
    "Platform",
    "Progress",
    "PruneReport",
    "Recorder",
    "Removed",
    "RootfsExport",
    "StoredLayer",
    "Tagger",
    "Usage",
    "append",
    "base_image_id",
    "chain_ids",
    "commit",
    "config_platform",
    "create_sandbox",
    "disk_usage",
    "export_rootfs",
    "host_architecture",
    "host_platform",
    "image_history",
    "inspect_image",
    "install_base_image",
    "layer_id_for",
    "load",
    "mount_image",
    "parse_platform",
    "parse_reference",
    "prune",
    "remove_image",
    "remove_unused_layers",
    "restore_custom_images",
    "save",
    "tag_image",
    "unmount_image",
]


def restore_custom_images(driver: Driver, tagger: Tagger, recorder: Recorder) -> list[str]:
    """Register the backend's base images; return the ids newly registered.

    Each base image becomes an image whose id is :func:`base_image_id` of its folder, with
    its created time, size, the host architecture and OS ``windows``; it is tagged
    ``lower(Name):Version``, and the alternate-ID file ``<home>/<id>/layerId`` names its
    folder, so that the driver finds the layer by the image id. An image already recorded
    is left alone (only a missing alternate-ID file is written again). A base image whose
    entry is broken (missing or mistyped fields, a folder that does not exist) is logged
    and skipped; the others are still registered.
    """
    return driver.restore_custom_images(tagger, recorder)


def install_base_image(
    driver: Driver,
    name: str,
    version: str,
    source: Source,
    *,
    base_images: str | os.PathLike[str] | None = None,
    created: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Install a base layer tar (path or stream; plain, gzip or zstd) as a base image of
    the portable backend, as ``Install-ContainerImage`` once did on Windows; return its
    folder. :func:`restore_custom_images` then registers it as ``lower(name):version``.

    The folder is ``<base_images>/<name>_<version>`` (`base_images` defaults to
    :func:`winlayer.backend.default_base_images`; pass the one the driver was opened
    with), holding the layer and ``image.json``. A failed import leaves nothing behind.
    """
    return driver.install_base_image(
        name, version, source, base_images=base_images, created=created, progress=progress
    )
