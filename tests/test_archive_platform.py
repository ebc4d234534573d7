"""Loading the right image: multi-platform archives (what ``ctr images export
--all-platforms`` and ``skopeo copy --all`` write), the platform option, the check that
an image is a Windows one, foreign layers and image layout directories."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from winlayer import Driver, PlatformNotFound
from winlayer._archive_members import DirectoryArchive
from winlayer.images import ImageStore, InvalidArchive, Platform, host_architecture, load

from . import stores
from .conftest import Cli
from .imagebuild import (
    L1,
    L2,
    L3,
    Pipe,
    compress,
    config_for,
    docker_save,
    make_tar,
    oci_layout,
    sha,
    write,
)
from .realtools import skopeo
from .stores import assert_pristine, check_loaded, staging_empty

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
LINUX_LAYER = make_tar([("etc/hostname", b"linux\n")])  # not a Windows layer tar
REF = "example.com/app:1.0"
V2019 = "10.0.17763.5830"
V2022 = "10.0.20348.2227"


class Image:
    """One platform's image: its config, layers, manifest and their blobs."""

    def __init__(
        self, os_name: str, layers: list[bytes], version: str = "", arch: str = "amd64"
    ) -> None:
        extra: dict[str, Any] = {"os.version": version} if version else {}
        self.layers = layers
        self.config = config_for(layers, os=os_name, architecture=arch, **extra)
        self.platform: dict[str, Any] = {"architecture": arch, "os": os_name, **extra}
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "config": {
                    "mediaType": MT_CONFIG,
                    "digest": sha(self.config),
                    "size": len(self.config),
                },
                "layers": [
                    {"mediaType": MT_LAYER, "digest": sha(layer), "size": len(layer)}
                    for layer in layers
                ],
            }
        ).encode()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {
            "mediaType": MT_MANIFEST,
            "digest": sha(self.manifest),
            "size": len(self.manifest),
            "platform": self.platform,
            **extra,
        }

    def blobs(self) -> list[bytes]:
        return [*self.layers, self.config, self.manifest]


LINUX = Image("linux", [LINUX_LAYER])
WIN2019 = Image("windows", [L1, L2], V2019)
WIN2022 = Image("windows", [L1, L3], V2022)
ALL = [LINUX, WIN2019, WIN2022]


def blob_members(blobs: list[bytes]) -> list[tuple[str, Any]]:
    unique = {sha(b): b for b in blobs}
    return [(f"blobs/sha256/{d[7:]}", b) for d, b in unique.items()]


def ctr_export(
    images: list[Image] = ALL,
    *,
    docker_manifest: Image | None = LINUX,
    present: list[Image] | None = None,
) -> bytes:
    """What ``ctr images export --all-platforms`` writes on a Linux host: the nested
    index in index.json, every platform's blobs, and a manifest.json naming the host's
    (Linux) image only. `present`: the images whose blobs are in the archive (an export
    of some platforms only); `docker_manifest`: the image manifest.json names."""
    present = images if present is None else present
    nested = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [image.descriptor() for image in images],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MT_INDEX,
                "digest": sha(nested),
                "size": len(nested),
                "annotations": {
                    "io.containerd.image.name": REF,
                    "org.opencontainers.image.ref.name": "1.0",
                },
            }
        ],
    }
    members = blob_members([b for image in present for b in image.blobs()] + [nested])
    members += [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index).encode()),
    ]
    if docker_manifest is not None:
        entry = {
            "Config": f"blobs/sha256/{sha(docker_manifest.config)[7:]}",
            "RepoTags": [REF],
            "Layers": [f"blobs/sha256/{sha(layer)[7:]}" for layer in docker_manifest.layers],
        }
        members.append(("manifest.json", json.dumps([entry]).encode()))
    return make_tar(members)


def flat_index(images: list[Image], ref: str = REF) -> bytes:
    """An OCI layout whose index.json lists each platform's manifest with its platform."""
    index = {
        "schemaVersion": 2,
        "manifests": [
            image.descriptor(annotations={"org.opencontainers.image.ref.name": ref})
            for image in images
        ],
    }
    members = blob_members([b for image in images for b in image.blobs()])
    members.append(("index.json", json.dumps(index).encode()))
    return make_tar(members)


