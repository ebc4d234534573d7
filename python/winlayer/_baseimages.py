"""Host base images as images: what ``restore_custom_images`` and ``install_base_image``
do, below the driver so that :class:`~winlayer.driver.Driver` and :mod:`winlayer.images`
both offer them.

- :func:`register` turns the backend's base-image list (HCS's ``GetBaseImages`` JSON, or
  the portable backend's base-image directory) into image records and tags, the way
  Docker's Windows driver did at start-up;
- :func:`install` puts a base layer into the portable backend's base-image directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from . import chain
from ._common import FLAVOURS, ProgressCallback, Source, atomic_write
from ._native import _hcs
from ._pipeline import plain_tar
from ._platform import host_architecture
from ._reference import check_name, check_tag
from .backend import Backend
from .errors import BackendUnavailable, LayerExists, WinlayerError
from .imagestore import Image

log = logging.getLogger(__name__)

BASE_IMAGE_OS = "windows"
IMAGE_FILE = "image.json"  # a portable base image's metadata (native/portable/base_images.hpp)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


@runtime_checkable
class Tagger(Protocol):
    """Something that names images (Docker's ``graphdriver.Tagger``)."""

    def tag(self, name: str, tag: str, image_id: str, *, force: bool = False) -> None:
        """Point ``name:tag`` at `image_id`; `force` moves a tag naming another image."""
        ...


@runtime_checkable
class Recorder(Protocol):
    """Something that records images (Docker's ``graphdriver.Recorder``)."""

    def exists(self, image_id: str) -> bool:
        """Whether an image with this id is recorded."""
        ...

    def register(self, image: Image) -> None:
        """Record `image`; registering an id that exists already changes nothing."""
        ...


def base_image_id(folder_name: str) -> str:
    """The seed's image id of a base image: hex of the first 32 bytes of the SHA-384 of
    its folder name."""
    return hashlib.sha384(folder_name.encode("utf-8")).digest()[:32].hex()


def register(listing: str, home: Path, tagger: Tagger, recorder: Recorder) -> list[str]:
    """Register the base images of `listing` (the backend's ``get_base_images()``) for the
    store in `home`; return the ids newly registered. What each image becomes is told by
    :func:`winlayer.images.restore_custom_images`.
    """
    try:
        parsed = json.loads(listing) if listing.strip() else {}
    except ValueError as exc:
        raise WinlayerError(f"the backend's base-image list is not JSON ({exc})") from None
    entries = parsed.get("Images") if isinstance(parsed, dict) else None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise WinlayerError("the backend's base-image list has no Images array")
    registered = []
    for n, entry in enumerate(entries):
        try:
            image, folder, name, version = _base_image(entry)
        except ValueError as exc:
            log.warning("skipping base image #%d: %s", n, exc)
            continue
        alias = home / image.id
        try:
            if recorder.exists(image.id):
                if chain.read_alt_id(alias) is None:
                    alias.mkdir(exist_ok=True)
                    chain.write_alt_id(alias, folder)
                continue
            # The alternate ID first: an image the recorder has is always resolvable.
            alias.mkdir(exist_ok=True)
            chain.write_alt_id(alias, folder)
            recorder.register(image)
            tagger.tag(name, version, image.id, force=True)
        except (OSError, WinlayerError, ValueError) as exc:
            log.warning("skipping base image %s (%s): %s", folder, image.id, exc)
            continue
        log.info("registered base image %s:%s as %s", name, version, image.id)
        registered.append(image.id)
    return registered


def install(
    backend: Backend,
    flavour: str,
    root: Path,
    name: str,
    version: str,
    source: Source,
    *,
    max_uncompressed: int,
    created: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Install a base layer tar (path or stream; plain, gzip or zstd) as the base image
    ``<root>/<name>_<version>`` of the portable `backend`, holding the layer and
    ``image.json``; return its folder. A failed import leaves nothing behind."""
    if backend.name != "portable":
        raise BackendUnavailable(
            "base images are installed by Windows itself for the hcs backend "
            "(they come with the Containers feature); install-base is for the portable backend"
        )
    check_name(name.lower())
    check_tag(version)
    folder = f"{name}_{version}"
    path = root / folder
    if path.exists():
        raise LayerExists(str(path), "base image already installed")
    root.mkdir(parents=True, exist_ok=True)
    info = _hcs.DriverInfo(FLAVOURS[flavour], str(root))
    try:
        with plain_tar(source, max_uncompressed=max_uncompressed) as tar:
            result = backend.import_layer(info, folder, [], tar, None, progress)
        when = (created or datetime.now(timezone.utc)).astimezone(timezone.utc)
        meta = {
            "Name": name,
            "Version": version,
            "CreatedTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "Size": int(result.size),
        }
        atomic_write(path / IMAGE_FILE, json.dumps(meta).encode())
    except BaseException:
        if backend.layer_exists(info, folder):
            backend.destroy_layer(info, folder)
        raise
    log.info("installed base image %s:%s in %s", name, version, path)
    return path


def _base_image(entry: Any) -> tuple[Image, str, str, str]:
    """(image, folder name, tag name, tag) of one GetBaseImages entry; ValueError if broken."""
    if not isinstance(entry, dict):
        raise ValueError("entry is not an object")
    fields = {}
    for key in ("Name", "Version", "Path", "CreatedTime"):
        value = entry.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key} is missing or not a string")
        fields[key] = value
    size = entry.get("Size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"Size {size!r} is not a byte count")
    path = fields["Path"]
    folder = re.split(r"[\\/]", path.rstrip("\\/"))[-1]
    if not folder or folder in (".", ".."):
        raise ValueError(f"Path {path!r} names no folder")
    if not os.path.isdir(path):
        raise ValueError(f"folder {path!r} does not exist")
    created = _rfc3339(fields["CreatedTime"])
    name, version = fields["Name"].lower(), fields["Version"]
    check_name(name)
    check_tag(version)
    image_id = base_image_id(folder)
    arch = host_architecture()
    config = {
        "architecture": arch,
        "created": created,
        "id": image_id,
        "os": BASE_IMAGE_OS,
        "size": size,
    }
    image = Image(
        id=image_id,
        config=json.dumps(config, separators=(",", ":"), sort_keys=True).encode(),
        created=created,
        architecture=arch,
        os=BASE_IMAGE_OS,
        size=size,
    )
    return image, folder, name, version


def _rfc3339(text: str) -> str:
    """Validate an RFC 3339 time (any number of fraction digits, as Go writes them) and
    return it in UTC with the fraction kept."""
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError(f"CreatedTime {text!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"CreatedTime {text!r}: {exc}") from None
    if match.group(9):
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        when -= offset if match.group(9) == "+" else -offset
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = fraction.rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"
