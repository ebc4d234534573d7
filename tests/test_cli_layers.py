"""The layer commands, run as a user runs them: a subprocess per command."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from .conftest import Cli
from .layerbuild import base_layer, d, f, layer_tar


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_import_ls_inspect_export_rm(cli: Cli, tmp_path: Path) -> None:
    tar = base_layer()
    src = tmp_path / "base.tar.gz"
    src.write_bytes(gzip.compress(tar))
    result = cli.json("import", "base", str(src), "--digest", _sha(tar))
    assert result == {"id": "base", "parent": None, "size": 1075, "diff_id": _sha(tar)}
    child = layer_tar([d("Files"), f("Files/app.exe", b"MZ")])
    piped = cli("import", "app", "-", "--parent", "base", stdin=child)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.decode().split() == ["app", _sha(child), "2", "B"]

    layers = cli.json("ls")
    assert isinstance(layers, list)
    for layer in layers:  # the folder's time, ISO 8601 UTC
        created = datetime.datetime.strptime(layer.pop("created"), "%Y-%m-%dT%H:%M:%SZ")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        assert abs((now - created).total_seconds()) < 600
    assert layers == [
        {"id": "app", "parent": "base", "size": 2, "read_write": False, "diff_id": _sha(child)},
        {"id": "base", "parent": None, "size": 1075, "read_write": False, "diff_id": _sha(tar)},
    ]
    text = cli("ls").stdout.decode().splitlines()
    assert text[0].split() == ["ID", "PARENT", "SIZE", "MODE"]
    assert text[1].split()[:2] == ["app", "base"]

    info = cli.json("inspect", "app")
    assert isinstance(info, dict)
    assert info["diff_id"] == _sha(child)
    assert info["parents"] == [str(cli.home / "base")]

    out = tmp_path / "app-original.tar"
    assert cli("export", "app", "-o", str(out), "--original").returncode == 0
    assert out.read_bytes() == child
    assert not Path(f"{out}.partial").exists()
    piped_out = cli("export", "app")
    assert piped_out.returncode == 0
    with tarfile.open(fileobj=io.BytesIO(piped_out.stdout)) as exported:
        assert exported.getnames() == ["Files", "Files/app.exe"]

    assert cli.json("changes", "app") == [
        {"path": "Files", "kind": "C"},  # the tar declares Files/ again: its metadata
        {"path": "Files/app.exe", "kind": "A"},
    ]
    assert cli.json("du", "app") == {"id": "app", "size": 2}
    assert cli.json("verify", "app", "base") == [
        {"id": "app", "diff_id": _sha(child), "ok": True},
        {"id": "base", "diff_id": _sha(tar), "ok": True},
    ]

    refused = cli("rm", "base")
    assert refused.returncode == 1
    assert b"parent of app" in refused.stderr
    assert cli("rm", "app", "base").returncode == 0
    assert cli.json("ls") == []


def test_reimport_under_the_same_id(cli: Cli, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar.gz"
    a.write_bytes(base_layer())
    b.write_bytes(gzip.compress(base_layer(f("Files/b.txt", b"b"))))
    assert cli("import", "x", str(a)).returncode == 0
    assert cli.json("import", "x", str(a))["diff_id"] == _sha(a.read_bytes())  # type: ignore[index]
    other = cli("import", "x", str(b))
    assert other.returncode == 1
    b_id = _sha(gzip.decompress(b.read_bytes()))
    assert other.stderr.decode().splitlines() == [
        f"winlayer: error: layer already holds diffID {_sha(a.read_bytes())}, "
        f"the new content has {b_id}: 'x'"
    ]
    assert cli.json("inspect", "x")["diff_id"] == _sha(a.read_bytes())  # type: ignore[index]


def test_verify_checks_each_layer_and_names_the_damaged_ones(cli: Cli, tmp_path: Path) -> None:
    tars = {n: layer_tar([d("Files"), f(f"Files/{n}.txt", n.encode() * 10)]) for n in "abc"}
    for name, tar in tars.items():
        (tmp_path / f"{name}.tar").write_bytes(tar)
        assert cli("import", name, str(tmp_path / f"{name}.tar")).returncode == 0
    (cli.home / "b" / "Files" / "b.txt").write_bytes(b"X" * 10)  # same size, other bytes
    damaged = f"winlayer: error: digest mismatch of layer 'b': expected {_sha(tars['b'])}, got "
    result = cli("verify", "a", "b", "nope", "c")
    assert result.returncode == 1
    assert result.stdout.decode().splitlines() == [
        f"a  {_sha(tars['a'])}  ok",
        f"c  {_sha(tars['c'])}  ok",
    ]
    errors = result.stderr.decode().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(damaged)
    assert errors[1] == "winlayer: error: layer not found: 'nope'"
    as_json = cli("--json", "verify", "a", "b", "c")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == [
        {"id": "a", "diff_id": _sha(tars["a"]), "ok": True},
        {"id": "c", "diff_id": _sha(tars["c"]), "ok": True},
    ]
    out = tmp_path / "b-out.tar"
    exported = cli("export", "b", "--original", "-o", str(out))
    assert exported.returncode == 1
    assert exported.stderr.decode().startswith(damaged)
    assert not out.exists()


def test_import_with_a_wrong_digest_names_the_layer(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "base.tar"
    src.write_bytes(base_layer())
    wrong = "sha256:" + "0" * 64
    result = cli("import", "base", str(src), "--digest", wrong)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"winlayer: error: digest mismatch of layer 'base': expected {wrong}, "
        f"got {_sha(src.read_bytes())}"
    ]


def test_mount_outlives_the_command(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "base.tar"
    src.write_bytes(base_layer())
    assert cli("import", "base", str(src)).returncode == 0
    assert cli("create", "ctr", "--parent", "base", "--read-write", "--size", "1G").returncode == 0
    mounted = cli("mount", "ctr")
    assert mounted.returncode == 0, mounted.stderr
    root = Path(mounted.stdout.decode().strip())
    assert (root / "Windows" / "win.ini").exists()
    (root / "hello.txt").write_text("hi")
    assert cli.json("inspect", "ctr")["mounts"] == 1  # type: ignore[index]
    assert cli("rm", "ctr").returncode == 1  # in use
    assert cli("unmount", "ctr").returncode == 0
    # as `docker diff` shows it: the folder that changed, and the file added in it
    assert cli.json("changes", "ctr") == [
        {"path": "Files", "kind": "C"},
        {"path": "Files/hello.txt", "kind": "A"},
    ]
    again = cli("unmount", "ctr")
    assert again.returncode == 1
    assert b"not mounted" in again.stderr


def test_pack_then_import(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("a")
    (tree / "b.bin").write_bytes(b"\0" * 100)
    os.link(tree / "b.bin", tree / "c.bin")
    out1, out2 = tmp_path / "1.tar", tmp_path / "2.tar"
    packed = cli.json("pack", str(tree), "-o", str(out1))
    assert cli("pack", str(tree), "-o", str(out2)).returncode == 0
    assert out1.read_bytes() == out2.read_bytes()  # deterministic
    assert isinstance(packed, dict)
    assert packed["diff_id"] == _sha(out1.read_bytes())
    listing = cli.json("tar", "ls", str(out1))
    assert isinstance(listing, dict)
    kinds = {e["path"]: e["type"] for e in listing["entries"]}
    assert kinds["Files/c.bin"] == "hard_link"
    assert kinds["Hives"] == "directory"
    imported = cli.json("import", "packed", str(out1))
    assert imported["diff_id"] == packed["diff_id"]  # type: ignore[index]


def test_pack_rejects_names_windows_cannot_hold(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "aux.txt").write_text("x")
    out = tmp_path / "x.tar"
    result = cli("pack", str(tree), "-o", str(out))
    assert result.returncode == 1
    assert b"aux.txt" in result.stderr
    assert not out.exists()
    assert not Path(f"{out}.partial").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["import", "x", "/no/such/file.tar"], 1, b"No such file"),
        (["export", "nope", "-o", "/tmp/nope.tar"], 1, b"layer not found: 'nope'"),
        (["import", "x"], 2, b"usage"),
        (["create", "a", "--size", "huge"], 1, b"invalid size"),
        (["mount"], 2, b"usage"),
        (["images"], 2, b"usage"),
    ],
)
def test_failures_are_one_clear_line(cli: Cli, args: list[str], code: int, message: bytes) -> None:
    result = cli(*args)
    assert result.returncode == code
    assert message in result.stderr
    assert result.stdout == b""
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1


def test_bad_layer_names_entry_and_offset(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "evil.tar"
    src.write_bytes(layer_tar([d("Files"), f("Files/../../x", b"x")]))
    result = cli("import", "evil", str(src))
    assert result.returncode == 1
    line = result.stderr.decode().strip()
    assert "Files/../../x" in line
    assert "offset" in line
    verbose = cli("-v", "import", "evil", str(src))
    assert b"Traceback" in verbose.stderr


def test_export_to_terminal_or_with_json_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "base.tar"
    src.write_bytes(base_layer())
    cli("import", "base", str(src))
    result = cli("--json", "export", "base")
    assert result.returncode == 2
    assert b"--json" in result.stderr


def test_gc_sweeps_leftovers(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "base.tar"
    src.write_bytes(base_layer())
    cli("import", "base", str(src))
    cli("import", "gone", str(src))
    os.replace(cli.home / "gone", cli.home / "gone-0-removing")
    # opening the store sweeps; gc reports what a crash left (nothing now)
    assert cli.json("gc") == {"swept": []}
    assert sorted(p for p in os.listdir(cli.home) if not p.startswith(".")) == ["base"]


def test_rm_removes_what_it_can_and_reports_each_failure(cli: Cli, tmp_path: Path) -> None:
    tar = tmp_path / "layer.tar"
    tar.write_bytes(base_layer())
    for layer_id in ("a", "b"):
        assert cli("import", layer_id, str(tar)).returncode == 0
    done = cli("--json", "rm", "a", "nosuch", "b", "alsomissing")
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"removed": ["a", "b"]}
    errors = done.stderr.decode().splitlines()
    assert len(errors) == 2
    assert "nosuch" in errors[0]
    assert "alsomissing" in errors[1]
    assert cli.json("ls") == []
