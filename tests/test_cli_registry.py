"""winlayer pull / push through the CLI, against the real registry, and with skopeo."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Cli
from .imagebuild import docker_save, sha
from .layerbuild import base_layer, f, layer_tar
from .realtools import Registry, skopeo

LAYERS = [base_layer(f("Files/a.txt", b"a" * 3000)), layer_tar([f("Files/b.txt", b"b" * 9000)])]


def loaded(cli: Cli, tmp_path: Path) -> str:
    archive, config = docker_save(LAYERS, tags=["app:1"])
    (tmp_path / "in.tar").write_bytes(archive)
    assert cli("load", str(tmp_path / "in.tar")).returncode == 0
    return sha(config)


def test_pull_what_push_pushed(cli: Cli, registry: Registry, tmp_path: Path) -> None:
    image_id = loaded(cli, tmp_path)
    ref = f"{registry.host}/team/app:1"
    assert cli("push", "app:1", ref).returncode == 0
    other = Cli(tmp_path / "other-home", tmp_path / "other-base")
    done = other("pull", ref)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[:2] == [f"{sha(layer)[7:19]}: Pull complete" for layer in LAYERS]
    assert lines[2].startswith("Digest: sha256:")
    assert lines[3] == "Platform: windows/amd64"
    assert lines[4] == f"Status: Downloaded newer image for {ref}"
    again = other("--json", "pull", ref)
    assert again.returncode == 0
    result = json.loads(again.stdout)
    assert isinstance(result, dict)
    # Without a terminal, --json gives one event per change of a layer's state on stderr.
    events = [json.loads(line) for line in again.stderr.decode().splitlines()]
    assert events == [
        {"digest": sha(layer), "state": "exists", "done": len(layer), "total": len(layer)}
        for layer in LAYERS
    ]
    assert result["image_id"] == image_id
    assert result["downloaded"] == 0
    assert [layer["state"] for layer in result["layers"]] == ["exists", "exists"]
    assert result["platform"] == {
        "os": "windows",
        "architecture": "amd64",
        "variant": "",
        "os.version": "",
    }
    images = other.json("images", "ls")
    assert isinstance(images, list)
    assert images[0]["tags"] == [ref]


def test_pull_errors_are_one_line(cli: Cli, registry: Registry) -> None:
    missing = cli("pull", f"{registry.host}/no/such:1")
    assert missing.returncode == 1
    message = missing.stderr.decode()
    assert message.startswith(f"winlayer: error: {registry.host}/no/such:1: GET refused")
    assert "MANIFEST_UNKNOWN" in message
    assert "HTTP 404" in message
    assert len(message.splitlines()) == 1
    bad = cli("pull", "Not A Reference")
    assert bad.returncode == 1
    assert b"invalid" in bad.stderr


def test_an_image_skopeo_pushed_pulls(cli: Cli, registry: Registry, tmp_path: Path) -> None:
    archive, config = docker_save(LAYERS, tags=["app:1"])
    (tmp_path / "in.tar").write_bytes(archive)
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"docker-archive:{tmp_path / 'in.tar'}",
        f"docker://{registry.host}/skopeo/app:1",
    )
    done = cli("--json", "pull", f"{registry.host}/skopeo/app:1")
    assert done.returncode == 0, done.stderr.decode()
    assert b'"image_id": "' + sha(config).encode() in done.stdout


def test_skopeo_reads_what_winlayer_pushed(cli: Cli, registry: Registry, tmp_path: Path) -> None:
    image_id = loaded(cli, tmp_path)
    assert cli("push", "app:1", f"{registry.host}/team/app:1").returncode == 0
    config = skopeo(
        "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{registry.host}/team/app:1"
    )
    assert sha(config.encode()) == image_id
    out = tmp_path / "copied"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/team/app:1", f"oci:{out}")
    assert (out / "blobs" / "sha256" / image_id[7:]).read_bytes() == config.encode()
