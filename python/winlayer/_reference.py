"""Image references as docker and the distribution registry spell them:
``[registry[:port]/]path[:tag][@sha256:<hex>]``.

The grammar is distribution's reference package's: lowercase path components joined by
``.``, ``_``, ``__`` or dashes; a tag of up to 128 word characters, dots and dashes; the
first component is a registry when it has a ``.`` or a ``:``, or is ``localhost``.
A reference without a registry is Docker Hub's (``docker.io``), whose one-component names
live under ``library/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidArgument

DEFAULT_TAG = "latest"
DOCKER_HUB = "docker.io"
#: Where Docker Hub's registry API answers (``docker.io`` is only its name).
DOCKER_HUB_API = "registry-1.docker.io"

COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_IPV6 = r"\[[0-9a-fA-F:]+\]"
DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|{_IPV6})(?::[0-9]+)?"
NAME = re.compile(rf"(?:{DOMAIN}/)?{COMPONENT}(?:/{COMPONENT})*")
TAG = re.compile(r"[\w][\w.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
NAME_MAX = 255


class InvalidReference(InvalidArgument):
    """A string that is not an image reference; the message says which part is wrong."""


@dataclass(frozen=True)
class Reference:
    """A parsed reference. `registry` is the host[:port] (``docker.io`` for Docker Hub),
    `repository` the path inside it; at least one of `tag` and `digest` is set."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` as docker prints it (Docker Hub's without its host and
        ``library/``)."""
        if self.registry == DOCKER_HUB:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host[:port] that serves this reference's registry API."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def target(self) -> str:
        """What the manifest request names: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        """This reference naming the manifest `digest` too."""
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def check_name(name: str) -> None:
    """Raise InvalidReference unless `name` is a repository name (with or without a
    registry)."""
    if not NAME.fullmatch(name) or len(name) > NAME_MAX:
        raise InvalidReference(
            f"invalid repository name {name!r}: "
            "use lowercase letters, digits, '.', '_', '-' and '/'"
        )


def check_tag(tag: str) -> None:
    if not TAG.fullmatch(tag):
        raise InvalidReference(
            f"invalid tag {tag!r}: up to 128 letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )


def split_registry(name: str) -> tuple[str, str]:
    """``name`` -> (registry, repository path), as distribution decides what a first
    component is."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return DOCKER_HUB, name


def parse(ref: str) -> Reference:
    """Parse a full reference; the tag defaults to ``latest`` when there is no digest."""
    name, at, digest = ref.partition("@")
    if at and not DIGEST.fullmatch(digest):
        raise InvalidReference(f"invalid digest {digest!r} in {ref!r}: expected sha256:<64 hex>")
    tag: str | None = None
    head, colon, tail = name.rpartition(":")
    if colon and "/" not in tail:
        name, tag = head, tail
        check_tag(tag)
    check_name(name)
    registry, repository = split_registry(name)
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if tag is None and not at:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest if at else None)
