"""The image commands through subprocesses: install-base, restore, ls, load, save."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from .conftest import Cli
from .imagebuild import hello_archive
from .layerbuild import base_layer, d, f

HIVES = ("DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM")


def _base_tar(tmp_path: Path) -> Path:
    config = "Files/Windows/System32/config/"
    tar = base_layer(d(config.rstrip("/")), *(f(config + hive, b"regf") for hive in HIVES))
    path = tmp_path / "servercore.tar"
    path.write_bytes(tar)
    return path


def test_install_restore_ls(cli: Cli, tmp_path: Path) -> None:
    installed = cli.json(
        "images", "install-base", "ServerCore", "10.0.20348.1", str(_base_tar(tmp_path))
    )
    assert isinstance(installed, dict)
    assert Path(installed["path"]).name == "ServerCore_10.0.20348.1"
    restored = cli.json("images", "restore")
    assert isinstance(restored, dict)
    assert len(restored["restored"]) == 1
    assert cli.json("images", "restore") == {"restored": []}
    (image,) = cli.json("images", "ls")  # type: ignore[misc]
    assert image["tags"] == ["servercore:10.0.20348.1"]
    text = cli("images", "ls").stdout.decode().splitlines()
    assert text[0].split()[:3] == ["TAGS", "IMAGE", "ID"]
    assert text[1].startswith("servercore:10.0.20348.1")


def test_load_save_round_trip(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "hello.tar"
    archive.write_bytes(hello_archive(base_layer()))
    loaded = cli.json("load", str(archive), "--tag", "hello:latest")
    assert isinstance(loaded, list)
    assert sorted(loaded[0]["tags"]) == ["hello:1", "hello:latest"]
    out = tmp_path / "saved.tar"
    assert cli("save", "hello:1", "-o", str(out)).returncode == 0
    assert cli("--home", str(tmp_path / "other"), "load", str(out)).returncode == 0
    again = Cli(tmp_path / "other", tmp_path / "base").json("images", "ls")
    assert isinstance(again, list)
    assert again[0]["id"] == loaded[0]["id"]  # same config, same layers: same image
    piped = cli("load", "-", stdin=archive.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert b"Loaded image: hello:1" in piped.stdout


def test_load_of_a_broken_archive_is_one_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    result = cli("load", str(bad))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert cli.json("images", "ls") == []


def test_load_obeys_the_layer_size_limit(cli: Cli, tmp_path: Path) -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(base_layer(f("Files/zeros", bytes(8 << 20))))
    archive = tmp_path / "bomb.tar"
    archive.write_bytes(hello_archive(bomb))
    cli.env["WINLAYER_MAX_LAYER_SIZE"] = "1MiB"
    result = cli("load", str(archive))
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert f"zstd data expands past the limit of {1 << 20} uncompressed bytes" in line
    assert "entry 'l1/layer.tar'" in line
    assert cli.json("images", "ls") == []
    assert cli.json("ls") == []


def test_load_refuses_an_image_deeper_than_125_layers(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "deep.tar"
    archive.write_bytes(hello_archive(base_layer(), depth=10_000))
    result = cli("load", str(archive))
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert "has 10000 layers; a layer chain holds at most 125" in line
    assert cli.json("ls") == []


def _damage(db: Path, how: str) -> None:
    if how == "page":  # overwrite the middle third: the pages of tags and layers
        size = db.stat().st_size
        with open(db, "r+b") as f:
            f.seek(size // 3)
            f.write(b"\xff" * (size // 3))
    elif how == "dropped-table":
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("DROP TABLE tags")
            conn.commit()
    else:
        os.truncate(db, db.stat().st_size // 2)


@pytest.mark.parametrize("command", ["images ls", "load", "save"])
@pytest.mark.parametrize("how", ["page", "dropped-table", "truncated"])
def test_a_damaged_image_store_is_one_line_naming_it(
    cli: Cli, tmp_path: Path, how: str, command: str
) -> None:
    archive = tmp_path / "hello.tar"
    archive.write_bytes(hello_archive(base_layer()))
    assert cli("load", str(archive)).returncode == 0
    db = cli.home / ".winlayer" / "images.db"
    _damage(db, how)
    layers = cli.json("ls")
    other = tmp_path / "other.tar"  # new layers: a failed load must take them out again
    other.write_bytes(hello_archive(base_layer(f("Files/new.txt", b"new"))))
    args = {
        "images ls": ["images", "ls"],
        "load": ["load", str(other)],
        "save": ["save", "hello:1", "-o", str(tmp_path / "out.tar")],
    }[command]
    result = cli(*args)
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("winlayer: error: unreadable image store (")
    assert line.endswith(f": '{db}'")
    assert cli.json("ls") == layers
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize("compressed", [False, True])
def test_load_refuses_a_layer_member_named_twice(
    cli: Cli, tmp_path: Path, compressed: bool
) -> None:
    import gzip

    archive = hello_archive(base_layer())
    other = base_layer(f("Files/other.txt", b"other"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in kept:
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("l1/layer.tar")
        info.size = len(other)
        tar.addfile(info, io.BytesIO(other))
    path = tmp_path / "twice.tar"
    path.write_bytes(gzip.compress(buf.getvalue()) if compressed else buf.getvalue())
    result = cli("load", str(path))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "winlayer: error: the archive holds two different members of this name "
        "(member 'l1/layer.tar')"
    ]
    assert cli.json("images", "ls") == []


def test_a_home_keeps_its_own_base_images(cli: Cli, tmp_path: Path) -> None:
    """Without $WINLAYER_BASE_IMAGES, --home keeps base images under itself: one user's
    base images never appear in another home."""
    del cli.env["WINLAYER_BASE_IMAGES"]
    cli.env["XDG_DATA_HOME"] = str(tmp_path / "per-user")  # the default, were it used
    installed = cli.json("images", "install-base", "Nano", "10.0.1", str(_base_tar(tmp_path)))
    assert isinstance(installed, dict)
    assert Path(installed["path"]).parent == cli.home / ".winlayer" / "base-images"
    assert not (tmp_path / "per-user").exists()
    other = Cli(tmp_path / "other-home", tmp_path / "unused")
    del other.env["WINLAYER_BASE_IMAGES"]
    assert other.json("images", "restore") == {"restored": []}
    assert len(cli.json("images", "restore")["restored"]) == 1  # type: ignore[index]
