"""Image archives: ``load`` and ``save`` of ``docker save`` archives and OCI image layouts.

Reading an archive
    The outer archive is a tar, plain or compressed (gzip, zstd), given as a path or a
    binary stream. It is never extracted as a whole:

    - a plain tar file (or seekable stream) is indexed by its headers alone, then each
      layer blob is read in place from its offset;
    - a compressed file is read twice as a stream: once for its headers and small metadata
      members (``manifest.json``, ``index.json``, configs, OCI manifests), once to import
      the layers; a layer that arrives before the layer beneath it is imported is held in a
      staging file under the home until its turn (archives written in chain order need none);
    - a stream that cannot be read twice (a pipe) has its layer blobs held in staging files.

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

import abc
import contextlib
import filecmp
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import tarfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._common import CHUNK, host_architecture
from ._output import output_file
from ._pipeline import BlobOpener, HashingReader, TarFeed, digest_of
from ._stream import detect, open_layer
from .chain import MAX_DEPTH
from .errors import DigestMismatch, LayerInUse, WinlayerError
from .imagestore import Image, ImageStore, StoredLayer, parse_reference

if TYPE_CHECKING:
    from .driver import Driver

log = logging.getLogger(__name__)

#: ``progress(done, total)``: bytes of layer blobs read from the archive (load) or
#: bytes written to it (save). Called from worker threads; `total` is 0 while unknown.
Progress = Callable[[int, int], None]
ArchiveSource = str | os.PathLike[str] | IO[bytes]

METADATA_LIMIT = 16 << 20  # a manifest, index or config larger than this is refused
_CACHE_LIMIT = 256 << 20  # small members held in memory while a stream is scanned
_MAX_LINK_HOPS = 16
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


class InvalidArchive(WinlayerError, ValueError):
    """An image archive is malformed; ``member`` names the archive member at fault."""

    def __init__(self, message: str, member: str = "") -> None:
        super().__init__(f"{message} (member {member!r})" if member else message)
        self.reason = message
        self.member = member


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


# -- archive members ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    offset: int  # of the data in the uncompressed outer tar
    target: str = ""  # for links: the archive path linked to
    link: bool = False


def _clean(name: str) -> str:
    """An archive path as a canonical key: no leading "./" or "/", no "." or ".." parts."""
    path = posixpath.normpath("/" + name.replace("\\", "/"))
    return path.lstrip("/")


def _two_copies(name: str) -> InvalidArchive:
    return InvalidArchive("the archive holds two different members of this name", name)


class _Index:
    """The regular files and links of an archive, by canonical name.

    A name may appear more than once only for the same member: an extraction would keep
    the last copy, a stream reader the first, so copies that differ are refused. A link
    must name the same target; a file must have the same size (:meth:`add`) and the same
    bytes, which the archive compares (`repeats`). The first copy is the one used.
    """

    def __init__(self) -> None:
        self.members: dict[str, _Member] = {}
        self.repeats: dict[str, list[_Member]] = {}  # later copies of a file, to compare

    def add(self, info: tarfile.TarInfo) -> bool:
        """Index a member; True if it repeats a file of the same name and size, whose
        bytes the caller must compare with the first copy's."""
        name = _clean(info.name)
        if info.isreg():
            member = _Member(name, info.size, info.offset_data)
        elif info.issym():
            target = _clean(posixpath.join(posixpath.dirname(name), info.linkname))
            member = _Member(name, 0, 0, target, link=True)
        elif info.islnk():
            member = _Member(name, 0, 0, _clean(info.linkname), link=True)
        else:
            return False
        first = self.members.setdefault(name, member)
        if first is member:
            return False
        if (first.link, first.target, first.size) != (member.link, member.target, member.size):
            raise _two_copies(name)
        if member.link:
            return False  # the same link again
        self.repeats.setdefault(name, []).append(member)
        return True

    def resolve(self, name: str, referrer: str) -> _Member:
        """The regular file `name` is (following links inside the archive)."""
        path = _clean(name)
        if name.startswith("/") or posixpath.normpath(name.replace("\\", "/")).startswith(".."):
            raise InvalidArchive(f"{referrer} names a path outside the archive: {name!r}", referrer)
        for _ in range(_MAX_LINK_HOPS):
            member = self.members.get(path)
            if member is None:
                raise InvalidArchive(
                    f"{referrer} names {name!r}, which is not in the archive", referrer
                )
            if not member.link:
                return member
            path = member.target
        raise InvalidArchive(f"too many links resolving {name!r}", referrer)

    def has(self, name: str) -> bool:
        return _clean(name) in self.members


