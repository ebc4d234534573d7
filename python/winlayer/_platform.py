"""Image platforms: parsing ``os/arch[/variant][:os.version]`` specifiers, the host's
platform, and choosing among the images of a multi-platform index the way containerd's
platforms package does on Windows. Pure: no I/O but the host's own version.

The Windows rule (containerd's ``windowsVersionMatcher``, written here from its
description): a Windows image matches a host when their major and minor versions are
equal and, for a host build before Windows Server 2022 (20348), the builds are equal; from
20348 on, a host also runs the images of the LTSC builds before it, back to the newest
LTSC build lower than its own (stable ABI: a 26100 host runs 20348 to 26100). An image
without ``os.version`` matches any host, and a host whose build is unknown (any OS but
Windows) matches every version. Among the matches the highest ``os.version`` wins;
winlayer puts an image whose ``os.version`` equals the wanted one, revision included,
before the others, and compares versions numerically (containerd compares the strings).
"""

from __future__ import annotations

import json
import platform as _host
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidPlatform

if sys.platform == "win32":
    import winreg

#: The LTSC builds whose images later hosts keep running (stable ABI), ascending.
_LTSC_COMPAT = (20348, 26100)
_FIRST_COMPAT_HOST = _LTSC_COMPAT[0]

_KNOWN_OS = {
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
    "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
}  # fmt: skip
_KNOWN_ARCH = {
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
    "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
    "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
}  # fmt: skip
_OS_PART = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)\))?")
_PART = re.compile(r"[A-Za-z0-9_.-]+")
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")


@dataclass(frozen=True)
class Platform:
    """An image platform as OCI describes it (``platform`` of a descriptor, or the
    ``os``, ``architecture``, ``variant`` and ``os.version`` of a config), normalized as
    containerd normalizes it (``x86_64`` is ``amd64``, ``arm64/v8`` is ``arm64``)."""

    os: str
    architecture: str = ""
    variant: str = ""
    os_version: str = ""

    @classmethod
    def of(
        cls, os: str, architecture: str = "", variant: str = "", os_version: str = ""
    ) -> Platform:
        """A normalized platform."""
        arch, var = normalize_arch(architecture, variant)
        return cls(os.lower(), arch, var, os_version)

    @classmethod
    def from_json(cls, obj: object) -> Platform:
        """The platform of a descriptor's ``platform`` object or of an image config
        (fields that are missing or not strings are empty)."""
        doc = obj if isinstance(obj, dict) else {}

        def text(key: str) -> str:
            value = doc.get(key)
            return value if isinstance(value, str) else ""

        return cls.of(text("os"), text("architecture"), text("variant"), text("os.version"))

    def __str__(self) -> str:
        """``windows/amd64 10.0.20348.2227``: for messages and text output."""
        name = "/".join(p for p in (self.os or "unknown", self.architecture, self.variant) if p)
        return f"{name} {self.os_version}" if self.os_version else name

    def as_dict(self) -> dict[str, str]:
        """The platform with OCI's field names, for JSON output."""
        return {
            "os": self.os,
            "architecture": self.architecture,
            "variant": self.variant,
            "os.version": self.os_version,
        }

    def matches(self, image: Platform) -> bool:
        """Whether an image of platform `image` is one for this (wanted) platform."""
        if (self.os, self.architecture, self.variant) != (
            image.os,
            image.architecture,
            image.variant,
        ):
            return False
        if self.os != "windows":
            return True
        return windows_compatible(self.os_version, image.os_version)


