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
    outside,
)
from ._platform import Platform, choose, config_platform, host_platform
from ._stream import Compression
from .chain import MAX_DEPTH
from .errors import PlatformNotFound
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


def layer_compression(media_type: str) -> Compression | None:
    """The compression a layer media type names; None where it names none (a sniff
    decides: some registries label gzip layers as plain tars)."""
    if media_type.endswith(("+gzip", ".gzip")):
        return "gzip"
    if media_type.endswith("+zstd"):
        return "zstd"
    return None


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
    config_member: str  # the archive member holding the config
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


@dataclass(frozen=True)
class _MissingLayer:
    """A layer path of a docker-save manifest that is not in the archive, with the
    manifest's ``LayerSources`` (foreign layers' descriptors, by diffID)."""

    path: str
    sources: dict[str, Any]


def missing_layer(digest: str, path: str, urls: object, referrer: str) -> InvalidArchive:
    """The error for a layer blob the archive lacks; for a foreign (non-distributable)
    layer, where to fetch it from (its descriptor's URLs) and where to put it."""
    message = f"{referrer} names the layer {path!r}, which is not in the archive"
    if isinstance(urls, list) and urls and all(isinstance(u, str) for u in urls):
        message += (
            f"; it is a foreign layer ({digest}), not distributed with the image: download "
            f"it from {urls[0]} and add it to the archive as {path!r}"
        )
    return InvalidArchive(message, referrer)


_Blob = tuple[Member | _MissingLayer, str | None, int | None]


