"""Platform specifiers, the host platform and the choice among a multi-platform index's
images (containerd's Windows rule), without any archive."""

from __future__ import annotations

import sys

import pytest

from winlayer import InvalidPlatform, WinlayerError
from winlayer._platform import choose, windows_compatible
from winlayer.images import (
    Platform,
    config_platform,
    host_architecture,
    host_platform,
    parse_platform,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("windows/amd64", Platform("windows", "amd64")),
        ("windows/amd64:10.0.17763.5830", Platform("windows", "amd64", "", "10.0.17763.5830")),
        ("windows(10.0.17763)/amd64", Platform("windows", "amd64", "", "10.0.17763")),
        ("Windows/X86_64", Platform("windows", "amd64")),
        ("windows/x86-64/v1", Platform("windows", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm64/v9.0", Platform("linux", "arm64", "v9")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/armhf", Platform("linux", "arm", "v7")),
        ("linux/armel", Platform("linux", "arm", "v6")),
        ("linux/i386", Platform("linux", "386")),
        ("arm64", Platform("windows", "arm64")),
        ("amd64:10.0.20348.1", Platform("windows", "amd64", "", "10.0.20348.1")),
        (" windows/amd64 ", Platform("windows", "amd64")),
    ],
)
def test_parse_platform(spec: str, expected: Platform) -> None:
    assert parse_platform(spec) == expected


def test_a_lone_os_takes_the_host_architecture() -> None:
    assert parse_platform("windows") == Platform("windows", host_architecture())
    assert parse_platform("windows(10.0.26100)") == Platform(
        "windows", host_architecture(), "", "10.0.26100"
    )


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "expected os"),
        ("windows/amd64/v1/x", "expected os"),
        ("windows//amd64", "expected os"),
        ("windows/amd64:10.0.x", "expected os"),
        ("windows/amd 64", "expected os"),
        ("windows(10.0.1)/amd64:10.0.2", "two different OS versions"),
        ("windows(abc)/amd64", "not a version number"),
        ("nosuchthing", "unknown operating system or architecture"),
        ("amd64(10.0.1)", "unknown operating system or architecture"),
    ],
)
def test_bad_specifiers_are_refused(spec: str, reason: str) -> None:
    with pytest.raises(InvalidPlatform, match=reason) as caught:
        parse_platform(spec)
    assert caught.value.spec == spec
    assert isinstance(caught.value, (WinlayerError, ValueError))
    assert repr(spec) in str(caught.value)


def test_platform_text_and_json() -> None:
    p = Platform.of("Windows", "x86_64", "", "10.0.20348.2227")
    assert str(p) == "windows/amd64 10.0.20348.2227"
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    assert str(Platform("")) == "unknown"
    assert p.as_dict() == {
        "os": "windows",
        "architecture": "amd64",
        "variant": "",
        "os.version": "10.0.20348.2227",
    }


def test_platform_of_a_descriptor_or_config() -> None:
    assert Platform.from_json(
        {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"}
    ) == Platform("windows", "amd64", "", "10.0.17763.1")
    assert Platform.from_json({"os": 7, "architecture": ["x"]}) == Platform("")
    assert Platform.from_json(None) == Platform("")
    assert config_platform(b'{"os": "linux", "architecture": "aarch64"}') == Platform(
        "linux", "arm64"
    )
    assert config_platform(b"not json") == Platform("")


@pytest.mark.skipif(sys.platform == "win32", reason="off Windows there is no host build")
def test_the_host_platform_off_windows_has_no_build() -> None:
    assert host_platform() == Platform("windows", host_architecture())


@pytest.mark.skipif(sys.platform != "win32", reason="Windows only")
def test_the_host_platform_on_windows_has_build_and_revision() -> None:  # pragma: no cover
    version = host_platform().os_version
    major, minor, build = sys.getwindowsversion().platform_version
    assert version.startswith(f"{major}.{minor}.{build}.")
    assert version.split(".")[3].isdigit()


@pytest.mark.parametrize(
    ("host", "image", "runs"),
    [
        # Before Windows Server 2022 the build must be the host's own.
        ("10.0.17763.5830", "10.0.17763.1", True),
        ("10.0.17763.5830", "10.0.17763.9999", True),
        ("10.0.17763.5830", "10.0.14393.1", False),
        ("10.0.14393.1", "10.0.17763.1", False),
        # From 20348 on: the LTSC builds back to the newest one below the host's.
        ("10.0.20348.2227", "10.0.20348.1", True),
        ("10.0.20348.2227", "10.0.17763.5830", False),
        ("10.0.22621.1", "10.0.20348.2227", True),  # Windows 11 runs ltsc2022
        ("10.0.22621.1", "10.0.22631.1", False),  # not a newer build
        ("10.0.26100.1", "10.0.20348.2227", True),  # ltsc2025 runs ltsc2022
        ("10.0.26100.1", "10.0.25398.1", True),
        ("10.0.26100.1", "10.0.17763.1", False),
        ("10.0.26200.1", "10.0.26100.1", True),  # after ltsc2025: back to ltsc2025
        ("10.0.26200.1", "10.0.20348.1", False),
        ("6.3.9600.1", "10.0.9600.1", False),  # major.minor must agree
        # An unknown host, or an image that names no version, matches.
        ("", "10.0.17763.1", True),
        ("10.0.17763.1", "", True),
        ("10.0.17763.1", "garbage", False),
        ("10", "10.0.17763.1", True),
    ],
)
def test_windows_compatibility(host: str, image: str, runs: bool) -> None:
    assert windows_compatible(host, image) is runs


def w(version: str, arch: str = "amd64") -> Platform:
    return Platform("windows", arch, "", version)


def test_choose_prefers_an_exact_version_then_the_highest() -> None:
    offered = [w("10.0.17763.5830"), w("10.0.17763.6000"), w("10.0.17763.100")]
    assert choose(w("10.0.17763.5830"), offered) == 0
    assert choose(w("10.0.17763.42"), offered) == 1  # no exact one: highest revision
    assert choose(w(""), offered) == 1


def test_choose_compares_versions_as_numbers() -> None:
    offered = [w("10.0.9999.9"), w("10.0.17763.1")]  # as strings "9999" > "17763"
    assert choose(w(""), offered) == 1
    assert choose(w(""), [w("10.0.20348.9"), w("10.0.20348.10")]) == 1
    assert choose(w(""), [w("10.0.20348"), w("10.0.20348.1")]) == 1


def test_choose_filters_by_os_architecture_and_build() -> None:
    linux = Platform("linux", "amd64")
    offered = [linux, w("10.0.17763.1", "arm64"), w("10.0.17763.1"), w("10.0.20348.1")]
    assert choose(w("10.0.17763.7"), offered) == 2
    assert choose(w("10.0.20348.7"), offered) == 3
    assert choose(w("10.0.26100.7"), offered) == 3
    assert choose(w("10.0.17763.7", "arm64"), offered) == 1
    assert choose(w("10.0.14393.7"), offered) is None
    assert choose(Platform("linux", "amd64"), offered) == 0
    assert choose(Platform("linux", "arm64"), offered) is None
    assert choose(w(""), []) is None


def test_choose_takes_the_first_of_equals_and_versionless_images_match() -> None:
    assert choose(w("10.0.17763.1"), [w(""), w("")]) == 0
    assert choose(w("10.0.17763.1"), [w(""), w("10.0.17763.1")]) == 1
    assert choose(w(""), [w("10.0.17763.1"), w("10.0.17763.1")]) == 0