class _Archive(abc.ABC):
    """Access to an archive's members; subclasses differ in how blobs are reached."""

    index: _Index

    def read(self, name: str, referrer: str) -> bytes:
        member = self.index.resolve(name, referrer)
        if member.size > METADATA_LIMIT:
            raise InvalidArchive(
                f"{member.name} is too large for metadata ({member.size} bytes)", member.name
            )
        return self._read_small(member)

    @abc.abstractmethod
    def _read_small(self, member: _Member) -> bytes:
        """The bytes of a small member (metadata: JSON, manifests)."""

    def close(self) -> None:  # noqa: B027 - most archives hold nothing to release
        pass


class _SeekableArchive(_Archive):
    """A plain tar with random access: headers indexed once, blobs read in place."""

    def __init__(self, source: ArchiveSource) -> None:
        if isinstance(source, (str, os.PathLike)):
            self._path: str | None = os.fspath(source)
            self._file: IO[bytes] = open(self._path, "rb")  # noqa: SIM115 - closed by close()
        else:
            self._path, self._file = None, source
        self._lock = threading.Lock()  # guards the shared file's position
        self.index = _Index()
        try:
            with tarfile.open(fileobj=self._file, mode="r:") as tar:
                for info in tar:
                    self.index.add(info)
            for name, copies in self.index.repeats.items():
                first = self._digest(self.index.members[name])
                if any(self._digest(copy) != first for copy in copies):
                    raise _two_copies(name)
        except tarfile.TarError as exc:
            self.close()
            raise InvalidArchive(f"not a valid tar archive ({exc})") from None
        except BaseException:
            self.close()
            raise

    def _read_small(self, member: _Member) -> bytes:
        with self._section(member) as f:
            return f.read()

    def _digest(self, member: _Member) -> str:
        with self._section(member) as f:
            return digest_of(f)[0]

    def opener(self, member: _Member) -> BlobOpener:
        return lambda: self._section(member)

    def _section(self, member: _Member) -> IO[bytes]:
        if self._path is not None:
            f = open(self._path, "rb")  # noqa: SIM115 - the feed closes it
            f.seek(member.offset)
            return io.BufferedReader(_Section(f, member.size, None, owned=True), CHUNK)
        shared = (self._lock, member.offset)
        return io.BufferedReader(_Section(self._file, member.size, shared, owned=False), CHUNK)

    def close(self) -> None:
        if self._path is not None:
            self._file.close()


class _Section(io.RawIOBase):
    """`size` bytes of a file from its current position (or, for a shared file, from an
    offset, seeking under a lock before every read)."""

    def __init__(
        self, f: IO[bytes], size: int, shared: tuple[threading.Lock, int] | None, *, owned: bool
    ) -> None:
        super().__init__()
        self._f = f
        self._left = size
        self._shared = shared
        self._owned = owned

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        if self._shared is not None:
            lock, offset = self._shared
            with lock:
                self._f.seek(offset)
                data = self._f.read(want)
            self._shared = (lock, offset + len(data))
        else:
            data = self._f.read(want)
        if not data:
            raise InvalidArchive("archive ends inside a member")
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        if self._owned and not self.closed:
            self._f.close()
        super().close()


def _open_outer(source: ArchiveSource) -> tuple[IO[bytes], str, bool]:
    """(file, compression, seekable) for an archive path or stream; the file is
    positioned at its start."""
    if isinstance(source, (str, os.PathLike)):
        f: IO[bytes] = open(source, "rb")  # noqa: SIM115 - returned to the caller
        seekable = True
    else:
        f = source
        seekable = _seekable(f)
        if not seekable and not hasattr(f, "peek"):
            f = io.BufferedReader(f)  # type: ignore[type-var]
    if seekable:
        start = f.tell()
        head = f.read(4)
        f.seek(start)
    else:
        head = f.peek(4)[:4]  # type: ignore[attr-defined]
    return f, detect(head), seekable


