"""The portable backend's own behaviour: its store on disk, metadata, crash safety,
mount modes, size limits, fixtures and concurrency."""

from __future__ import annotations

import base64
import errno
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.capabilities import needs, require
from tests.conftest import REPO
from tests.layerbuild import SD_BA, E, base_layer, d, f, layer_tar, link
from winlayer import _hcs
from winlayer.errors import DigestMismatch, InvalidLayer, StoreCorrupt


def _export(backend: _hcs.Backend, info: _hcs.DriverInfo, id: str, original: bool = False) -> bytes:
    with backend.export_layer(info, id, [], original) as stream:
        return stream.read()


def _every_kind_layer() -> bytes:
    """Folders, files (empty, large, Unicode, read-only), an ADS, a symlink, a junction,
    EAs, a creation time and a hard link, with Windows PAX records."""
    buf = io.BytesIO()
    times = {
        "LIBARCHIVE.creationtime": "1500000000.5",
        "atime": "1600000001",
        "ctime": "1600000002",
    }
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, data: bytes = b"", **pax: str) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            info.type = kind
            info.mode = {tarfile.DIRTYPE: 0o40000, tarfile.SYMTYPE: 0o120000}.get(kind, 0o100000)
            info.pax_headers = {"MSWINDOWS.rawsd": SD_BA, **times, **pax}
            if kind == tarfile.SYMTYPE:
                info.linkname = pax.pop("target")
                info.pax_headers.pop("target")
            if kind == tarfile.LNKTYPE:
                info.linkname = pax.pop("target")
                info.pax_headers = {}
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("Files", tarfile.DIRTYPE, **{"MSWINDOWS.fileattr": "16"})
        add("Files/empty.txt", tarfile.REGTYPE, **{"MSWINDOWS.fileattr": "32"})
        add(
            "Files/big.bin",
            tarfile.REGTYPE,
            random.randbytes(3 << 20),
            **{"MSWINDOWS.fileattr": "32"},
        )
        add("Files/ünïcode.txt", tarfile.REGTYPE, b"u", **{"MSWINDOWS.fileattr": "33"})
        add("Files/streams.txt", tarfile.REGTYPE, b"main", **{"MSWINDOWS.fileattr": "32"})
        info = tarfile.TarInfo("Files/streams.txt:Zone.Identifier")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"zone=3"))
        add(
            "Files/ea.txt",
            tarfile.REGTYPE,
            b"ea",
            **{
                "MSWINDOWS.fileattr": "32",
                "MSWINDOWS.xattr.USER.NOTE": base64.b64encode(b"v").decode(),
            },
        )
        add("Files/dir", tarfile.DIRTYPE, **{"MSWINDOWS.fileattr": "16"})
        add(
            "Files/dir/link.txt",
            tarfile.SYMTYPE,
            target="..\\empty.txt",
            **{"MSWINDOWS.fileattr": "1056"},
        )
        add(
            "Files/junction",
            tarfile.SYMTYPE,
            target="C:\\Windows",
            **{"MSWINDOWS.fileattr": "1040", "MSWINDOWS.mountpoint": "1"},
        )
        add("Files/dir/hard.bin", tarfile.LNKTYPE, target="Files/big.bin")
        add("Hives", tarfile.DIRTYPE, **{"MSWINDOWS.fileattr": "16"})
        add("Hives/Software_Delta", tarfile.REGTYPE, b"regf", **{"MSWINDOWS.fileattr": "32"})
    return buf.getvalue()