driver = stores.driver
store = stores.store


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sets the host platform the planner matches against (a Windows build, or none)."""

    def set_host(version: str, arch: str = "amd64") -> None:
        monkeypatch.setattr(
            "winlayer._archive_plan.host_platform",
            lambda: Platform("windows", arch, "", version),
        )

    return set_host


# -- choosing the image ----------------------------------------------------------------------


@pytest.mark.parametrize("outer", ["none", "gzip", "pipe"])
def test_an_all_platforms_export_loads_the_newest_windows_image_without_a_host_build(
    driver: Driver,
    store: ImageStore,
    tmp_path: Path,
    host: Any,
    caplog: pytest.LogCaptureFixture,
    outer: str,
) -> None:
    host("")
    caplog.set_level(logging.INFO, logger="winlayer")
    source: Any = (
        Pipe(ctr_export()) if outer == "pipe" else write(tmp_path, compress(ctr_export(), outer))
    )
    (image,) = load(driver, store, source)
    assert image.id == sha(WIN2022.config)[7:]
    assert image.tags == (REF,)
    check_loaded(driver, store, WIN2022.layers, WIN2022.config)
    assert len(store.images()) == 1  # not the Linux image manifest.json names
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"chose windows/amd64 {V2022}, the newest version" in warning.getMessage()
    assert f"windows/amd64 {V2019}" in warning.getMessage()


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("10.0.17763.1000", WIN2019),  # the host's build, another revision
        ("10.0.17763.5830", WIN2019),
        ("10.0.20348.1", WIN2022),
        ("10.0.26100.2894", WIN2022),  # Windows Server 2025 runs ltsc2022 images
        ("10.0.22621.1", WIN2022),  # Windows 11 too
    ],
)
def test_a_windows_host_gets_the_image_its_build_runs(
    driver: Driver,
    store: ImageStore,
    tmp_path: Path,
    host: Any,
    caplog: pytest.LogCaptureFixture,
    version: str,
    expected: Image,
) -> None:
    host(version)
    caplog.set_level(logging.INFO, logger="winlayer")
    (image,) = load(driver, store, write(tmp_path, ctr_export()))
    assert image.id == sha(expected.config)[7:]
    check_loaded(driver, store, expected.layers, expected.config)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_among_revisions_of_the_host_build_the_exact_one_then_the_highest(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    older = Image("windows", [L1, L2], "10.0.17763.100")
    newer = Image("windows", [L1, L3], "10.0.17763.6000")
    exact = Image("windows", [L2], "10.0.17763.5830")
    host("10.0.17763.5830")
    (image,) = load(driver, store, write(tmp_path, ctr_export([older, exact, newer])))
    assert image.id == sha(exact.config)[7:]
    host("10.0.17763.42")
    (image,) = load(
        driver, store, write(tmp_path, ctr_export([older, newer], docker_manifest=None))
    )
    assert image.id == sha(newer.config)[7:]


def test_a_host_build_no_image_runs_is_refused_naming_what_there_is(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    host("10.0.14393.1")
    with pytest.raises(PlatformNotFound) as caught:
        load(driver, store, write(tmp_path, ctr_export()))
    assert caught.value.wanted == "windows/amd64 10.0.14393.1"
    assert caught.value.offered == [
        "linux/amd64",
        f"windows/amd64 {V2019}",
        f"windows/amd64 {V2022}",
    ]
    assert str(caught.value) == (
        "no image for windows/amd64 10.0.14393.1 in the archive (member 'index.json'); it "
        f"holds: linux/amd64, windows/amd64 {V2019}, windows/amd64 {V2022}"
    )
    assert_pristine(driver, store)


def test_the_host_architecture_decides(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    arm = Image("windows", [L1, L2], V2022, arch="arm64")
    host(V2022, "arm64")
    (image,) = load(driver, store, write(tmp_path, ctr_export([WIN2022, arm])))
    assert image.id == sha(arm.config)[7:]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (f"windows/amd64:{V2019}", WIN2019),
        ("windows(10.0.17763)/amd64", WIN2019),
        ("windows/x86_64", WIN2022),  # no version: the newest
        (Platform("windows", "amd64", "", V2022), WIN2022),
    ],
)
def test_the_platform_option_overrides_the_host(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any, spec: Any, expected: Image
) -> None:
    host(V2022)
    (image,) = load(driver, store, write(tmp_path, ctr_export()), platform=spec)
    assert image.id == sha(expected.config)[7:]
    check_loaded(driver, store, expected.layers, expected.config)


def test_a_platform_the_archive_lacks_is_refused_naming_what_it_holds(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    with pytest.raises(PlatformNotFound) as caught:
        load(driver, store, write(tmp_path, ctr_export()), platform="windows/arm64")
    assert caught.value.wanted == "windows/arm64"
    assert caught.value.member == "index.json"
    assert f"windows/amd64 {V2022}" in caught.value.offered
    assert_pristine(driver, store)


def test_choosing_the_linux_image_is_refused_by_its_config(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, write(tmp_path, ctr_export()), platform="linux/amd64")
    assert str(caught.value).startswith(
        f"image {sha(LINUX.config)} is for linux (its config names os 'linux'); only "
        "Windows images can be loaded"
    )
    assert caught.value.member == f"blobs/sha256/{sha(LINUX.config)[7:]}"
    assert_pristine(driver, store)


def test_platforms_listed_without_their_blobs_are_no_candidates(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    host("")
    # Exported for some platforms only: the index lists them all.
    (image,) = load(driver, store, write(tmp_path, ctr_export(present=[LINUX, WIN2019])))
    assert image.id == sha(WIN2019.config)[7:]
    with pytest.raises(PlatformNotFound) as caught:
        load(driver, store, write(tmp_path, ctr_export(present=[LINUX]), "linux-only.tar"))
    assert caught.value.offered == [
        "linux/amd64",
        f"windows/amd64 {V2019} (listed, not in the archive)",
        f"windows/amd64 {V2022} (listed, not in the archive)",
    ]


def test_a_flat_index_with_platforms_is_chosen_from(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    host(V2019)
    (image,) = load(driver, store, write(tmp_path, flat_index(ALL)))
    assert image.id == sha(WIN2019.config)[7:]
    assert image.tags == (REF,)
    check_loaded(driver, store, WIN2019.layers, WIN2019.config)


def test_images_of_an_index_with_no_match_are_left_out(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    host(V2022)
    index = json.loads(make_tar_member(flat_index([LINUX], "example.com/tool:1"), "index.json"))
    other = json.loads(make_tar_member(flat_index([WIN2022]), "index.json"))
    members = blob_members([*LINUX.blobs(), *WIN2022.blobs()])
    index["manifests"] += other["manifests"]
    members.append(("index.json", json.dumps(index).encode()))
    (image,) = load(driver, store, write(tmp_path, make_tar(members)))
    assert image.id == sha(WIN2022.config)[7:]
    assert store.images()[0].tags == (REF,)


def test_a_flat_index_with_names_that_are_not_strings_is_refused_cleanly(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    host(V2019)
    index = {
        "schemaVersion": 2,
        "manifests": [
            image.descriptor(annotations={"io.containerd.image.name": ["not", "a", "name"]})
            for image in ALL
        ],
    }
    members = blob_members([b for image in ALL for b in image.blobs()])
    members.append(("index.json", json.dumps(index).encode()))
    with pytest.raises(InvalidArchive, match="is not a string") as caught:
        load(driver, store, write(tmp_path, make_tar(members)))
    assert caught.value.member == "index.json"
    assert_pristine(driver, store)


def make_tar_member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


# -- docker save archives ----------------------------------------------------------------------


def test_a_docker_save_of_a_linux_image_is_refused_before_any_layer(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    config = config_for([L1, L2], os="Linux")
    data, _ = docker_save([L1, L2], config=config, layout="blobs")
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, write(tmp_path, data))
    assert "is for Linux (its config names os 'Linux')" in str(caught.value)
    assert sha(config) in str(caught.value)
    assert caught.value.member == f"blobs/sha256/{sha(config)[7:]}"
    assert_pristine(driver, store)


def test_a_config_without_os_is_refused(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    config = json.loads(config_for([L1]))
    del config["os"]
    data, _ = docker_save([L1], config=json.dumps(config).encode())
    with pytest.raises(InvalidArchive, match=re.escape("is for no OS (its config names os '')")):
        load(driver, store, write(tmp_path, data))
    assert_pristine(driver, store)


def test_the_os_is_matched_in_any_case(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    config = config_for([L1], os="WINDOWS")
    data, _ = docker_save([L1], config=config)
    (image,) = load(driver, store, write(tmp_path, data))
    assert image.id == sha(config)[7:]


def test_a_docker_save_with_an_index_without_platforms_goes_by_manifest_json(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    # Docker 25's save writes both; its index.json gives no platforms.
    data, config = docker_save([L1, L2], layout="blobs", tags=["app:1"])
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": MT_MANIFEST, "digest": sha(b"x"), "size": 1}],
    }
    members = [(n, b) for n, b in tar_members(data).items()] + [
        ("index.json", json.dumps(index).encode())
    ]
    (image,) = load(driver, store, write(tmp_path, make_tar(members)))
    assert image.id == sha(config)[7:]
    assert image.tags == ("app:1",)


def tar_members(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar:
            if info.issym():
                out[info.name] = ("symlink", info.linkname)
            elif info.isreg():
                member = tar.extractfile(info)
                assert member is not None
                out[info.name] = member.read()
    return out


def test_the_platform_option_leaves_out_other_images_of_a_docker_save(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    config = config_for([L1, L2], **{"os.version": V2019})
    data, _ = docker_save([L1, L2], config=config)
    with pytest.raises(PlatformNotFound) as caught:
        load(driver, store, write(tmp_path, data), platform="windows/arm64")
    assert caught.value.offered == [f"windows/amd64 {V2019}"]
    assert caught.value.member == "manifest.json"
    assert_pristine(driver, store)
    with pytest.raises(PlatformNotFound):
        load(driver, store, write(tmp_path, data), platform=f"windows/amd64:{V2022}")
    (image,) = load(driver, store, write(tmp_path, data), platform=f"windows/amd64:{V2019}")
    assert image.id == sha(config)[7:]


def test_the_platform_option_checks_an_index_entry_without_platform_by_its_config(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, config = oci_layout([L1])  # config: windows/amd64, no os.version
    with pytest.raises(PlatformNotFound) as caught:
        load(driver, store, write(tmp_path, data), platform="windows/arm64")
    assert caught.value.offered == ["windows/amd64"]
    (image,) = load(driver, store, write(tmp_path, data), platform="windows/amd64")
    assert image.id == sha(config)[7:]


# -- foreign layers ---------------------------------------------------------------------------

FOREIGN_URL = "https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:" + "ab" * 32
MT_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


def test_a_docker_save_without_its_foreign_layer_names_the_url(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    blob = compress(L1, "gzip")
    config = config_for([L1, L2])
    l2 = f"blobs/sha256/{sha(L2)[7:]}"
    entry = {
        "Config": "c.json",
        "RepoTags": ["app:1"],
        "Layers": [f"blobs/sha256/{sha(blob)[7:]}", l2],
        "LayerSources": {
            sha(L1): {
                "mediaType": MT_FOREIGN,
                "size": len(blob),
                "digest": sha(blob),
                "urls": [FOREIGN_URL],
            }
        },
    }
    data = make_tar([(l2, L2), ("c.json", config), ("manifest.json", json.dumps([entry]).encode())])
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, write(tmp_path, data))
    assert str(caught.value) == (
        f"manifest.json names the layer 'blobs/sha256/{sha(blob)[7:]}', which is not in the "
        f"archive; it is a foreign layer ({sha(blob)}), not distributed with the image: "
        f"download it from {FOREIGN_URL} and add it to the archive as "
        f"'blobs/sha256/{sha(blob)[7:]}' (member 'manifest.json')"
    )
    assert_pristine(driver, store)


def test_a_missing_layer_that_is_not_foreign_is_named(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    entry = {"Config": "c.json", "Layers": ["gone/layer.tar"], "LayerSources": {}}
    data = make_tar([("c.json", config_for([L1])), ("manifest.json", json.dumps([entry]).encode())])
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, write(tmp_path, data))
    assert caught.value.reason == (
        "manifest.json names the layer 'gone/layer.tar', which is not in the archive"
    )


def test_an_oci_layout_without_its_foreign_layer_names_the_url(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, _ = oci_layout(
        [L1, L2],
        tamper={
            "0.urls": [FOREIGN_URL],
            "0.mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar",
        },
    )
    members = {n: b for n, b in tar_members(data).items() if n != f"blobs/sha256/{sha(L1)[7:]}"}
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, write(tmp_path, make_tar(list(members.items()))))
    assert f"download it from {FOREIGN_URL} and add it to the archive as " in str(caught.value)
    assert f"'blobs/sha256/{sha(L1)[7:]}'" in str(caught.value)
    assert caught.value.member.startswith("blobs/sha256/")  # the manifest


# -- image layout directories --------------------------------------------------------------------


def extract(data: bytes, folder: Path) -> Path:
    for name, content in tar_members(data).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            path.symlink_to(content[1])
        else:
            path.write_bytes(content)
    return folder


def test_load_an_oci_layout_directory(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    data, config = oci_layout([L1, L2, L3], compression=["gzip", "none", "zstd"])
    (image,) = load(driver, store, extract(data, tmp_path / "layout"))
    assert image.tags == ("example.com/app:1.0",)
    check_loaded(driver, store, [L1, L2, L3], config)
    assert staging_empty(driver)


def test_load_a_multi_platform_layout_directory(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    host(V2019)
    (image,) = load(driver, store, extract(ctr_export(), tmp_path / "layout"))
    assert image.id == sha(WIN2019.config)[7:]
    check_loaded(driver, store, WIN2019.layers, WIN2019.config)


def test_a_link_inside_the_directory_is_followed_as_in_a_tar(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, config = docker_save([L1, L2])  # legacy layout: <v1>/layer.tar links to the blob
    folder = extract(data, tmp_path / "saved")
    assert any(p.is_symlink() for p in folder.rglob("layer.tar"))
    load(driver, store, folder)
    check_loaded(driver, store, [L1, L2], config)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.json", "../.."])
def test_a_link_out_of_the_directory_is_refused(
    driver: Driver, store: ImageStore, tmp_path: Path, target: str
) -> None:
    (tmp_path / "outside.json").write_bytes(b"{}")
    folder = extract(oci_layout([L1])[0], tmp_path / "layout")
    (folder / "blobs" / "evil").symlink_to(target)
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, folder)
    assert caught.value.member == "blobs/evil"
    assert f"symbolic link to {target!r}, outside the directory" in str(caught.value)
    assert_pristine(driver, store)


def test_index_json_as_a_link_out_is_refused_not_followed(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, _ = oci_layout([L1])
    elsewhere = extract(data, tmp_path / "elsewhere")
    folder = extract(data, tmp_path / "layout")
    (folder / "index.json").unlink()
    (folder / "index.json").symlink_to(elsewhere / "index.json")
    with pytest.raises(InvalidArchive, match="outside the directory"):
        load(driver, store, folder)


def test_a_file_that_changes_after_the_walk_is_refused(tmp_path: Path) -> None:
    data, config = oci_layout([L1])
    folder = extract(data, tmp_path / "layout")
    archive = DirectoryArchive(folder)
    config_path = folder / "blobs" / "sha256" / sha(config)[7:]
    config_path.write_bytes(config + b" ")  # grown
    with pytest.raises(InvalidArchive, match="changed while it was loaded") as caught:
        archive.read(f"blobs/sha256/{sha(config)[7:]}", "index.json")
    assert caught.value.member == f"blobs/sha256/{sha(config)[7:]}"
    layer = folder / "blobs" / "sha256" / sha(L1)[7:]
    member = archive.index.resolve(f"blobs/sha256/{sha(L1)[7:]}", "x")
    replacement = tmp_path / "other"
    replacement.write_bytes(bytes(len(L1)))  # same size, another file
    os.replace(replacement, layer)
    with pytest.raises(InvalidArchive, match="replaced while it was loaded"):
        archive.opener(member)()


def test_a_file_that_shrinks_while_read_is_refused(tmp_path: Path) -> None:
    data, _ = oci_layout([L1])
    folder = extract(data, tmp_path / "layout")
    archive = DirectoryArchive(folder)
    name = f"blobs/sha256/{sha(L1)[7:]}"
    blob = archive.opener(archive.index.resolve(name, "x"))()
    os.truncate(folder / name, 100)
    with pytest.raises(InvalidArchive, match="archive ends inside a member"):
        blob.read()
    blob.close()


def test_an_unreadable_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = extract(oci_layout([L1])[0], tmp_path / "layout")
    scandir = os.scandir

    def refuse(path: Any = ".") -> Any:  # as a folder without read permission does
        if Path(path).name == "sha256":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(InvalidArchive) as caught:
        DirectoryArchive(folder)
    assert caught.value.reason == "cannot read the directory (Permission denied)"
    assert caught.value.member == "blobs/sha256"


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_load_says_which_platform_was_chosen(cli: Cli, tmp_path: Path) -> None:
    archive = write(tmp_path, ctr_export())
    result = cli("load", str(archive))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [f"Loaded image: {REF} (windows/amd64 {V2022})"]
    (loaded,) = cli.json("load", str(archive), "--platform", f"windows/amd64:{V2019}")  # type: ignore[misc]
    assert loaded["id"] == sha(WIN2019.config)
    assert loaded["platform"] == {
        "os": "windows",
        "architecture": "amd64",
        "variant": "",
        "os.version": V2019,
    }
    assert loaded["tags"] == [REF]


def test_cli_load_of_a_layout_directory(cli: Cli, tmp_path: Path) -> None:
    folder = extract(ctr_export(), tmp_path / "layout")
    (loaded,) = cli.json("load", str(folder), "--platform", "windows/amd64")  # type: ignore[misc]
    assert loaded["id"] == sha(WIN2022.config)
    assert loaded["platform"]["os.version"] == V2022


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        ("windows/amd64/v1/x", "winlayer: error: invalid platform 'windows/amd64/v1/x': expected"),
        ("windows/arm64", "winlayer: error: no image for windows/arm64 in the archive"),
        ("linux/amd64", "winlayer: error: image sha256:"),
    ],
)
def test_cli_load_platform_errors_are_one_line(
    cli: Cli, tmp_path: Path, platform: str, message: str
) -> None:
    result = cli("load", str(write(tmp_path, ctr_export())), "--platform", platform)
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith(message)
    assert cli.json("images", "ls") == []
    assert cli.json("ls") == []


# -- a real containerd export -----------------------------------------------------------------


def test_load_what_ctr_exports_with_all_platforms(
    containerd: Any, driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    """containerd's own multi-platform export (an index of a Linux and two Windows
    images, imported as content only) loads the Windows image, as the hand-built
    equivalent above does."""
    source = write(tmp_path, ctr_export(docker_manifest=None), "multi.tar")
    containerd.ctr("images", "import", "--all-platforms", "--no-unpack", source)
    assert REF in containerd.ctr("images", "ls", "-q").split()
    exported = tmp_path / "exported.tar"
    containerd.ctr("images", "export", "--all-platforms", exported, REF)
    members = tar_members(exported.read_bytes())
    if host_architecture() == "amd64":  # manifest.json is for ctr's default platform
        (entry,) = json.loads(members["manifest.json"])
        assert entry["Config"] == f"blobs/sha256/{sha(LINUX.config)[7:]}"
    host("")
    (image,) = load(driver, store, exported)
    assert image.id == sha(WIN2022.config)[7:]
    assert image.tags == (REF,)
    check_loaded(driver, store, WIN2022.layers, WIN2022.config)
    host("10.0.17763.1")
    (image,) = load(driver, store, exported)
    assert image.id == sha(WIN2019.config)[7:]
    check_loaded(driver, store, WIN2019.layers, WIN2019.config)


def test_load_what_skopeo_copies_with_all(
    driver: Driver, store: ImageStore, tmp_path: Path, host: Any
) -> None:
    """``skopeo copy --all`` to an OCI archive (which compresses the layers again): the
    Windows image for the host, the same config and diffIDs."""
    source = write(tmp_path, ctr_export(docker_manifest=None), "multi.tar")
    copied = tmp_path / "copied.tar"
    skopeo("copy", "--all", f"oci-archive:{source}:1.0", f"oci-archive:{copied}:{REF}")
    host("10.0.17763.1")
    (image,) = load(driver, store, copied)
    assert image.id == sha(WIN2019.config)[7:]
    assert image.tags == (REF,)
    check_loaded(driver, store, WIN2019.layers, WIN2019.config)