def image_plan(config: bytes, config_name: str, blobs: Sequence[_Blob]) -> ImagePlan:
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

    def text(key: str) -> str:
        value = json_field(doc, key)
        return value if isinstance(value, str) else ""

    chains = chain_ids(diff_ids)
    layers = []
    for i, ((member, digest, size), diff_id, chain) in enumerate(
        zip(blobs, diff_ids, chains, strict=True)
    ):
        if isinstance(member, _MissingLayer):
            source = member.sources.get(diff_id)
            source = source if isinstance(source, dict) else {}
            found = source.get("digest")
            raise missing_layer(
                found if isinstance(found, str) else diff_id,
                member.path,
                source.get("urls"),
                "manifest.json",
            )
        layers.append(
            PlannedLayer(member, digest, size, diff_id, chain, chains[i - 1] if i else None)
        )
    return ImagePlan(
        config=config,
        image_id=hashlib.sha256(config).hexdigest(),
        created=text("created"),
        architecture=text("architecture"),
        os=text("os"),
        layers=layers,
        config_member=config_name,
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
        sources = json_field(entry, "LayerSources")
        blobs: list[_Blob] = []
        for path in layer_paths:
            if not isinstance(path, str):
                raise InvalidArchive(
                    f"{where} has a layer path that is not a string", "manifest.json"
                )
            if archive.index.has(path) or outside(path):
                member: Member | _MissingLayer = archive.index.resolve(path, "manifest.json")
            else:
                member = _MissingLayer(path, sources if isinstance(sources, dict) else {})
            blobs.append((member, _blob_digest(path), None))
        plan = image_plan(config, config_member, blobs)
        repo_tags = json_field(entry, "RepoTags") or []
        if not isinstance(repo_tags, list):
            raise InvalidArchive(f"{where} has RepoTags that are not a list", "manifest.json")
        plan.tags = [_tag_of(t, "manifest.json") for t in repo_tags]
        plans.append(plan)
    return plans


def descriptor(obj: object, member: str) -> tuple[str, str, int, dict[str, Any]]:
    """(mediaType, digest, size, the whole descriptor) of an OCI descriptor."""
    if not isinstance(obj, dict):
        raise InvalidArchive("descriptor is not an object", member)
    media_type, digest, size = obj.get("mediaType", ""), obj.get("digest"), obj.get("size")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidArchive(f"descriptor digest {digest!r} is not a sha256 digest", member)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArchive(f"descriptor of {digest} has no valid size", member)
    return str(media_type), digest, size, obj


def check_layer_media_type(media_type: str, member: str) -> None:
    """Refuse a layer media type that is not a (possibly compressed) layer tar."""
    if media_type not in _LAYER_TYPES:
        raise InvalidArchive(f"unsupported layer media type {media_type!r}", member)


def _blob_path(digest: str) -> str:
    return f"blobs/sha256/{digest.removeprefix('sha256:')}"


def _blob(archive: Archive, digest: str, size: int, referrer: str) -> Member:
    member = archive.index.resolve(_blob_path(digest), referrer)
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


def _read_index(archive: Archive) -> list[Any]:
    index = parse_json(archive.read("index.json", "index.json"), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidArchive("index.json has no manifests list", "index.json")
    return list(index["manifests"])


def _gives_platforms(entries: list[Any]) -> bool:
    """Whether an index says which platform each image is for: it names a nested
    (multi-platform) index, or manifests with a ``platform``."""
    return any(
        isinstance(e, dict)
        and (e.get("mediaType") in _INDEX_TYPES or isinstance(e.get("platform"), dict))
        for e in entries
    )


_CONTAINERD_NAME = "io.containerd.image.name"
_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class _Entry:
    """One image index.json lists: the manifests it may be loaded from, each with the
    platform its descriptor gives (several for a nested index, or for manifests with a
    ``platform`` that share a name), the annotations naming it, and the member that
    lists the manifests. A manifest without a ``platform`` is an entry of its own."""

    annotations: dict[str, Any]
    member: str
    manifests: list[tuple[Platform, str, int]] = field(default_factory=list)
    by_platform: bool = True


def _entries(archive: Archive, descriptors: list[Any]) -> list[_Entry]:
    entries: list[_Entry] = []
    named: dict[tuple[str, ...], _Entry] = {}
    for obj in descriptors:
        media_type, digest, size, desc = descriptor(obj, "index.json")
        annotations = desc.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        platform = Platform.from_json(desc.get("platform"))
        if media_type in _INDEX_TYPES:
            data, member = _read_blob(archive, digest, size, "index.json")
            nested = parse_json(data, member)
            entry = _Entry(annotations, member)
            for sub in nested.get("manifests", []) if isinstance(nested, dict) else []:
                sub_type, sub_digest, sub_size, sub_desc = descriptor(sub, member)
                if sub_type in _MANIFEST_TYPES:
                    sub_platform = Platform.from_json(sub_desc.get("platform"))
                    entry.manifests.append((sub_platform, sub_digest, sub_size))
            entries.append(entry)
        elif media_type not in _MANIFEST_TYPES:
            raise InvalidArchive(f"unsupported manifest media type {media_type!r}", "index.json")
        elif isinstance(desc.get("platform"), dict):
            key = tuple(str(annotations.get(k)) for k in (_CONTAINERD_NAME, _REF_NAME))
            if key not in named:
                named[key] = _Entry(annotations, "index.json")
                entries.append(named[key])
            named[key].manifests.append((platform, digest, size))
        else:
            entries.append(_Entry(annotations, "index.json", [(platform, digest, size)], False))
    return entries


def choose_manifest(
    manifests: list[tuple[Platform, str, int]], wanted: Platform, explicit: bool, where: str
) -> tuple[Platform, str, int] | None:
    """The (platform, digest, size) among `manifests` to load for `wanted`
    (:func:`winlayer._platform.choose`), or None; logs the choice when there was one to
    make (`explicit`: the platform was asked for, not the host's)."""
    chosen = choose(wanted, [platform for platform, _, _ in manifests])
    if chosen is None:
        return None
    platform = manifests[chosen][0]
    others = [p for n, (p, _, _) in enumerate(manifests) if n != chosen and wanted.matches(p)]
    if not explicit and not wanted.os_version and any(p != platform for p in others):
        log.warning(
            "%s: chose %s, the newest version, as there is no host Windows build to match "
            "(a platform option chooses another); it also holds %s",
            where,
            platform,
            ", ".join(map(str, others)),
        )
    elif others:
        log.info(
            "%s: chose %s for %s; it also holds %s",
            where,
            platform,
            wanted,
            ", ".join(map(str, others)),
        )
    return manifests[chosen]


def _pick(
    archive: Archive, entry: _Entry, wanted: Platform, explicit: bool, offered: list[str]
) -> tuple[str, int] | None:
    """(digest, size) of the manifest of `entry` to load for `wanted`
    (:func:`choose_manifest`), or None, adding the platforms it holds to `offered`. A
    manifest the index lists without its blob in the archive (an export of some platforms
    only) is not a candidate."""
    present: list[tuple[Platform, str, int]] = []
    absent: list[tuple[Platform, str, int]] = []
    for manifest in entry.manifests:
        (present if archive.index.has(_blob_path(manifest[1])) else absent).append(manifest)
    chosen = choose_manifest(present, wanted, explicit, entry.member)
    if chosen is None:
        offered += [str(platform) for platform, _, _ in present]
        offered += [f"{platform} (listed, not in the archive)" for platform, _, _ in absent]
        log.info("%s holds no image for %s", entry.member, wanted)
        return None
    return chosen[1], chosen[2]


def _plan_oci(
    archive: Archive, descriptors: list[Any], wanted: Platform, explicit: bool
) -> list[ImagePlan]:
    """The images of index.json: for each entry, the manifest for `wanted`; an entry
    for no platform is skipped, unless every entry is (:class:`PlatformNotFound`). A
    manifest without a ``platform`` is loaded as it is, unless the platform was asked
    for (`explicit`) and its config names another."""
    plans: dict[str, ImagePlan] = {}
    offered: list[str] = []
    for entry in _entries(archive, descriptors):
        if entry.by_platform:
            picked = _pick(archive, entry, wanted, explicit, offered)
            if picked is None:
                continue
            digest, size = picked
        else:
            _, digest, size = entry.manifests[0]
        plan = plans.get(digest)
        if plan is None:
            plan = _plan_oci_manifest(archive, digest, size)
            if not entry.by_platform and explicit and not _of(plan, wanted, offered):
                continue
            plans[digest] = plan
        # containerd and Docker put the full reference here; the OCI annotation may hold
        # a full reference or only a tag, which names no repository to tag.
        ref = entry.annotations.get(_CONTAINERD_NAME)
        if not ref:
            ref = entry.annotations.get(_REF_NAME)
            if isinstance(ref, str) and "/" not in ref and ":" not in ref:
                log.info("index.json names %s only by the tag %r; not tagging it", digest, ref)
                ref = None
        if ref:
            plan.tags.append(_tag_of(ref, "index.json"))
    if not plans and offered:
        raise PlatformNotFound(str(wanted), offered, "index.json")
    return list(plans.values())


def _of(plan: ImagePlan, wanted: Platform, offered: list[str]) -> bool:
    """Whether the config of `plan`, an image no index describes, names `wanted`; if
    not, its platform is added to `offered`."""
    platform = config_platform(plan.config)
    if wanted.matches(platform):
        return True
    log.info("leaving out image sha256:%s: it is for %s, not %s", plan.image_id, platform, wanted)
    offered.append(str(platform))
    return False


def _plan_oci_manifest(archive: Archive, digest: str, size: int) -> ImagePlan:
    data, member = _read_blob(archive, digest, size, "index.json")
    manifest = parse_json(data, member)
    if not isinstance(manifest, dict):
        raise InvalidArchive("image manifest is not an object", member)
    _, config_digest, config_size, _ = descriptor(manifest.get("config"), member)
    config, config_member = _read_blob(archive, config_digest, config_size, member)
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise InvalidArchive("image manifest has no layers list", member)
    blobs: list[_Blob] = []
    for entry in layers:
        media_type, layer_digest, layer_size, desc = descriptor(entry, member)
        check_layer_media_type(media_type, member)
        path = _blob_path(layer_digest)
        if not archive.index.has(path):
            raise missing_layer(layer_digest, path, desc.get("urls"), member)
        blobs.append((_blob(archive, layer_digest, layer_size, member), layer_digest, layer_size))
    return image_plan(config, config_member, blobs)


def plan_images(archive: Archive, platform: Platform | None = None) -> list[ImagePlan]:
    """The images to load from `archive`, checked, before anything is imported.

    An index.json that gives platforms (a nested index, or manifests with a
    ``platform``) chooses each image's manifest for `platform`, by default the host's
    (:func:`~winlayer._platform.host_platform`), even when a manifest.json is there too
    (``ctr images export --all-platforms`` names only the host's image in it). Otherwise
    manifest.json (docker save) is read, or index.json if there is no manifest.json; a
    `platform` given leaves out the images whose configs name another. An image whose
    config's ``os`` is not ``windows`` is refused.
    """
    wanted = platform if platform is not None else host_platform()
    descriptors = _read_index(archive) if archive.index.has("index.json") else None
    if descriptors is not None and (
        _gives_platforms(descriptors) or not archive.index.has("manifest.json")
    ):
        plans = _plan_oci(archive, descriptors, wanted, platform is not None)
    elif archive.index.has("manifest.json"):
        plans = _plan_docker(archive)
        if platform is not None:
            offered: list[str] = []
            plans = [plan for plan in plans if _of(plan, platform, offered)]
            if offered and not plans:
                raise PlatformNotFound(str(platform), offered, "manifest.json")
    else:
        raise InvalidArchive(
            "neither manifest.json (docker save) nor index.json (OCI image layout) is in the "
            "archive; archives from Docker before 1.10 are not supported"
        )
    if not plans:
        raise InvalidArchive("the archive holds no images")
    for plan in plans:
        check_windows(plan)
    return plans


def check_windows(plan: ImagePlan) -> None:
    """Refuse an image whose config's ``os`` is not ``windows``."""
    if plan.os.lower() != "windows":
        raise InvalidArchive(
            f"image sha256:{plan.image_id} is for {plan.os or 'no OS'} (its config "
            f"names os {plan.os!r}); only Windows images can be loaded",
            plan.config_member,
        )