def _seekable(f: IO[bytes]) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _stream_tar(
    f: IO[bytes], compression: str, max_member: int
) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """The members of a (compressed) tar read as a stream, each with a reader of its data
    valid until the next member is fetched. A member of a compressed tar may be at most
    `max_member` bytes (the layer size limit: no blob is larger than its layer's tar)."""
    plain: Any = open_layer(f)[0] if compression != "none" else f
    try:
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            for info in tar:
                if compression != "none" and info.isreg() and info.size > max_member:
                    raise InvalidArchive(
                        f"member of {info.size} bytes in a {compression} archive: more than "
                        f"a layer may expand to ({max_member} bytes, max_layer_size)",
                        _clean(info.name),
                    )
                yield info, (tar.extractfile(info) if info.isreg() else None)
    except tarfile.TarError as exc:
        raise InvalidArchive(f"not a valid tar archive ({exc})") from None
    except (OSError, EOFError) as exc:
        raise InvalidArchive(f"the archive is damaged or truncated ({exc})") from None


class _StreamedArchive(_Archive):
    """A compressed or non-seekable archive: small members cached while scanning."""

    def __init__(self) -> None:
        self.index = _Index()
        self.cache: dict[str, bytes] = {}
        self._cached = 0

    def note(self, info: tarfile.TarInfo, data: IO[bytes] | None) -> bool:
        """Index a member and cache its data if it is small; False if it was not cached
        (call before anything else reads the data). A repeat of a cached file is
        compared with it here; the caller compares the others (:meth:`uncompared`)."""
        repeat = self.index.add(info)
        if data is None:
            return True
        name = _clean(info.name)
        if repeat:
            if name not in self.cache:
                return False
            if data.read() != self.cache[name]:
                raise _two_copies(name)
            self.index.repeats[name].pop()
            return True
        if info.size > METADATA_LIMIT or self._cached + info.size > _CACHE_LIMIT:
            return False
        self.cache[name] = data.read()
        self._cached += info.size
        return True

    def uncompared(self) -> set[str]:
        """Names of repeated files whose copies :meth:`note` could not compare."""
        return {name for name, copies in self.index.repeats.items() if copies}

    def _read_small(self, member: _Member) -> bytes:
        try:
            return self.cache[member.name]
        except KeyError:
            raise InvalidArchive(
                "too much metadata in the archive to hold it in memory", member.name
            ) from None


# -- the plan: images and the layers to import ------------------------------------------------


@dataclass
class _Layer:
    blob: _Member
    blob_digest: str | None  # known from a content-addressed name or a descriptor
    blob_size: int | None  # from a descriptor
    diff_id: str
    chain_id: str
    parent: str | None  # chain ID below


@dataclass
class _ImagePlan:
    config: bytes
    image_id: str
    created: str
    architecture: str
    os: str
    layers: list[_Layer]
    tags: list[tuple[str, str]] = field(default_factory=list)


def _field(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]`` with Go's encoding/json matching: exact key first, then any case.
    Docker reads configs and manifests that way, so archives in the wild rely on it."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if k.lower() == lowered:
            return v
    return None


def _json(data: bytes, member: str) -> Any:
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
    match = _BLOB_PATH.fullmatch(_clean(path))
    return f"sha256:{match.group(1)}" if match else None


