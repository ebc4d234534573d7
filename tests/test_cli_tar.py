"""`winlayer tar ls`, run as a user runs it (subprocess)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from .test_layertar import FILES, SD_BA, build


def winlayer(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "winlayer", *args], input=stdin, capture_output=True, check=False
    )


def sample_layer() -> bytes:
    rawsd = base64.b64encode(SD_BA).decode()
    return build(
        {**FILES, "pax": [("MSWINDOWS.fileattr", "16"), ("MSWINDOWS.rawsd", rawsd)]},
        {"name": "Files/app.exe", "data": b"MZ" * 10, "pax": [("MSWINDOWS.fileattr", "33")]},
        {"name": "Files/app.exe:Zone.Identifier", "data": b"[ZoneTransfer]"},
        {"name": "Files/same.exe", "type": "1", "linkname": "Files/app.exe"},
        {
            "name": "Files/Users",
            "type": "2",
            "linkname": "C:\\Users",
            "pax": [("MSWINDOWS.mountpoint", "1")],
        },
        {"name": "Files/.wh.old.txt", "mode": 0},
    )


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    path = tmp_path / "layer.tar"
    path.write_bytes(sample_layer())
    return path


def test_text_listing_is_aligned_and_ends_with_the_diff_id(layer: Path) -> None:
    result = winlayer("tar", "ls", str(layer))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    header, *rows = lines[: lines.index("")]
    assert header.split() == ["TYPE", "MODE", "SIZE", "MODIFIED", "(UTC)", "OWNER", "PATH"]
    path_column = header.index("PATH")
    assert [row[path_column:] for row in rows] == [
        "Files",
        "Files/app.exe",
        "Files/app.exe:Zone.Identifier",
        "Files/same.exe => Files/app.exe",
        "Files/Users -> C:\\Users (junction)",
        "Files/old.txt",
    ]
    assert rows[0].split()[:3] == ["directory", "d-----", "-"]
    assert rows[0].split()[-2] == "BA"  # owner alias from MSWINDOWS.rawsd
    assert rows[1].split()[:3] == ["file", "-ar---", "20"]
    assert rows[2].split()[:3] == ["alternate_stream", "------", "14"]
    assert rows[5].split()[0] == "whiteout"
    digest = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    assert lines[-1] == f"diffID {digest}"
    assert "6 entries, 34 bytes of data, compression none" in lines[-2]
    assert result.stderr == b""


@pytest.mark.parametrize("where", ["after", "before"])
def test_json_document(layer: Path, where: str) -> None:
    args = (
        ["tar", "ls", str(layer), "--json"]
        if where == "after"
        else ["--json", "tar", "ls", str(layer)]
    )
    result = winlayer(*args)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"entries", "diff_id", "compression", "data_size"}
    assert doc["diff_id"] == "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    assert (doc["compression"], doc["data_size"]) == ("none", 34)
    root, exe, stream, link, junction, whiteout = doc["entries"]
    assert root["owner"] == {
        "sid": "S-1-5-32-544",
        "alias": "BA",
        "name": "BUILTIN\\Administrators",
    }
    assert root["security_descriptor"] == SD_BA.hex()
    assert exe["attributes"] == 33
    assert exe["last_write_time"] == "2020-09-13T12:26:40Z"
    assert (stream["type"], stream["stream"], stream["size"]) == (
        "alternate_stream",
        "Zone.Identifier",
        14,
    )
    assert (link["type"], link["link_target"]) == ("hard_link", "Files/app.exe")
    assert (junction["mount_point"], junction["link_target"]) == (True, "C:\\Users")
    assert (whiteout["type"], whiteout["path"]) == ("whiteout", "Files/old.txt")
    assert set(exe) == {
        "path", "type", "size", "attributes", "owner", "group", "creation_time",
        "last_access_time", "last_write_time", "change_time", "link_target", "mount_point",
        "stream", "extended_attributes", "security_descriptor",
    }  # fmt: skip


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_stdin_compressed(compression: str) -> None:
    raw = sample_layer()
    blob = gzip.compress(raw) if compression == "gzip" else zstandard.ZstdCompressor().compress(raw)
    result = winlayer("--json", "tar", "ls", "-", stdin=blob)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["compression"] == compression
    assert doc["diff_id"] == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_invalid_layer_exits_1_naming_the_entry(fixtures_dir: Path) -> None:
    result = winlayer("tar", "ls", str(fixtures_dir / "some-windows-layer.tar"))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.count("\n") == 1
    assert "outside the layer's top-level folders" in err
    assert "entry 'root/', offset 3072" in err


def test_parent_links_flag(tmp_path: Path) -> None:
    path = tmp_path / "child.tar"
    path.write_bytes(build(FILES, {"name": "Files/l", "type": "1", "linkname": "Files/in-parent"}))
    refused = winlayer("tar", "ls", str(path))
    assert refused.returncode == 1
    assert b"is not in this layer (entry 'Files/l'" in refused.stderr
    accepted = winlayer("tar", "ls", "--parent-links", str(path))
    assert accepted.returncode == 0, accepted.stderr
    assert b"Files/l => Files/in-parent" in accepted.stdout


def test_missing_file_exits_1_and_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = winlayer("tar", "ls", str(tmp_path / "nope.tar"))
    assert missing.returncode == 1
    assert b"nope.tar" in missing.stderr
    assert winlayer("tar", "ls").returncode == 2
    assert winlayer("tar").returncode == 2
    assert winlayer("tar", "frobnicate", "x").returncode == 2


def test_truncated_input_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "cut.tar"
    path.write_bytes(sample_layer()[:700])
    result = winlayer("tar", "ls", str(path))
    assert result.returncode == 1
    assert b"winlayer: error:" in result.stderr
