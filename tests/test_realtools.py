"""The real-tool fixtures of tests/realtools.py: each starts, answers, and is gone after."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from pathlib import Path

from winlayer.archive import MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_MANIFEST

from .realtools import Containerd, Registry, skopeo


def test_registry_answers_on_loopback_and_stops(registry: Registry) -> None:
    with urllib.request.urlopen(registry.url + "/v2/", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert registry.host.startswith("127.0.0.1:")
    registry.stop()
    host, port = registry.host.split(":")
    with socket.socket() as s:
        assert s.connect_ex((host, int(port))) != 0  # nothing listens any more


def test_containerd_runs_in_its_own_namespace(containerd: Containerd) -> None:
    assert "Server:" in containerd.ctr("version")
    assert containerd.ctr("images", "ls", "-q") == ""
    assert (containerd.folder / "root" / "io.containerd.content.v1.content").is_dir()
    containerd.stop()
    assert containerd.process.poll() is not None


def test_skopeo_reads_an_oci_layout_byte_for_byte(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    config = b'{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}'
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": blob(config), "size": len(config)},
            "layers": [],
        }
    ).encode()
    descriptor = {"mediaType": MT_OCI_MANIFEST, "digest": blob(manifest), "size": len(manifest)}
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": "t"}
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [descriptor]})
    )
    assert skopeo("inspect", "--raw", f"oci:{layout}:t").encode() == manifest
    assert skopeo("inspect", "--config", "--raw", f"oci:{layout}:t").encode() == config