def _image_plan(
    config: bytes, config_name: str, blobs: list[tuple[_Member, str | None, int | None]]
) -> _ImagePlan:
    """Checks a config against the layer blobs it is loaded with."""
    if len(blobs) > MAX_DEPTH:
        raise InvalidArchive(
            f"image {hashlib.sha256(config).hexdigest()} has {len(blobs)} layers; a layer "
            f"chain holds at most {MAX_DEPTH}",
            config_name,
        )
    doc = _json(config, config_name)
    if not isinstance(doc, dict):
        raise InvalidArchive("image config is not a JSON object", config_name)
    rootfs = _field(doc, "rootfs")
    diff_ids = _field(rootfs, "diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids
    ):
        raise InvalidArchive(
            "image config has no valid rootfs.diff_ids (sha256 digests)", config_name
        )
    rootfs_type = _field(rootfs, "type")
    if rootfs_type not in (None, "layers"):
        raise InvalidArchive(f"unsupported rootfs type {rootfs_type!r}", config_name)
    if len(diff_ids) != len(blobs):
        raise InvalidArchive(
            f"image config lists {len(diff_ids)} layers but the manifest has {len(blobs)}",
            config_name,
        )
    chains = chain_ids(diff_ids)
    layers = [
        _Layer(member, digest, size, diff_id, chain, chains[i - 1] if i else None)
        for i, ((member, digest, size), diff_id, chain) in enumerate(
            zip(blobs, diff_ids, chains, strict=True)
        )
    ]

    def text(key: str) -> str:
        value = _field(doc, key)
        return value if isinstance(value, str) else ""

    return _ImagePlan(
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


def _plan_docker(archive: _Archive) -> list[_ImagePlan]:
    doc = _json(archive.read("manifest.json", "manifest.json"), "manifest.json")
    if not isinstance(doc, list):
        raise InvalidArchive("manifest.json is not a list of images", "manifest.json")
    plans = []
    for n, entry in enumerate(doc):
        where = f"manifest.json[{n}]"
        if not isinstance(entry, dict):
            raise InvalidArchive(f"{where} is not an object", "manifest.json")
        config_path = _field(entry, "Config")
        layer_paths = _field(entry, "Layers")
        if not isinstance(config_path, str) or not isinstance(layer_paths, list):
            raise InvalidArchive(
                f"{where} needs Config (a path) and Layers (a list)", "manifest.json"
            )
        config = archive.read(config_path, "manifest.json")
        config_member = archive.index.resolve(config_path, "manifest.json").name
        if (digest := _blob_digest(config_path)) is not None:
            _check_digest(config, digest, config_member)
        blobs: list[tuple[_Member, str | None, int | None]] = []
        for path in layer_paths:
            if not isinstance(path, str):
                raise InvalidArchive(
                    f"{where} has a layer path that is not a string", "manifest.json"
                )
            blobs.append((archive.index.resolve(path, "manifest.json"), _blob_digest(path), None))
        plan = _image_plan(config, config_member, blobs)
        repo_tags = _field(entry, "RepoTags") or []
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


def _blob(archive: _Archive, digest: str, size: int, referrer: str) -> _Member:
    path = f"blobs/sha256/{digest.removeprefix('sha256:')}"
    member = archive.index.resolve(path, referrer)
    if member.size != size:
        raise InvalidArchive(
            f"blob is {member.size} bytes, its descriptor says {size}", member.name
        )
    return member


def _read_blob(archive: _Archive, digest: str, size: int, referrer: str) -> tuple[bytes, str]:
    member = _blob(archive, digest, size, referrer)
    data = archive.read(member.name, referrer)
    _check_digest(data, digest, member.name)
    return data, member.name


def _plan_oci(archive: _Archive) -> list[_ImagePlan]:
    index = _json(archive.read("index.json", "index.json"), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidArchive("index.json has no manifests list", "index.json")
    plans: dict[str, _ImagePlan] = {}
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
    archive: _Archive, digest: str, size: int, desc: dict[str, Any]
) -> tuple[str, str, int, dict[str, Any]]:
    """The Windows manifest of a multi-platform index (the host architecture's first)."""
    data, member = _read_blob(archive, digest, size, "index.json")
    nested = _json(data, member)
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


def _plan_oci_manifest(archive: _Archive, digest: str, size: int) -> _ImagePlan:
    data, member = _read_blob(archive, digest, size, "index.json")
    manifest = _json(data, member)
    if not isinstance(manifest, dict):
        raise InvalidArchive("image manifest is not an object", member)
    _, config_digest, config_size, _ = _descriptor(manifest.get("config"), member)
    config, config_member = _read_blob(archive, config_digest, config_size, member)
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise InvalidArchive("image manifest has no layers list", member)
    blobs: list[tuple[_Member, str | None, int | None]] = []
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


def _plan(archive: _Archive) -> list[_ImagePlan]:
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


# -- load ---------------------------------------------------------------------------------


class _Loader:
    """Imports the layers of a plan in chain order; undoes its imports on failure."""

    def __init__(self, driver: Driver, store: ImageStore, progress: Progress | None) -> None:
        self.driver = driver
        self.store = store
        self.layers: dict[str, StoredLayer] = {}  # chain ID -> layer, for this load
        self.created: list[str] = []  # driver layer ids this load made
        self._progress = progress
        self._done = 0
        self.total = 0
        self._progress_lock = threading.Lock()

    def pending(self, plans: list[_ImagePlan]) -> list[_Layer]:
        """The layers to import, in chain order, each chain ID once; records the ones
        the store and driver already hold."""
        todo: list[_Layer] = []
        seen: set[str] = set()
        for plan in plans:
            for layer in plan.layers:
                if layer.chain_id in seen:
                    continue
                seen.add(layer.chain_id)
                stored = self.store.layer(layer.chain_id)
                if stored is not None and self.driver.exists(stored.layer_id):
                    log.info("layer %s is in the store already; not importing it", layer.chain_id)
                    self.layers[layer.chain_id] = stored
                else:
                    todo.append(layer)
        self.total = sum(layer.blob.size for layer in todo)
        return todo

    def feed(self, layer: _Layer, opener: BlobOpener) -> TarFeed:
        return TarFeed(
            opener,
            name=layer.blob.name,
            blob_digest=layer.blob_digest,
            blob_size=layer.blob_size,
            trust_diff_id=layer.blob_digest == layer.diff_id,
            max_uncompressed=self.driver.max_layer_size,
            on_bytes=self._advance,
        )

    def run(self, todo: list[_Layer], opener: Callable[[_Layer], BlobOpener]) -> None:
        """Imports `todo` in order, the next layer's feed reading ahead."""
        feeds: list[TarFeed] = []
        try:
            for i, layer in enumerate(todo):
                if not feeds:
                    feeds.append(self.feed(layer, opener(layer)))
                if i + 1 < len(todo):
                    feeds.append(self.feed(todo[i + 1], opener(todo[i + 1])))
                self.import_layer(layer, feeds.pop(0))
        finally:
            for f in feeds:
                f.close()

    def import_layer(self, layer: _Layer, feed: TarFeed) -> None:
        layer_id = layer_id_for(layer.chain_id)
        parent = self.layers[layer.parent].layer_id if layer.parent else None
        try:
            try:
                size = self.driver.apply_diff(layer_id, parent, feed, digest=layer.diff_id)
            except DigestMismatch as exc:
                if exc.expected != layer.diff_id:
                    raise  # the blob's own digest: the feed named the blob
                raise DigestMismatch(
                    exc.expected, exc.actual, f"the layer in {layer.blob.name!r}"
                ) from None
            if feed.handed_over:
                self.created.append(layer_id)
                feed.finish()
                tar_size = feed.tar_size
            else:  # another process imported it first (or it survived a crash)
                tar_size = self._measure(layer_id, layer.diff_id)
        finally:
            feed.close()
        self.layers[layer.chain_id] = StoredLayer(
            layer.chain_id, layer_id, layer.diff_id, layer.parent, size, tar_size
        )

    def _measure(self, layer_id: str, diff_id: str) -> int:
        """Byte size of a stored layer's original tar, checked against its diffID."""
        with self.driver.diff(layer_id, original=True) as stream:
            actual, size = digest_of(stream)
        if actual != diff_id:
            raise DigestMismatch(diff_id, actual, f"layer {layer_id!r}")
        return size

    def _advance(self, n: int) -> None:
        if self._progress is None:
            return
        with self._progress_lock:
            self._done += n
            self._progress(self._done, self.total)

    def commit(self, plans: list[_ImagePlan], tag: tuple[str, str] | None) -> list[Image]:
        with self.store.transaction() as db:
            for stored in self.layers.values():
                if not self.driver.exists(stored.layer_id):
                    raise WinlayerError(
                        f"layer {stored.layer_id} was removed while the image was loaded; "
                        "load it again"
                    )
                self.store.add_layer(db, stored)
            for plan in plans:
                image = Image(
                    id=plan.image_id,
                    config=plan.config,
                    created=plan.created,
                    architecture=plan.architecture,
                    os=plan.os,
                    size=sum(self.layers[layer.chain_id].size for layer in plan.layers),
                    layers=tuple(layer.chain_id for layer in plan.layers),
                )
                self.store.insert_image(db, image)
                for name, t in [*plan.tags, *([tag] if tag else [])]:
                    self.store.set_tag(db, name, t, plan.image_id, force=True)
        return [self.store.get(plan.image_id) for plan in plans]

    def rollback(self) -> None:
        """Removes the layers this load created (newest first), unless something now
        depends on them."""
        for layer_id in reversed(self.created):
            try:
                with self.store.transaction() as db:
                    if not self.store.layer_in_use(db, layer_id):
                        self.driver.remove(layer_id)
            except LayerInUse:
                log.info("keeping layer %s: another layer now depends on it", layer_id)
            except Exception:
                log.warning(
                    "could not remove layer %s after a failed load", layer_id, exc_info=True
                )


def load(
    driver: Driver,
    store: ImageStore,
    archive: ArchiveSource,
    *,
    tag: str | None = None,
    progress: Progress | None = None,
) -> list[Image]:
    """Load a ``docker save`` archive or an OCI image layout (a tar, plain, gzip or zstd;
    a path or a binary stream) into `driver` and `store`; return the loaded images.

    `tag` (``name[:tag]``) tags the image too (the archive must hold one image). Raises
    :class:`InvalidArchive`, :class:`~winlayer.InvalidLayer` or
    :class:`~winlayer.DigestMismatch`; on any failure the store is left as it was.
    """
    extra = parse_reference(tag) if tag is not None else None
    loader = _Loader(driver, store, progress)
    staging = driver.new_staging_dir()
    f, compression, seekable = _open_outer(archive)
    owned = isinstance(archive, (str, os.PathLike))
    try:
        if compression == "none" and seekable:
            plans = _load_seekable(loader, archive if owned else f, extra)
        else:
            plans = _load_streamed(loader, f, compression, seekable, staging, extra)
        return loader.commit(plans, extra)
    except BaseException:
        loader.rollback()
        raise
    finally:
        if owned:
            f.close()
        elif f is not archive and isinstance(f, io.BufferedReader):
            f.detach()  # our read buffer around the caller's stream; theirs stays open
        shutil.rmtree(staging, ignore_errors=True)


def _check_single(plans: list[_ImagePlan], tag: tuple[str, str] | None) -> None:
    if tag is not None and len(plans) != 1:
        raise ValueError(f"the archive holds {len(plans)} images; a tag applies to one only")


def _load_seekable(
    loader: _Loader, source: ArchiveSource, tag: tuple[str, str] | None
) -> list[_ImagePlan]:
    archive = _SeekableArchive(source)
    try:
        plans = _plan(archive)
        _check_single(plans, tag)
        loader.run(loader.pending(plans), lambda layer: archive.opener(layer.blob))
        return plans
    finally:
        archive.close()


def _load_streamed(
    loader: _Loader,
    f: IO[bytes],
    compression: str,
    seekable: bool,
    staging: Path,
    tag: tuple[str, str] | None,
) -> list[_ImagePlan]:
    archive = _StreamedArchive()
    spilled: dict[str, Path] = {}
    limit = loader.driver.max_layer_size
    if not seekable:
        # A pipe is read once: small members are kept in memory, the rest in staging
        # files; then the layers are imported from those.
        for info, data in _stream_tar(f, compression, limit):
            cached = archive.note(info, data)
            if data is not None and not cached:
                name = _clean(info.name)
                path = _spill(data, staging)
                if name in spilled:  # a repeat: the first copy stays, if this is the same
                    if not filecmp.cmp(spilled[name], path, shallow=False):
                        raise _two_copies(name)
                    path.unlink()
                else:
                    spilled[name] = path
        plans = _plan(archive)
        _check_single(plans, tag)
        loader.run(loader.pending(plans), lambda layer: _held(archive, spilled, layer.blob.name))
        return plans
    # A first pass for the metadata, so that the second can stream layers straight in.
    start = f.tell()
    for info, data in _stream_tar(f, compression, limit):
        archive.note(info, data)
    if uncompared := archive.uncompared():  # large files named twice: one more pass
        f.seek(start)
        _compare_copies(_stream_tar(f, compression, limit), uncompared)
    plans = _plan(archive)
    _check_single(plans, tag)
    f.seek(start)
    todo = loader.pending(plans)
    uses = Counter(layer.blob.name for layer in todo)
    position = 0  # the next layer of `todo` to import
    seen: set[str] = set()  # only the first copy of a repeated member is used
    for info, data in _stream_tar(f, compression, limit):
        name = _clean(info.name)
        if data is None or name not in uses or name in seen:
            continue
        seen.add(name)
        if todo[position].blob.name == name and uses[name] == 1:
            feed = loader.feed(todo[position], _borrow(data))
            loader.import_layer(todo[position], feed)
            position += 1
        else:  # needed later (or more than once): hold it until its turn
            spilled[name] = _spill(data, staging)
        while position < len(todo) and todo[position].blob.name in spilled:
            layer = todo[position]
            loader.import_layer(layer, loader.feed(layer, _held(archive, spilled, layer.blob.name)))
            position += 1
    if position < len(todo):
        raise InvalidArchive("the archive changed while it was read", todo[position].blob.name)
    return plans


def _compare_copies(
    members: Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]], names: set[str]
) -> None:
    """Refuse the archive if the copies of a file named in `names` differ."""
    digests: dict[str, str] = {}
    for info, data in members:
        name = _clean(info.name)
        if data is not None and name in names:
            digest = digest_of(data)[0]
            if digests.setdefault(name, digest) != digest:
                raise _two_copies(name)