def normalize_arch(architecture: str, variant: str = "") -> tuple[str, str]:
    """(architecture, variant) named as containerd names them."""
    arch, var = architecture.lower(), variant.lower()
    if arch in ("i386", "i686", "x86"):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if var == "v1" else var
    if arch in ("aarch64", "arm64"):
        return "arm64", {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(
            var, var
        )
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        return "arm", {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(var, var)
    return arch, var


def parse_platform(spec: str) -> Platform:
    """A platform specifier as containerd reads it, ``os[/arch[/variant]]``, with the
    Windows version given as containerd does (``windows(10.0.17763)/amd64``) or after a
    colon (``windows/amd64:10.0.17763.5830``). A lone OS takes the host's architecture;
    a lone architecture is a Windows one. Raises :class:`~winlayer.InvalidPlatform`."""
    text, _, version = spec.strip().partition(":")
    parts = text.split("/")
    os_match = _OS_PART.fullmatch(parts[0])
    if (
        len(parts) > 3
        or os_match is None
        or not all(_PART.fullmatch(p) for p in parts[1:])
        or (version and not _VERSION.fullmatch(version))
    ):
        raise InvalidPlatform(spec, "expected os[/arch[/variant]][:os.version]")
    name, in_parens = os_match.group(1).lower(), os_match.group(2) or ""
    if version and in_parens and version != in_parens:
        raise InvalidPlatform(spec, "two different OS versions")
    version = version or in_parens
    if in_parens and not _VERSION.fullmatch(in_parens):
        raise InvalidPlatform(spec, f"OS version {in_parens!r} is not a version number")
    if len(parts) == 1:
        if name in _KNOWN_OS:
            return Platform.of(name, host_architecture(), "", version)
        arch, variant = normalize_arch(name)
        if arch in _KNOWN_ARCH and not in_parens:
            return Platform.of("windows", arch, variant, version)
        raise InvalidPlatform(spec, "unknown operating system or architecture")
    return Platform.of(name, parts[1], parts[2] if len(parts) == 3 else "", version)


def host_architecture() -> str:
    """This machine's architecture, named as Go's GOARCH (``amd64``, ``arm64``...)."""
    return normalize_arch(_host.machine())[0]


def windows_os_version(platform_version: tuple[int, int, int], read_ubr: Callable[[], int]) -> str:
    """``major.minor.build.revision`` of a Windows host: `platform_version` is
    ``sys.getwindowsversion().platform_version``, `read_ubr` reads the revision (the
    registry's UBR); when it cannot (an OSError), ``major.minor.build``."""
    major, minor, build = platform_version
    try:
        revision = read_ubr()
    except OSError:
        return f"{major}.{minor}.{build}"
    return f"{major}.{minor}.{build}.{revision}"


if sys.platform == "win32":

    def _read_ubr() -> int:
        with winreg.OpenKey(
            winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Windows NT\CurrentVersion"
        ) as key:
            revision, _ = winreg.QueryValueEx(key, "UBR")
        return int(revision)

    def host_os_version() -> str:
        """The Windows version of this host, ``major.minor.build.revision`` (the
        revision is the registry's UBR); empty on any other OS."""
        return windows_os_version(sys.getwindowsversion().platform_version, _read_ubr)

else:

    def host_os_version() -> str:
        """The Windows version of this host; empty on any other OS."""
        return ""


def host_platform() -> Platform:
    """The platform whose images this host runs: Windows, its architecture and, on
    Windows, its version."""
    return Platform("windows", host_architecture(), "", host_os_version())


def config_platform(config: bytes) -> Platform:
    """The platform an image config names (empty fields where it names none)."""
    try:
        doc: Any = json.loads(config)
    except (UnicodeDecodeError, ValueError):
        doc = None
    return Platform.from_json(doc)


def _version(text: str) -> tuple[int, ...]:
    """``10.0.17763.5830`` as numbers; () if it is not a dotted version."""
    return tuple(int(n) for n in text.split(".")) if _VERSION.fullmatch(text) else ()


def windows_compatible(host: str, image: str) -> bool:
    """Whether a host of Windows version `host` runs an image of version `image`
    (containerd's rule, in the module docstring). An empty version matches anything."""
    h, i = _version(host), _version(image)
    if len(h) < 3 or not image:
        return True
    if len(i) < 3 or h[:2] != i[:2]:
        return False
    if h[2] < _FIRST_COMPAT_HOST:
        return h[2] == i[2]
    oldest = max((b for b in _LTSC_COMPAT if b < h[2]), default=_FIRST_COMPAT_HOST)
    return oldest <= i[2] <= h[2]


def choose(wanted: Platform, offered: Sequence[Platform]) -> int | None:
    """The index in `offered` of the image to load for `wanted`, or None if none
    matches: an exact ``os.version`` first, then the highest version (the first of equals)."""
    matching = [n for n, p in enumerate(offered) if wanted.matches(p)]
    if not matching:
        return None
    versions = {n: _version(offered[n].os_version) for n in matching}
    width = max(len(v) for v in versions.values())
    return min(
        matching,
        key=lambda n: (
            not wanted.os_version or offered[n].os_version != wanted.os_version,
            [-v for v in versions[n] + (0,) * (width - len(versions[n]))],
            n,
        ),
    )