def test_every_kind_of_entry_round_trips(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    tar = _every_kind_layer()
    backend.import_layer(info, "all", [], io.BytesIO(tar))
    assert _export(backend, info, "all", original=True) == tar
    canonical = _export(backend, info, "all")
    backend.import_layer(info, "again", [], io.BytesIO(canonical))
    assert _export(backend, info, "again") == canonical
    with tarfile.open(fileobj=io.BytesIO(canonical)) as t:
        m = {x.name: x for x in t.getmembers()}
    assert m["Files/streams.txt:Zone.Identifier"].size == 6
    assert m["Files/ea.txt"].pax_headers["MSWINDOWS.xattr.USER.NOTE"] == "dg=="
    assert m["Files/junction"].pax_headers["MSWINDOWS.mountpoint"] == "1"
    assert m["Files/dir/link.txt"].linkname == "..\\empty.txt"
    assert m["Files/dir/hard.bin"].linkname == "Files/big.bin"
    assert m["Files/ünïcode.txt"].pax_headers["MSWINDOWS.fileattr"] == "33"
    assert m["Files/empty.txt"].pax_headers["LIBARCHIVE.creationtime"] == "1500000000.5"
    # Contents on disk for people to look at; symlinks are never live links there.
    layer = Path(info.home, "all")
    assert (layer / "Files" / "dir" / "hard.bin").stat().st_ino == (
        layer / "Files" / "big.bin"
    ).stat().st_ino
    assert not (layer / "Files" / "dir" / "link.txt").is_symlink()
    assert (layer / "Files" / "junction").is_dir()


def test_large_records_and_changed_records_round_trip(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    """Records over several 1 MiB blocks of the import's entry table (large EAs), and
    records changed after they were written: a file given streams, a file that becomes a
    hard-link target."""
    ea = {"MSWINDOWS.xattr.USER.BIG": base64.b64encode(random.randbytes(6000)).decode()}
    entries = [d("Files"), d("Files/many")]
    entries += [E(f"Files/many/f{i:04}.txt", data=b"%d" % i, pax=ea) for i in range(400)]
    entries += [
        f("Files/s.txt", b"main"),
        E("Files/s.txt:one", "ads", b"first"),
        E("Files/s.txt:two", "ads", b"second"),
        link("Files/many/l.txt", "Files/many/f0001.txt"),
        d("Hives"),
    ]
    tar = layer_tar(entries)
    backend.import_layer(info, "big", [], io.BytesIO(tar))
    assert _export(backend, info, "big", original=True) == tar
    with tarfile.open(fileobj=io.BytesIO(_export(backend, info, "big"))) as t:
        m = {x.name: x for x in t.getmembers()}
        streams = {n: t.extractfile(x).read() for n, x in m.items() if ":" in n}  # type: ignore[union-attr]
    assert len([n for n in m if n.startswith("Files/many/f")]) == 400
    assert (
        m["Files/many/f0399.txt"].pax_headers["MSWINDOWS.xattr.USER.BIG"]
        == ea["MSWINDOWS.xattr.USER.BIG"]
    )
    assert streams == {"Files/s.txt:one": b"first", "Files/s.txt:two": b"second"}
    assert m["Files/many/l.txt"].linkname == "Files/many/f0001.txt"
    layer = Path(info.home, "big", "Files", "many")
    assert (layer / "l.txt").stat().st_ino == (layer / "f0001.txt").stat().st_ino


def test_original_export_checks_what_it_rebuilt(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    """A stored payload changed on disk with its size kept: the rebuilt tar no longer
    hashes to the diffID, and the export fails at its end instead of passing it on."""
    tar = layer_tar([d("Files"), f("Files/big.bin", random.randbytes(5 << 20)), d("Hives")])
    backend.import_layer(info, "l", [], io.BytesIO(tar))
    stored = Path(info.home, "l", "Files", "big.bin")
    data = bytearray(stored.read_bytes())
    data[4 << 20] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch):
        _export(backend, info, "l", original=True)


def test_original_export_of_payloads_across_hash_blocks(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    """Payloads are read straight into the check's 1 MiB hash blocks: sizes that end just
    before, at and after a block's end, between headers that repeat (MATCH records), come
    back byte for byte."""
    rng = random.Random(18)
    sizes = [(1 << 20) - 1, 1, (1 << 20) + 1, 3 << 20, 0, 511, 2_500_000, 513]
    entries = [d("Files")]
    for i, size in enumerate(sizes * 3):
        entries.append(f(f"Files/d{i % 4}/f{i:03}.bin", rng.randbytes(size)))
    tar = layer_tar(entries)
    backend.import_layer(info, "l", [], io.BytesIO(tar))
    assert _export(backend, info, "l", original=True) == tar


def test_entry_under_a_symlink_is_refused(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    tar = layer_tar(
        [
            d("Files"),
            E("Files/j", "dir", pax={"MSWINDOWS.fileattr": "1040"}),
        ]
    )
    backend.import_layer(info, "ok", [], io.BytesIO(tar))  # a plain folder
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        j = tarfile.TarInfo("Files/j")
        j.type = tarfile.SYMTYPE
        j.linkname = "C:\\Windows"
        j.pax_headers = {"MSWINDOWS.mountpoint": "1", "MSWINDOWS.fileattr": "1040"}
        t.addfile(j)
        inner = tarfile.TarInfo("Files/j/evil.txt")
        inner.size = 1
        t.addfile(inner, io.BytesIO(b"x"))
    with pytest.raises(InvalidLayer, match="symbolic link or junction") as exc:
        backend.import_layer(info, "bad", [], io.BytesIO(buf.getvalue()))
    assert exc.value.entry == "Files/j/evil.txt"
    assert not Path(info.home, "bad").exists()


def test_names_compare_case_insensitively(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    tar = layer_tar(
        [d("Files"), d("Files/Dir"), f("Files/DIR/a.txt", b"1"), f("Files/dir/A.TXT", b"2")]
    )
    with pytest.raises(InvalidLayer):  # the codec refuses duplicate NTFS names
        backend.import_layer(info, "case", [], io.BytesIO(tar))
    tar = layer_tar([d("Files"), d("Files/Dir"), f("Files/DIR/a.txt", b"1")])
    backend.import_layer(info, "case", [], io.BytesIO(tar))
    assert Path(info.home, "case", "Files", "Dir", "a.txt").read_bytes() == b"1"


def test_fixtures(backend: _hcs.Backend, info: _hcs.DriverInfo, fixtures_dir: Path) -> None:
    rootfs = fixtures_dir / "windows-container-rootfs.tar"
    backend.import_layer(info, "rootfs", [], str(rootfs))
    assert _export(backend, info, "rootfs", original=True) == rootfs.read_bytes()
    with pytest.raises(InvalidLayer, match="root"):
        backend.import_layer(info, "outside", [], str(fixtures_dir / "some-windows-layer.tar"))
    assert sorted(p.name for p in Path(info.home).iterdir()) == [".winlayer-store.lock", "rootfs"]


def test_fixture_with_missing_link_targets(
    backend: _hcs.Backend, info: _hcs.DriverInfo, fixtures_dir: Path
) -> None:
    with tarfile.open(fixtures_dir / "windows-mini-image.tar.gz") as image:
        data = image.extractfile(
            "e4e02f4caaa37d28ad4b66babf9d64098e81f08c0be24ea427614eafcbbdc3de.tar"
        )
        assert data is not None
        tar = data.read()
    with pytest.raises(InvalidLayer, match="hard link") as exc:
        backend.import_layer(info, "mini", [], io.BytesIO(tar))
    assert exc.value.entry
    assert exc.value.offset >= 0
    assert not Path(info.home, "mini").exists()
    assert [p.name for p in Path(info.home).iterdir()] == [".winlayer-store.lock"]


def test_damaged_metadata_is_store_corrupt(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    backend.import_layer(info, "base", [], io.BytesIO(base_layer()))
    meta = Path(info.home, "base", "winlayer.meta")
    good = meta.read_bytes()
    # Inside the layer section (section 0), wherever the header says it lies.
    at = int.from_bytes(good[16:24], "little") + 8
    meta.write_bytes(good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :])
    with pytest.raises(StoreCorrupt, match="checksum") as exc:
        _export(backend, info, "base")
    assert exc.value.path == str(meta)
    meta.write_bytes(good[:8] + (99).to_bytes(4, "little") + good[12:])
    with pytest.raises(StoreCorrupt, match="version 99"):
        _export(backend, info, "base")
    meta.unlink()
    with pytest.raises(StoreCorrupt, match="missing"):
        _export(backend, info, "base")


def test_damaged_tar_split_section_fails_the_original_export(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    """The tar-split section is streamed, not read whole: its checksum is checked at its
    end, and the record is checked whole before the first byte of the export."""
    backend.import_layer(info, "base", [], io.BytesIO(base_layer()))
    meta = Path(info.home, "base", "winlayer.meta")
    good = meta.read_bytes()
    split_at = int.from_bytes(good[16 + 48 : 24 + 48], "little")  # section 1's offset
    split_len = int.from_bytes(good[24 + 48 : 32 + 48], "little")
    at = split_at + split_len // 2
    meta.write_bytes(good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :])
    with (
        backend.export_layer(info, "base", [], True) as stream,
        pytest.raises(StoreCorrupt, match="checksum") as exc,
    ):
        stream.read(1)
    assert exc.value.path == str(meta)
    meta.write_bytes(good[: split_at + split_len - 1])  # shorter than its header says
    with pytest.raises(StoreCorrupt):
        _export(backend, info, "base", original=True)
    meta.write_bytes(good)
    assert _export(backend, info, "base", original=True) == base_layer()


def test_size_limit_is_enforced_on_export(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    backend.import_layer(info, "base", [], io.BytesIO(base_layer()))
    chain = [os.path.join(info.home, "base")]
    backend.create_sandbox_layer(info, "box", chain[0], chain)
    backend.expand_sandbox_size(info, "box", 1000)
    backend.prepare_layer(info, "box", chain)
    try:
        root = Path(backend.get_layer_mount_path(info, "box"))
        (root / "big.bin").write_bytes(bytes(2000))
        with pytest.raises(OSError, match="size limit") as exc:
            backend.export_layer(info, "box", chain)
        assert exc.value.errno == errno.ENOSPC
        backend.expand_sandbox_size(info, "box", 10_000)
        backend.export_layer(info, "box", chain).close()
    finally:
        backend.unprepare_layer(info, "box")
    with pytest.raises(ValueError, match="sandbox"):
        backend.expand_sandbox_size(info, "base", 10)


def test_original_export_of_created_layer_is_refused(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    backend.create_layer(info, "empty", "")
    with pytest.raises(ValueError, match="not imported"):
        backend.export_layer(info, "empty", [], True)


def test_layer_files_are_published_with_the_layer(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    """A caller's files (a driver's chain and record) go into the staging folder before
    the commit's one sync and appear with the layer, never before it."""
    home = Path(info.home)
    seen: list[tuple[str, int]] = []

    def files(diff_id: str, size: int) -> dict[str, bytes]:
        seen.append((diff_id, size))
        assert not (home / "l").exists()
        return {"record.json": b'{"a": 1}', "empty": b""}

    assert backend.publishes_layer_files
    result = backend.import_layer(info, "l", [], io.BytesIO(base_layer()), None, None, None, files)
    assert seen == [(result.diff_id, result.size)]
    assert (home / "l" / "record.json").read_bytes() == b'{"a": 1}'
    assert (home / "l" / "empty").read_bytes() == b""
    assert [p for p in os.listdir(home) if p.startswith(".staging")] == []


def test_layer_files_replace_a_created_layers_own(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    """Into an empty created layer: the caller's other files are carried over, a name the
    import publishes again is the new file."""
    home = Path(info.home)
    backend.create_layer(info, "l", "")
    (home / "l" / "record.json").write_bytes(b"old")
    (home / "l" / "other.txt").write_bytes(b"kept")
    files = {"record.json": b"new"}
    backend.import_layer(
        info, "l", [], io.BytesIO(base_layer()), None, None, None, lambda *_: files
    )
    assert (home / "l" / "record.json").read_bytes() == b"new"
    assert (home / "l" / "other.txt").read_bytes() == b"kept"


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a:b", "Files", "winlayer.meta", ".."])
def test_layer_files_with_a_bad_name_leave_no_layer(
    backend: _hcs.Backend, info: _hcs.DriverInfo, name: str
) -> None:
    def files(diff_id: str, size: int) -> dict[str, bytes]:
        return {name: b"x"}

    with pytest.raises(ValueError, match="not a name for a caller's file in a layer folder") as exc:
        backend.import_layer(info, "l", [], io.BytesIO(base_layer()), None, None, None, files)
    assert str(exc.value).endswith(f": {name!r}" if name else "folder")
    assert os.listdir(info.home) == [".winlayer-store.lock"]


def test_layer_files_callback_failure_leaves_no_layer(
    backend: _hcs.Backend, info: _hcs.DriverInfo
) -> None:
    def files(diff_id: str, size: int) -> dict[str, bytes]:
        raise KeyError("no record")

    with pytest.raises(KeyError, match="no record"):
        backend.import_layer(info, "l", [], io.BytesIO(base_layer()), None, None, None, files)
    assert os.listdir(info.home) == [".winlayer-store.lock"]


def test_base_images_and_checks(backend: _hcs.Backend, tmp_path: Path) -> None:
    import json

    image = tmp_path / "base-images" / "servercore"
    config = image / "Files" / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    (image / "image.json").write_text(
        '{"Name": "ServerCore", "Version": "10.0.20348.1", "Size": 42}'
    )
    (tmp_path / "base-images" / "not-an-image").mkdir()
    images = json.loads(backend.get_base_images())["Images"]
    assert [(i["Name"], i["Version"], i["Size"], i["Path"]) for i in images] == [
        ("ServerCore", "10.0.20348.1", 42, str(image))
    ]
    assert images[0]["CreatedTime"].endswith("Z")
    for hive in ("DEFAULT", "SAM", "SECURITY", "SOFTWARE"):
        (config / hive).write_bytes(b"regf")
    with pytest.raises(FileNotFoundError, match="SYSTEM"):
        backend.process_base_image(str(image))
    (config / "system").write_bytes(b"regf")  # NTFS names: any case
    backend.process_base_image(str(image))
    with pytest.raises(FileNotFoundError, match="BCD"):
        backend.process_utility_image(str(image))
    # A damaged image.json hides nothing else: that image is listed by its Path alone,
    # for whoever restores images to report and skip.
    (image / "image.json").write_text('{"Name": "x"')
    assert json.loads(backend.get_base_images())["Images"] == [{"Path": str(image)}]


def test_grant_vm_access_is_recorded(backend: _hcs.Backend, tmp_path: Path) -> None:
    target = tmp_path / "sandbox.vhdx"
    target.write_bytes(b"")
    backend.grant_vm_access("vm-1", str(target))
    backend.grant_vm_access("vm-1", str(target))
    backend.grant_vm_access("vm-2", str(target))
    assert (
        tmp_path / "winlayer.vmaccess"
    ).read_text() == "vm-1\tsandbox.vhdx\nvm-2\tsandbox.vhdx\n"
    with pytest.raises(FileNotFoundError):
        backend.grant_vm_access("vm-1", str(tmp_path / "missing"))


def test_parallel_imports_in_threads(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    tars = {f"t{i}": base_layer(f("Files/data.bin", random.randbytes(4 << 20))) for i in range(2)}
    errors: list[BaseException] = []

    def run(id: str) -> None:
        try:
            backend.import_layer(info, id, [], io.BytesIO(tars[id]))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(id,)) for id in tars]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for id, tar in tars.items():
        assert _export(backend, info, id, original=True) == tar


_CHILD = """
import io, sys
from winlayer import _hcs
sys.path.insert(0, sys.argv[3])
from tests.layerbuild import base_layer, f
tar = base_layer(*[f(f"Files/f{i}.bin", bytes([i % 256]) * 20000) for i in range(400)])
print("ready", flush=True)
b = _hcs.portable_backend("")
b.import_layer(_hcs.DriverInfo(1, sys.argv[1]), sys.argv[2], [], io.BytesIO(tar))
print("done", flush=True)
"""


@needs("sigkill")
@pytest.mark.parametrize("seed", range(6))
def test_crash_during_import_leaves_nothing(
    backend: _hcs.Backend, info: _hcs.DriverInfo, seed: int
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, info.home, "victim", str(REPO)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    time.sleep(random.Random(seed).uniform(0, 0.25))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    backend.sweep(info)
    names = sorted(p.name for p in Path(info.home).iterdir())
    assert names in ([".winlayer-store.lock"], [".winlayer-store.lock", "victim"])
    if "victim" in names:  # the import finished before the kill: the layer is whole
        with backend.export_layer(info, "victim", []) as s:
            assert len(s.read()) > 400 * 20000


def test_sweep_keeps_running_imports(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    class Slow(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)
            self.swept: list[str] | None = None

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            if self.swept is None:
                self.swept = backend.sweep(info)
            return self.data.readinto(b)

    source = Slow(base_layer())
    backend.import_layer(info, "base", [], source)
    assert source.swept == []
    assert backend.layer_exists(info, "base")


def _overlay_possible() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    return (
        subprocess.run(["unshare", "-Urm", "true"], capture_output=True, check=False).returncode
        == 0
    )


@pytest.mark.parametrize("mode", ["copy", "overlay"])
def test_contract_sandboxes_in_each_mount_mode(mode: str) -> None:
    """The sandbox scenarios of the contract suite, with the mount mode forced. overlay
    runs in a private user and mount namespace so that no mount can outlive the test."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(REPO / "tests" / "test_backend_contract.py"),
        "-k",
        "sandbox or chain",
    ]
    if mode == "overlay":
        if not _overlay_possible():
            pytest.skip("no user namespaces for an overlayfs mount here")
        cmd = ["unshare", "-Urm", *cmd]
    env = {**os.environ, "WINLAYER_PORTABLE_MOUNT": mode}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_forced_mode_cannot_switch(
    backend: _hcs.Backend, info: _hcs.DriverInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.import_layer(info, "base", [], io.BytesIO(base_layer()))
    chain = [os.path.join(info.home, "base")]
    backend.create_sandbox_layer(info, "box", chain[0], chain)
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", "copy")
    backend.prepare_layer(info, "box", chain)
    backend.unprepare_layer(info, "box")
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", "overlay")
    with pytest.raises(ValueError, match="copy mode"):
        backend.prepare_layer(info, "box", chain)
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", "sideways")
    with pytest.raises(ValueError, match="WINLAYER_PORTABLE_MOUNT"):
        backend.prepare_layer(info, "box", chain)


_DISK_FULL = """
import io, os, subprocess, sys
sys.path.insert(0, sys.argv[2])
from tests.layerbuild import base_layer, f
from winlayer import _hcs
home = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", home], check=True)
b = _hcs.portable_backend("")
info = _hcs.DriverInfo(1, home)
tar = base_layer(*[f(f"Files/f{i}.bin", os.urandom(100_000)) for i in range(40)])
try:
    b.import_layer(info, "full", [], io.BytesIO(tar))
except OSError as e:
    print("errno", e.errno)
b.sweep(info)
print(sorted(os.listdir(home)))
"""


def test_disk_full_during_import_leaves_nothing(tmp_path: Path) -> None:
    """ENOSPC on the writer thread surfaces as OSError; the staging folder goes."""
    if not _overlay_possible():
        pytest.skip("no user namespaces for a small tmpfs here")
    home = tmp_path / "small"
    home.mkdir()
    result = subprocess.run(
        ["unshare", "-Urm", sys.executable, "-c", _DISK_FULL, str(home), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"errno {errno.ENOSPC}", "['.winlayer-store.lock']"]


def test_sweep_removes_and_restores_leftovers(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    home = Path(info.home)
    backend.create_layer(info, "empty", "")
    (home / "empty" / "layerchain.json").write_text("[]")
    # What crashes leave: a dead import, a half-destroyed layer, and an empty layer set
    # aside by an import that died before its own folder took the place.
    (home / ".staging-a-0123456789abcdef" / "Files").mkdir(parents=True)
    (home / ".removing-b-0123456789abcdef" / "Files").mkdir(parents=True)
    (home / "empty").rename(home / ".replacing-empty-0123456789abcdef")
    swept = backend.sweep(info)
    assert sorted(swept) == [
        ".removing-b-0123456789abcdef",
        ".replacing-empty-0123456789abcdef",
        ".staging-a-0123456789abcdef",
    ]
    assert sorted(p.name for p in home.iterdir()) == [".winlayer-store.lock", "empty"]
    assert (home / "empty" / "layerchain.json").read_text() == "[]"
    # The restored layer still takes an import, keeping the caller's files.
    tar = base_layer()
    backend.import_layer(info, "empty", [], io.BytesIO(tar))
    assert (home / "empty" / "layerchain.json").read_text() == "[]"
    assert _export(backend, info, "empty", original=True) == tar
    assert backend.sweep(info) == []


@pytest.mark.parametrize("bad", ["", ".", "..", "../up", "a/b", "a\\b", ".staging-x", "c:d"])
def test_invalid_layer_ids(backend: _hcs.Backend, info: _hcs.DriverInfo, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid layer id"):
        backend.create_layer(info, bad, "")


def test_full_path_id_with_empty_home(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    """Newer hcsshim passes an empty home and the layer's full path as the id."""
    backend.import_layer(info, "base", [], io.BytesIO(base_layer()))
    bare = _hcs.DriverInfo(1, "")
    full = os.path.join(info.home, "base")
    assert backend.layer_exists(bare, full)
    assert backend.get_layer_mount_path(bare, full) == full


def test_missing_parent_is_layer_not_found(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    from winlayer.errors import LayerNotFound

    missing = os.path.join(info.home, "nope")
    with pytest.raises(LayerNotFound):
        backend.create_sandbox_layer(info, "box", missing, [missing])
    assert not backend.layer_exists(info, "box")


def test_links_to_a_parent_link(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    """A hard link to a parent's file is a copy here, exported again as a link to the
    parent; a second name for it is a file of this layer."""
    from tests.layerbuild import link

    backend.import_layer(info, "l1", [], io.BytesIO(base_layer()))
    chain = [os.path.join(info.home, "l1")]
    kernel = "Files/Windows/System32/kernel32.dll"
    tar = layer_tar([d("Files"), link("Files/a.dll", kernel), link("Files/b.dll", "Files/a.dll")])
    backend.import_layer(info, "l2", chain, io.BytesIO(tar))
    layer = Path(info.home, "l2", "Files")
    assert (layer / "a.dll").read_bytes() == b"MZ" + bytes(1000)
    assert (layer / "a.dll").stat().st_ino == (layer / "b.dll").stat().st_ino
    assert (layer / "a.dll").stat().st_ino != Path(chain[0], kernel).stat().st_ino
    with backend.export_layer(info, "l2", chain) as s:
        canonical = s.read()
    with tarfile.open(fileobj=io.BytesIO(canonical)) as t:
        m = {x.name: x for x in t.getmembers()}
    assert m["Files/a.dll"].linkname == kernel
    assert m["Files/b.dll"].isreg()
    assert m["Files/b.dll"].size == 1002
    backend.import_layer(info, "again", chain, io.BytesIO(canonical))
    assert Path(info.home, "again", "Files", "a.dll").read_bytes() == b"MZ" + bytes(1000)
    assert Path(info.home, "again", "Files", "b.dll").read_bytes() == b"MZ" + bytes(1000)


def test_progress_and_a_failing_callback(backend: _hcs.Backend, info: _hcs.DriverInfo) -> None:
    tar = base_layer(f("Files/big.bin", random.randbytes(12 << 20)))
    seen: list[int] = []
    backend.import_layer(info, "ok", [], io.BytesIO(tar), None, seen.append)
    assert seen
    assert seen == sorted(seen)
    assert seen[-1] <= len(tar)

    def stop(done: int) -> None:
        raise KeyboardInterrupt  # e.g. Ctrl-C in the callback: the import stops cleanly

    with pytest.raises(KeyboardInterrupt):
        backend.import_layer(info, "stopped", [], io.BytesIO(tar), None, stop)
    assert sorted(p.name for p in Path(info.home).iterdir()) == [".winlayer-store.lock", "ok"]


@pytest.mark.parametrize("mode", ["copy", "overlay"])
def test_sandbox_diff_keeps_parent_metadata(
    backend: _hcs.Backend, info: _hcs.DriverInfo, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A modified file keeps its parent's attributes, descriptor, EAs and streams; a new
    one gets the defaults; an untouched one is not in the diff."""
    if mode == "overlay":
        require("euid")
    if mode == "overlay" and os.geteuid() != 0:
        pytest.skip("overlayfs needs root here")
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", mode)
    backend.import_layer(info, "base", [], io.BytesIO(_every_kind_layer()))
    chain = [os.path.join(info.home, "base")]
    backend.create_sandbox_layer(info, "box", chain[0], chain)
    backend.prepare_layer(info, "box", chain)
    try:
        root = Path(backend.get_layer_mount_path(info, "box"))
        (root / "streams.txt").write_bytes(b"changed")
        (root / "ea.txt").write_bytes(b"changed too")
        (root / "new.txt").write_bytes(b"new")
    finally:
        backend.unprepare_layer(info, "box")
    with backend.export_layer(info, "box", chain) as s:
        diff = s.read()
    with tarfile.open(fileobj=io.BytesIO(diff)) as t:
        m = {x.name: x for x in t.getmembers()}
        stream = t.extractfile("Files/streams.txt:Zone.Identifier")
        assert stream is not None
        assert stream.read() == b"zone=3"
    assert sorted(m) == [
        "Files",
        "Files/ea.txt",
        "Files/new.txt",
        "Files/streams.txt",
        "Files/streams.txt:Zone.Identifier",
    ]
    assert m["Files/ea.txt"].pax_headers["MSWINDOWS.xattr.USER.NOTE"] == "dg=="
    assert m["Files/ea.txt"].pax_headers["LIBARCHIVE.creationtime"] == "1500000000.5"
    assert m["Files/new.txt"].pax_headers["MSWINDOWS.fileattr"] == "32"
    assert m["Files/new.txt"].pax_headers["MSWINDOWS.rawsd"] == SD_BA
    assert m["Files/streams.txt"].size == 7