def _held(archive: _StreamedArchive, spilled: dict[str, Path], name: str) -> BlobOpener:
    """An opener of a blob held in a staging file or in memory."""
    if name in spilled:
        path = spilled[name]
        return lambda: open(path, "rb")
    data = archive.cache[name]
    return lambda: io.BytesIO(data)


def _borrow(f: IO[bytes]) -> BlobOpener:
    """An opener of a member of a streamed tar, for a feed that must not close it."""
    return lambda: io.BufferedReader(_Borrowed(f), CHUNK)


class _Borrowed(io.RawIOBase):
    """A member stream of a streamed tar, handed to a feed that must not close it."""

    def __init__(self, f: IO[bytes]) -> None:
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._f.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def _spill(data: IO[bytes], staging: Path) -> Path:
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / secrets.token_hex(8)
    with open(path, "wb") as out:
        shutil.copyfileobj(data, out, CHUNK)
    return path


# -- save ---------------------------------------------------------------------------------


def save(
    driver: Driver,
    store: ImageStore,
    image_refs: str | Sequence[str],
    out: str | os.PathLike[str] | IO[bytes],
    *,
    progress: Progress | None = None,
) -> None:
    """Write images to a ``docker save`` archive that is also an OCI image layout.

    The layer blobs are the original layer tars (``driver.diff(id, original=True)``), so
    every digest matches what was loaded: ``load(save(x))`` gives the same image id,
    diffIDs and chain IDs. A path is written as :mod:`winlayer._output` says (a regular
    file is replaced once complete, a device or FIFO written in place); a stream is
    written sequentially.
    """
    refs = [image_refs] if isinstance(image_refs, str) else list(image_refs)
    entries = [_save_entry(store, ref) for ref in refs]
    if isinstance(out, (str, os.PathLike)):
        with output_file(out) as f:
            _write_archive(driver, store, entries, f, progress)
    else:
        _write_archive(driver, store, entries, out, progress)


