"""Image archives: ``load`` and ``save`` of ``docker save`` archives and OCI image layouts.

Reading an archive
    The outer archive is a tar, plain or compressed (gzip, zstd), given as a path or a
    binary stream, or a directory holding an OCI image layout. It is never extracted as a
    whole:

    - a plain tar file (or seekable stream) is indexed by its headers alone, then each
      layer blob is read in place from its offset;
    - a compressed file is read twice as a stream: once for its headers and small metadata
      members (``manifest.json``, ``index.json``, configs, OCI manifests), once to import
      the layers; a layer that arrives before the layer beneath it is imported is held in a
      staging file under the home until its turn (archives written in chain order need none);
    - a stream that cannot be read twice (a pipe) has its layer blobs held in staging files;
    - a directory is walked once without following links (a link out of it is refused) and
      its files read in place; a file replaced or resized since the walk is refused.

Choosing the image
    An index.json that gives platforms (a nested multi-platform index, or manifests with a
    ``platform``) decides, even when a manifest.json is there too: ``ctr images export
    --all-platforms`` names only the exporting host's image (Linux, often) in its
    manifest.json. Each image is loaded for the platform asked for (``platform=``) or the
    host's (:func:`host_platform`): Windows, the host architecture, and an ``os.version``
    the host build runs, as containerd's Windows matcher decides (see
    :mod:`winlayer._platform`); without a host build (not on Windows) the newest version,
    with a warning in the log. A manifest the index lists whose blob the archive lacks is
    no candidate. Otherwise manifest.json (docker save) is read. An image whose config's
    ``os`` is not ``windows`` is refused before anything is imported, and a docker-save
    layer that is missing names the foreign layer's URL from the manifest's
    ``LayerSources``, as an OCI descriptor's ``urls`` are named.

    Before any layer is imported, every manifest and config is parsed and its digest
    checked, every referenced blob is located, and every tag is validated. A member name
    that appears twice must name the same member both times (see :class:`_Index`).

Importing layers
    Layers are stacked by chain ID (``ChainID(L1) = DiffID(L1)``, ``ChainID(Ln) =
    sha256(ChainID(Ln-1) + " " + DiffID(Ln))``); the driver layer id is the chain ID's hex.
    A chain ID already in the store (and in the driver) is not imported again. Each blob is
    read, hashed and decompressed by a :class:`~winlayer._pipeline.TarFeed` on its own
    thread while the driver parses and writes the tar, and the next layer's feed starts
    reading ahead (a bounded buffer) while the current one is imported. The driver's parse
    and write of layer n+1 cannot overlap layer n's: ``apply_diff`` needs the parent layer
    committed (hard links, whiteouts and the HCS import all resolve against the parents), so
    commits, and the parsing that leads to them, stay in chain order.

    The blob digest (from ``blobs/sha256/<hex>`` names and OCI descriptors), its size, and
    the diffID (the config's ``rootfs.diff_ids``) are verified before each layer is
    committed. If anything fails, the layers this load created are removed again and the
    store is left as it was; images and tags are recorded in one transaction at the end.
"""

from __future__ import annotations

from ._archive_load import load
from ._archive_members import METADATA_LIMIT, ArchiveSource, InvalidArchive
from ._archive_plan import (
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_MANIFEST,
    chain_ids,
    layer_id_for,
)
from ._archive_save import save
from ._common import Progress
from ._platform import Platform, config_platform, host_platform, parse_platform

__all__ = [
    "METADATA_LIMIT",
    "MT_DOCKER_LIST",
    "MT_DOCKER_MANIFEST",
    "MT_OCI_CONFIG",
    "MT_OCI_INDEX",
    "MT_OCI_LAYER",
    "MT_OCI_MANIFEST",
    "ArchiveSource",
    "InvalidArchive",
    "Platform",
    "Progress",
    "chain_ids",
    "config_platform",
    "host_platform",
    "layer_id_for",
    "load",
    "parse_platform",
    "save",
]
