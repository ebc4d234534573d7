"""The plan of a load: the images an archive holds and the layers to import, read from
its manifests and configs and checked (digests, sizes, media types, tags, depth) before
anything is imported. Pure: it reads an :class:`~winlayer._archive_members.Archive`
and needs no driver or store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._archive_members import (
    Archive,
    InvalidArchive,
    Member,
    clean_name,
)
from ._common import host_architecture
from .chain import MAX_DEPTH
from .imagestore import parse_reference

log = logging.getLogger(__name__)

_BLOB_PATH = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_INDEX_TYPES = {MT_OCI_INDEX, MT_DOCKER_LIST}
_MANIFEST_TYPES = {MT_OCI_MANIFEST, MT_DOCKER_MANIFEST}
_LAYER_TYPES = {
    MT_OCI_LAYER,
    MT_OCI_LAYER + "+gzip",
    MT_OCI_LAYER + "+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of each layer of a stack, bottom first (OCI image spec)."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def layer_id_for(chain_id: str) -> str:
    """The driver layer id of a chain ID: its hex digits."""
    return chain_id.removeprefix("sha256:")


# -- the plan: images and the layers to import ------------------------------------------------


@dataclass
class PlannedLayer:
    blob: Member
    blob_digest: str | None  # known from a content-addressed name or a descriptor
    blob_size: int | None  # from a descriptor
    diff_id: str
    chain_id: str
    parent: str | None  # chain ID below


@dataclass
class ImagePlan:
    config: bytes
    image_id: str
    created: str
    architecture: str
    os: str
    layers: list[PlannedLayer]
    tags: list[tuple[str, str]] = field(default_factory=list)


def json_field(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]`` with Go's encoding/json matching: exact key first, then any case.
    Docker reads configs and manifests that way, so archives in the wild rely on it."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if k.lower() == lowered:
            return v
    return None


def parse_json(data: bytes, member: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArchive(f"not valid JSON ({exc})", member) from None


def _check_digest(data: bytes, digest: str, member: str) -> None:
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise InvalidArchive(f"content does not match its digest {digest} (it is {actual})", member)


def _blob_digest(path: str) -> str | None:
    """The digest a content-addressed archive path (``blobs/sha256/<hex>``) promises."""
    match = _BLOB_PATH.fullmatch(clean_name(path))
    return f"sha256:{match.group(1)}" if match else None


def _image_plan(
    config: bytes, config_name: str, blobs: list[tuple[Member, str | None, int | None]]
) -> ImagePlan:
    """Checks a config against the layer blobs it is loaded with."""
    if len(blobs) > MAX_DEPTH:
        raise InvalidArchive(
            f"image {hashlib.sha256(config).hexdigest()} has {len(blobs)} layers; a layer "
            f"chain holds at most {MAX_DEPTH}",
            config_name,
        )
    doc = parse_json(config, config_name)
    if not isinstance(doc, dict):
        raise InvalidArchive("image config is not a JSON object", config_name)
    rootfs = json_field(doc, "rootfs")
    diff_ids = json_field(rootfs, "diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids
    ):
        raise InvalidArchive(
            "image config has no valid rootfs.diff_ids (sha256 digests)", config_name
        )
    rootfs_type = json_field(rootfs, "type")
    if rootfs_type not in (None, "layers"):
        raise InvalidArchive(f"unsupported rootfs type {rootfs_type!r}", config_name)
    if len(diff_ids) != len(blobs):
        raise InvalidArchive(
            f"image config lists {len(diff_ids)} layers but the manifest has {len(blobs)}",
            config_name,
        )
    chains = chain_ids(diff_ids)
    layers = [
        PlannedLayer(member, digest, size, diff_id, chain, chains[i - 1] if i else None)
        for i, ((member, digest, size), diff_id, chain) in enumerate(
            zip(blobs, diff_ids, chains, strict=True)
        )
    ]

    def text(key: str) -> str:
        value = json_field(doc, key)
        return value if isinstance(value, str) else ""

    return ImagePlan(
        config=config,
        image_id=hashlib.sha256(config).hexdigest(),
        created=text("created"),
        architecture=text("architecture"),
        os=text("os"),
        layers=layers,
    )


def _tag_of(ref: object, member: str) -> tuple[str, str]:
    if not isinstance(ref, str):
        raise InvalidArchive(f"tag {ref!r} is not a string", member)
    try:
        return parse_reference(ref)
    except ValueError as exc:
        raise InvalidArchive(str(exc), member) from None


def _plan_docker(archive: Archive) -> list[ImagePlan]:
    doc = parse_json(archive.read("manifest.json", "manifest.json"), "manifest.json")
    if not isinstance(doc, list):
        raise InvalidArchive("manifest.json is not a list of images", "manifest.json")
    plans = []
    for n, entry in enumerate(doc):
        where = f"manifest.json[{n}]"
        if not isinstance(entry, dict):
            raise InvalidArchive(f"{where} is not an object", "manifest.json")
        config_path = json_field(entry, "Config")
        layer_paths = json_field(entry, "Layers")
        if not isinstance(config_path, str) or not isinstance(layer_paths, list):
            raise InvalidArchive(
                f"{where} needs Config (a path) and Layers (a list)", "manifest.json"
            )
        config = archive.read(config_path, "manifest.json")
        config_member = archive.index.resolve(config_path, "manifest.json").name
        if (digest := _blob_digest(config_path)) is not None:
            _check_digest(config, digest, config_member)
        blobs: list[tuple[Member, str | None, int | None]] = []
        for path in layer_paths:
            if not isinstance(path, str):
                raise InvalidArchive(
                    f"{where} has a layer path that is not a string", "manifest.json"
                )
            blobs.append((archive.index.resolve(path, "manifest.json"), _blob_digest(path), None))
        plan = _image_plan(config, config_member, blobs)
        repo_tags = json_field(entry, "RepoTags") or []
        if not isinstance(repo_tags, list):
            raise InvalidArchive(f"{where} has RepoTags that are not a list", "manifest.json")
        plan.tags = [_tag_of(t, "manifest.json") for t in repo_tags]
        plans.append(plan)
    return plans


def _descriptor(obj: object, member: str) -> tuple[str, str, int, dict[str, Any]]:
    """(mediaType, digest, size, the whole descriptor) of an OCI descriptor."""
    if not isinstance(obj, dict):
        raise InvalidArchive("descriptor is not an object", member)
    media_type, digest, size = obj.get("mediaType", ""), obj.get("digest"), obj.get("size")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidArchive(f"descriptor digest {digest!r} is not a sha256 digest", member)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArchive(f"descriptor of {digest} has no valid size", member)
    return str(media_type), digest, size, obj


def _blob(archive: Archive, digest: str, size: int, referrer: str) -> Member:
    path = f"blobs/sha256/{digest.removeprefix('sha256:')}"
    member = archive.index.resolve(path, referrer)
    if member.size != size:
        raise InvalidArchive(
            f"blob is {member.size} bytes, its descriptor says {size}", member.name
        )
    return member


def _read_blob(archive: Archive, digest: str, size: int, referrer: str) -> tuple[bytes, str]:
    member = _blob(archive, digest, size, referrer)
    data = archive.read(member.name, referrer)
    _check_digest(data, digest, member.name)
    return data, member.name


def _plan_oci(archive: Archive) -> list[ImagePlan]:
    index = parse_json(archive.read("index.json", "index.json"), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidArchive("index.json has no manifests list", "index.json")
    plans: dict[str, ImagePlan] = {}
    for entry in index["manifests"]:
        media_type, digest, size, desc = _descriptor(entry, "index.json")
        if media_type in _INDEX_TYPES:
            media_type, digest, size, desc = _pick_platform(archive, digest, size, desc)
        if media_type not in _MANIFEST_TYPES:
            raise InvalidArchive(f"unsupported manifest media type {media_type!r}", "index.json")
        plan = plans.get(digest)
        if plan is None:
            plan = plans[digest] = _plan_oci_manifest(archive, digest, size)
        annotations = desc.get("annotations") or {}
        # containerd and Docker put the full reference here; the OCI annotation may hold
        # a full reference or only a tag, which names no repository to tag.
        ref = annotations.get("io.containerd.image.name")
        if not ref:
            ref = annotations.get("org.opencontainers.image.ref.name")
            if isinstance(ref, str) and "/" not in ref and ":" not in ref:
                log.info("index.json names %s only by the tag %r; not tagging it", digest, ref)
                ref = None
        if ref:
            plan.tags.append(_tag_of(ref, "index.json"))
    return list(plans.values())


def _pick_platform(
    archive: Archive, digest: str, size: int, desc: dict[str, Any]
) -> tuple[str, str, int, dict[str, Any]]:
    """The Windows manifest of a multi-platform index (the host architecture's first)."""
    data, member = _read_blob(archive, digest, size, "index.json")
    nested = parse_json(data, member)
    candidates = []
    for entry in nested.get("manifests", []) if isinstance(nested, dict) else []:
        media_type, d, s, sub = _descriptor(entry, member)
        platform = sub.get("platform") or {}
        if media_type in _MANIFEST_TYPES and platform.get("os") == "windows":
            candidates.append(
                (platform.get("architecture") != host_architecture(), (media_type, d, s, sub))
            )
    if not candidates:
        raise InvalidArchive("multi-platform index has no Windows image", member)
    media_type, d, s, sub = min(candidates, key=lambda c: c[0])[1]
    return media_type, d, s, {**sub, "annotations": desc.get("annotations") or {}}


def _plan_oci_manifest(archive: Archive, digest: str, size: int) -> ImagePlan:
    data, member = _read_blob(archive, digest, size, "index.json")
    manifest = parse_json(data, member)
    if not isinstance(manifest, dict):
        raise InvalidArchive("image manifest is not an object", member)
    _, config_digest, config_size, _ = _descriptor(manifest.get("config"), member)
    config, config_member = _read_blob(archive, config_digest, config_size, member)
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise InvalidArchive("image manifest has no layers list", member)
    blobs: list[tuple[Member, str | None, int | None]] = []
    for entry in layers:
        media_type, layer_digest, layer_size, desc = _descriptor(entry, member)
        if media_type not in _LAYER_TYPES:
            raise InvalidArchive(f"unsupported layer media type {media_type!r}", member)
        if not archive.index.has(f"blobs/sha256/{layer_digest.removeprefix('sha256:')}"):
            urls = desc.get("urls")
            hint = (
                f" (a foreign layer, to be fetched from {urls[0]})"
                if isinstance(urls, list) and urls
                else ""
            )
            raise InvalidArchive(f"layer blob {layer_digest} is not in the archive{hint}", member)
        blobs.append((_blob(archive, layer_digest, layer_size, member), layer_digest, layer_size))
    return _image_plan(config, config_member, blobs)


def plan_images(archive: Archive) -> list[ImagePlan]:
    if archive.index.has("manifest.json"):
        plans = _plan_docker(archive)
    elif archive.index.has("index.json"):
        plans = _plan_oci(archive)
    else:
        raise InvalidArchive(
            "neither manifest.json (docker save) nor index.json (OCI image layout) is in the "
            "archive; archives from Docker before 1.10 are not supported"
        )
    if not plans:
        raise InvalidArchive("the archive holds no images")
    return plans