@dataclass
class _SaveEntry:
    image: Image
    tags: list[str]
    layers: list[StoredLayer]


def _save_entry(store: ImageStore, ref: str) -> _SaveEntry:
    image = store.get(ref)
    # As docker save: an image named by a tag carries that tag, one named by id none.
    tags: list[str] = []
    with contextlib.suppress(ValueError):
        name, tag = parse_reference(ref)
        if f"{name}:{tag}" in image.tags:
            tags = [f"{name}:{tag}"]
    config = _json(image.config, "config")
    if not isinstance(config, dict) or not isinstance(_field(config, "rootfs"), dict):
        raise WinlayerError(f"image {image.id} is a host base image; it has no layer tars to save")
    layers = []
    for chain_id in image.layers:
        stored = store.layer(chain_id)
        if stored is None:
            raise WinlayerError(f"image {image.id}: layer {chain_id} is missing from the store")
        layers.append(stored)
    return _SaveEntry(image, tags, layers)


def _write_archive(
    driver: Driver,
    store: ImageStore,
    entries: list[_SaveEntry],
    out: IO[bytes],
    progress: Progress | None,
) -> None:
    total = sum(layer.tar_size for e in entries for layer in e.layers)
    done = 0
    written: set[str] = set()
    manifest: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            _add_dir(tar, name)
        for entry in entries:
            for layer in entry.layers:
                if layer.diff_id in written:
                    continue
                written.add(layer.diff_id)
                with driver.diff(layer.layer_id, original=True) as stream:
                    hashed = HashingReader(stream)
                    info = _info(f"blobs/sha256/{layer_id_for(layer.diff_id)}", layer.tar_size)
                    tar.addfile(info, io.BufferedReader(hashed, CHUNK))  # full reads
                    _check_saved(hashed, layer)
                done += layer.tar_size
                if progress is not None:
                    progress(done, total)
            config_hex = entry.image.id
            if config_hex not in written:
                written.add(config_hex)
                _add_bytes(tar, f"blobs/sha256/{config_hex}", entry.image.config)
            oci_manifest = _oci_manifest(entry)
            manifest_digest = hashlib.sha256(oci_manifest).hexdigest()
            if manifest_digest not in written:
                written.add(manifest_digest)
                _add_bytes(tar, f"blobs/sha256/{manifest_digest}", oci_manifest)
            manifest.append(
                {
                    "Config": f"blobs/sha256/{config_hex}",
                    "RepoTags": entry.tags,
                    "Layers": [
                        f"blobs/sha256/{layer_id_for(layer.diff_id)}" for layer in entry.layers
                    ],
                }
            )
            descriptor: dict[str, Any] = {
                "mediaType": MT_OCI_MANIFEST,
                "digest": f"sha256:{manifest_digest}",
                "size": len(oci_manifest),
            }
            if not entry.tags:
                index.append(descriptor)
            for ref in entry.tags:  # one index entry per tag, annotated as Docker does
                name, _, tag = ref.rpartition(":")
                annotations = {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": tag,
                }
                index.append({**descriptor, "annotations": annotations})
                repositories.setdefault(name, {})[tag] = config_hex
        _add_bytes(
            tar,
            "index.json",
            _compact({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index}),
        )
        _add_bytes(tar, "manifest.json", _compact(manifest))
        _add_bytes(tar, "oci-layout", _compact({"imageLayoutVersion": "1.0.0"}))
        if repositories:
            _add_bytes(tar, "repositories", _compact(repositories))


def _oci_manifest(entry: _SaveEntry) -> bytes:
    return _compact(
        {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {
                "mediaType": MT_OCI_CONFIG,
                "digest": f"sha256:{entry.image.id}",
                "size": len(entry.image.config),
            },
            "layers": [
                {"mediaType": MT_OCI_LAYER, "digest": layer.diff_id, "size": layer.tar_size}
                for layer in entry.layers
            ],
        }
    )


def _check_saved(hashed: HashingReader, layer: StoredLayer) -> None:
    """Refuse a stored layer's original tar, just copied, that is not the one recorded."""
    copied = hashed.count
    extra = hashed.read(1)  # tarfile copies the recorded size; a longer tar is wrong too
    if extra or copied != layer.tar_size or hashed.digest != layer.diff_id:
        raise WinlayerError(
            f"stored layer {layer.layer_id} no longer matches its diffID "
            f"{layer.diff_id}; it cannot be saved"
        )


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))
