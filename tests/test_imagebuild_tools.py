"""An image built with ``append`` against the real tools: containerd (``ctr``) and skopeo
import the saved archive with the digests winlayer made, and what containerd exports
loads back into winlayer as the same image."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from winlayer import Driver
from winlayer.images import Image, ImageStore, load, save

from .imagebuild import append_tree, load_base, make_tree, sha
from .realtools import skopeo


def build(tmp_path: Path) -> tuple[Image, Path, dict[str, Any], bytes]:
    """A base image plus a packed folder, saved: (the image, the archive, its OCI
    manifest, the manifest's bytes)."""
    driver = Driver(tmp_path / "home", backend="portable", base_images=tmp_path / "base")
    with ImageStore(driver.home) as store:
        load_base(driver, store, tmp_path)
        image = append_tree(driver, store, make_tree(tmp_path / "app"), "winlayer-test/app:1")
        archive = tmp_path / "app.tar"
        save(driver, store, "winlayer-test/app:1", archive)
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        digest = index["manifests"][0]["digest"]
        raw = tar.extractfile(f"blobs/sha256/{digest[7:]}").read()  # type: ignore[union-attr]
    assert sha(raw) == digest
    return image, archive, json.loads(raw), raw


def check_manifest(manifest: dict[str, Any], image: Image) -> None:
    """The manifest a tool reports names winlayer's config and layers."""
    assert manifest["config"]["digest"] == f"sha256:{image.id}"
    diff_ids = json.loads(image.config)["rootfs"]["diff_ids"]
    assert [layer["digest"] for layer in manifest["layers"]] == diff_ids


def test_containerd_imports_an_appended_image(tmp_path: Path, containerd: Any) -> None:
    image, archive, manifest, raw = build(tmp_path)
    containerd.ctr("images", "import", "--all-platforms", "--no-unpack", archive)

    ref = "winlayer-test/app:1"  # containerd 1.6 keeps the name as the index gives it
    listed = containerd.ctr("images", "ls").splitlines()
    row = next(line.split() for line in listed[1:] if line.split()[0] == ref)
    assert row[2] == sha(raw)  # the manifest digest containerd recorded
    assert "windows/amd64" in row  # the platform, read from the config
    stored = containerd.ctr("content", "get", sha(raw))
    assert stored.encode() == raw
    check_manifest(json.loads(stored), image)
    config = containerd.ctr("content", "get", f"sha256:{image.id}").encode()
    assert config == image.config
    content = {line.split()[0] for line in containerd.ctr("content", "ls").splitlines()[1:]}
    assert {layer["digest"] for layer in manifest["layers"]} <= content

    # What containerd exports loads back into a fresh store as the same image.
    exported = tmp_path / "exported.tar"
    containerd.ctr("images", "export", "--all-platforms", exported, ref)
    again = Driver(tmp_path / "home2", backend="portable", base_images=tmp_path / "base")
    with ImageStore(again.home) as store:
        [loaded] = load(again, store, exported)
        assert loaded.id == image.id
        assert loaded.layers == image.layers
        assert loaded.config == image.config


def test_skopeo_reads_an_appended_image(tmp_path: Path) -> None:
    image, archive, _manifest, raw = build(tmp_path)
    # The OCI layout in the archive: the very manifest bytes.
    assert skopeo("inspect", "--raw", f"oci-archive:{archive}").encode() == raw
    # The docker-save view: the same config and layers.
    docker_manifest = json.loads(skopeo("inspect", "--raw", f"docker-archive:{archive}"))
    check_manifest(docker_manifest, image)
    assert (
        skopeo("inspect", "--config", "--raw", f"docker-archive:{archive}").encode() == image.config
    )
    # Copies to OCI layouts keep every digest (--preserve-digests: skopeo would gzip the
    # layers otherwise); winlayer loads a copy as the same image.
    for source, layout in [
        ("oci-archive", tmp_path / "oci"),
        ("docker-archive", tmp_path / "layout"),
    ]:
        skopeo("copy", "--preserve-digests", f"{source}:{archive}", f"oci:{layout}:app")
        index = json.loads((layout / "index.json").read_text())
        blob = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
        check_manifest(json.loads(blob.read_bytes()), image)
    assert blob.read_bytes() != raw  # docker-archive: skopeo writes a Docker manifest
    assert (tmp_path / "oci" / "blobs" / "sha256" / sha(raw)[7:]).read_bytes() == raw
    with tarfile.open(tmp_path / "layout.tar", "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)
    again = Driver(tmp_path / "home2", backend="portable", base_images=tmp_path / "base")
    with ImageStore(again.home) as store:
        [loaded] = load(again, store, tmp_path / "layout.tar")
        assert loaded.id == image.id


@pytest.fixture(autouse=True)
def _portable_only(backend_name: str) -> None:
    """The tools run on Linux: the image is built with the portable backend once."""
    if backend_name != "portable":
        pytest.skip("the real tools run with the portable backend")
