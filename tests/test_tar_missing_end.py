"""Layer tars without end-of-archive blocks (Go's reader takes them, umoci writes them).

Such a stream is a truncated tar unless its digest says otherwise: it imports only with
an expected digest (apply_diff(digest=), `winlayer import --digest`, `load`, whose diffIDs
come from the image config), which commit checks, and only when it ends right after an
entry. Everything else keeps refusing it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from winlayer import DigestMismatch, Driver, InvalidLayer
from winlayer.images import ImageStore, layer_id_for, load

from .conftest import Cli
from .imagebuild import docker_save, sha
from .layerbuild import base_layer, d, f, layer_tar, snapshot
from .stores import check_loaded

FULL = layer_tar([d("Files"), f("Files/a.txt", b"a" * 700), d("Files/sub"), f("Files/sub/b", b"b")])
# The same entries, cut right after the last one's padding (tarfile writes 1024 zero
# bytes, then zero padding up to its 10 KiB record).
NO_END = FULL[: len(FULL.rstrip(b"\0")) + (-len(FULL.rstrip(b"\0")) % 512)]


def test_the_sample_ends_at_an_entry_boundary() -> None:
    assert len(NO_END) % 512 == 0
    assert NO_END.endswith(b"b" + b"\0" * 511)
    assert FULL.startswith(NO_END)
    assert len(FULL) - len(NO_END) >= 1024


@pytest.fixture
def driver(tmp_path: Path, backend_name: str) -> Driver:
    d = Driver(tmp_path / "home", backend=backend_name, base_images=tmp_path / "base")
    d.apply_diff("base", None, io.BytesIO(base_layer()))
    return d


def test_imports_with_its_digest_and_exports_the_same_bytes(driver: Driver) -> None:
    driver.apply_diff("x", "base", io.BytesIO(NO_END), digest=sha(NO_END))
    assert driver.info("x").diff_id == sha(NO_END)
    with driver.diff("x", original=True) as stream:
        assert stream.read() == NO_END
    assert driver.verify("x") == sha(NO_END)
    # The canonical export is a complete tar again.
    with driver.diff("x") as stream:
        assert stream.read().endswith(b"\0" * 1024)


def test_refused_without_a_digest(driver: Driver) -> None:
    before = snapshot(driver.home)
    with pytest.raises(InvalidLayer, match="missing end-of-archive block") as info:
        driver.apply_diff("x", "base", io.BytesIO(NO_END))
    assert info.value.offset == len(NO_END)
    assert snapshot(driver.home) == before


def test_refused_with_a_wrong_digest(driver: Driver) -> None:
    before = snapshot(driver.home)
    with pytest.raises(DigestMismatch):
        driver.apply_diff("x", "base", io.BytesIO(NO_END), digest=sha(FULL))
    assert snapshot(driver.home) == before
    assert not driver.exists("x")


with tarfile.open(fileobj=io.BytesIO(FULL)) as _tf:
    _A = _tf.getmember("Files/a.txt")
    _B = _tf.getmember("Files/sub/b")


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (_B.offset + 100, "truncated header"),  # inside the last entry's PAX header
        (_B.offset_data - 100, "truncated header"),  # inside its ustar header
        (_B.offset_data - 512, "truncated header"),  # right after its PAX header
        (_A.offset_data + 300, "truncated payload"),  # inside a.txt's data
        (_A.offset_data + 800, "truncated padding"),  # inside a.txt's padding
        (len(NO_END) - 1, "truncated padding"),
        (len(NO_END) + 512 + 100, "truncated end-of-archive block"),
    ],
)
def test_cut_elsewhere_is_refused_even_with_its_digest(
    driver: Driver, cut: int, message: str
) -> None:
    data = FULL[:cut]
    before = snapshot(driver.home)
    with pytest.raises(InvalidLayer, match=message):
        driver.apply_diff("x", "base", io.BytesIO(data), digest=sha(data))
    assert snapshot(driver.home) == before


def test_cli_import_with_digest_and_tar_ls_without(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "layer.tar"
    src.write_bytes(NO_END)
    listed = cli("tar", "ls", str(src))
    assert listed.returncode != 0
    assert b"missing end-of-archive block" in listed.stderr
    refused = cli("import", "x", str(src))
    assert refused.returncode != 0
    assert b"missing end-of-archive block" in refused.stderr
    imported = cli.json("import", "x", str(src), "--digest", sha(NO_END))
    assert isinstance(imported, dict)
    assert imported["diff_id"] == sha(NO_END)
    out = tmp_path / "out.tar"
    assert cli("export", "x", "-o", str(out), "--original").returncode == 0
    assert out.read_bytes() == NO_END


def test_load_takes_the_diff_ids_of_the_config(tmp_path: Path, backend_name: str) -> None:
    driver = Driver(tmp_path / "home", backend=backend_name, base_images=tmp_path / "base")
    layers = [base_layer(), NO_END]
    data, config = docker_save(layers)
    (tmp_path / "image.tar").write_bytes(data)
    with ImageStore(driver.home) as store:
        [image] = load(driver, store, tmp_path / "image.tar")
        check_loaded(driver, store, layers, config)
        top = driver.info(layer_id_for(image.layers[-1]))
    with driver.diff(top.id, original=True) as stream:
        assert stream.read() == NO_END
