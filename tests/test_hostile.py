"""Hostile layer tars: each fails with a clear error naming the entry, leaves the store
exactly as it was, and writes nothing outside the layer's staging folder."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from winlayer import DigestMismatch, Driver, InvalidLayer

from .layerbuild import base_layer, d, f, layer_tar, link, snapshot


def _ustar(name: str, *, typeflag: bytes = b"0", size: int = 0, linkname: str = "") -> bytes:
    """A raw ustar header block with a correct checksum (for lies tarfile won't write)."""
    block = bytearray(512)
    block[0:100] = name.encode().ljust(100, b"\0")[:100]
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = f"{size:011o}\0".encode()
    block[136:148] = b"00000000000\0"
    block[156:157] = typeflag
    block[157:257] = linkname.encode().ljust(100, b"\0")[:100]
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def _record(key: str, value: str) -> bytes:
    """One PAX record with its correct length prefix."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length).encode() + body) != length:
        length += 1
    return str(length).encode() + body


def _pax(records: bytes, name: str = "PaxHeaders/x") -> bytes:
    header = _ustar(name, typeflag=b"x", size=len(records))
    return header + records + b"\0" * (-len(records) % 512)


END = b"\0" * 1024


CASES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "dotdot": (lambda o: layer_tar([d("Files"), f("Files/../../escape.txt", b"x")]), "escape.txt"),
    "absolute": (lambda o: layer_tar([f("/Files/abs.txt", b"x")]), "abs.txt"),
    "absolute-outside": (lambda o: layer_tar([f(str(o / "abs.txt"), b"x")]), "abs.txt"),
    "drive-letter": (lambda o: layer_tar([f("C:/Windows/drive.txt", b"x")]), "drive.txt"),
    "drive-in-files": (lambda o: layer_tar([d("Files"), f("Files/C:drive.txt", b"x")]), "drive"),
    "unc": (lambda o: layer_tar([f("//server/share/unc.txt", b"x")]), "unc.txt"),
    "backslash-traversal": (
        lambda o: layer_tar([d("Files"), f("Files/..\\..\\bs.txt", b"x")]),
        "bs.txt",
    ),
    "outside-top-level": (lambda o: layer_tar([d("root"), f("root/x.txt", b"x")]), "root"),
    "nul-in-name": (lambda o: _pax(_record("path", "Files/a\0b")) + _ustar("Files/x") + END, "NUL"),
    "reserved-con": (lambda o: layer_tar([d("Files"), f("Files/CON", b"x")]), "CON"),
    "reserved-aux-ext": (lambda o: layer_tar([d("Files"), f("Files/aux.txt", b"x")]), "aux.txt"),
    "reserved-com1": (lambda o: layer_tar([d("Files"), d("Files/com1")]), "com1"),
    "forbidden-char": (lambda o: layer_tar([d("Files"), f("Files/a|b", b"x")]), "a|b"),
    "trailing-dot": (lambda o: layer_tar([d("Files"), f("Files/name.", b"x")]), "name."),
    "case-collision": (
        lambda o: layer_tar([d("Files"), f("Files/Readme.txt", b"1"), f("Files/README.TXT", b"2")]),
        "README.TXT",
    ),
    "hardlink-outside": (
        lambda o: layer_tar([d("Files"), link("Files/pw", "../../../etc/passwd")]),
        "Files/pw",
    ),
    "hardlink-absolute": (lambda o: layer_tar([d("Files"), link("Files/pw", "/etc/passwd")]), "pw"),
    "hardlink-missing": (
        lambda o: layer_tar([d("Files"), link("Files/ln", "Files/not-there")]),
        "Files/ln",
    ),
    "pax-overrun": (
        lambda o: _pax(b"999 path=Files/x\n") + _ustar("Files/x", size=0) + END,
        "PAX",
    ),
    "pax-missing-equals": (
        lambda o: _pax(b"15 pathFiles/x\n") + _ustar("Files/x") + END,
        "PAX",
    ),
    "pax-bad-length": (lambda o: _pax(b"zz path=Files/x\n") + _ustar("Files/x") + END, "PAX"),
    "size-lies": (
        lambda o: _ustar("Files/big.bin", size=1 << 20) + b"A" * 512 + END,
        "big.bin",
    ),
    "bad-checksum": (
        lambda o: _ustar("Files/a.txt")[:148] + b"0000000\0" + _ustar("Files/a.txt")[156:] + END,
        "checksum",
    ),
    "device-entry": (lambda o: _ustar("Files/dev", typeflag=b"3") + END, "dev"),
}


@pytest.fixture
def store(tmp_path: Path, backend_name: str) -> tuple[Driver, Path]:
    driver = Driver(tmp_path / "home", backend=backend_name, base_images=tmp_path / "base")
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    return driver, outside


def _assert_rejected(driver: Driver, outside: Path, tar: bytes, needle: str) -> InvalidLayer:
    before_home = snapshot(driver.home)
    before_outside = snapshot(outside.parent)
    with pytest.raises(InvalidLayer) as info:
        driver.apply_diff("evil", "base", io.BytesIO(tar))
    assert needle in info.value.entry or needle in str(info.value)
    assert info.value.offset >= 0, "the error must say where in the tar"
    assert snapshot(driver.home) == before_home
    assert snapshot(outside.parent) == before_outside
    assert not driver.exists("evil")
    return info.value


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_case_rejected(store: tuple[Driver, Path], case: str) -> None:
    driver, outside = store
    build, needle = CASES[case]
    _assert_rejected(driver, outside, build(outside), needle)


@pytest.mark.parametrize("junction", [False, True], ids=["symlink", "junction"])
@pytest.mark.parametrize("target", ["../../outside", "C:\\outside", "/tmp"])
def test_write_through_link_rejected(
    store: tuple[Driver, Path], junction: bool, target: str
) -> None:
    driver, outside = store
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        files = tarfile.TarInfo("Files")
        files.type = tarfile.DIRTYPE
        tar.addfile(files)
        sym = tarfile.TarInfo("Files/escape")
        sym.type = tarfile.SYMTYPE
        sym.linkname = target
        if junction:
            sym.pax_headers = {"MSWINDOWS.mountpoint": "1"}
        tar.addfile(sym)
        payload = b"pwned"
        through = tarfile.TarInfo("Files/escape/owned.txt")
        through.size = len(payload)
        tar.addfile(through, io.BytesIO(payload))
    # Refused at the link (a junction must be absolute) or at the entry written through it.
    _assert_rejected(driver, outside, buf.getvalue(), "Files/escape")


def test_truncated_at_every_header_boundary(store: tuple[Driver, Path]) -> None:
    driver, outside = store
    tar = layer_tar(
        [d("Files"), f("Files/a.txt", b"a" * 700), d("Files/sub"), f("Files/sub/b", b"b")]
    )
    end = len(tar.rstrip(b"\0"))
    cuts = sorted({n for n in range(512, end + 512, 512) if n < len(tar) - 1024} | {end - 1, 100})
    assert len(cuts) >= 5
    for cut in cuts:
        err = _assert_rejected(driver, outside, tar[:cut], "")
        assert err.offset <= cut


def test_gzip_bomb_is_bounded(store: tuple[Driver, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINLAYER_MAX_LAYER_SIZE", "4MiB")
    driver = Driver(store[0].home, backend=store[0].backend)
    assert driver.max_layer_size == 4 << 20
    big = layer_tar([d("Files"), f("Files/zeros.bin", bytes(16 << 20))])
    bomb = gzip.compress(big, compresslevel=9)
    assert len(bomb) < len(big) // 100
    before = snapshot(driver.home)
    with pytest.raises(InvalidLayer, match="max_uncompressed"):
        driver.apply_diff("bomb", "base", io.BytesIO(bomb))
    assert snapshot(driver.home) == before


def test_digest_mismatch_leaves_store_unchanged(store: tuple[Driver, Path]) -> None:
    driver, _outside = store
    before = snapshot(driver.home)
    with pytest.raises(DigestMismatch):
        driver.apply_diff("x", "base", io.BytesIO(base_layer()), digest="sha256:" + "1" * 64)
    assert snapshot(driver.home) == before
