"""The hcs backend against the real Host Compute Service (marker ``hcs``).

Runs on Windows with the Containers feature, as administrator
(.github/workflows/windows-integration.yml on windows-2022 and windows-2025 runners);
skipped wherever the hcs backend is unavailable. This is where BackupWrite (base layers,
hives), BackupRead (export) and the backup/restore privileges are exercised: Wine has
none of them.

``WINLAYER_HCS_IMAGE_TAR`` names a ``docker save`` archive of a Windows base image (the
workflow saves one of the runner's images); its first layer is imported as a base layer.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.hcs

MARKER_FILE = "winlayer-hcs-test.txt"
MARKER_TEXT = "written through the sandbox's mount path\r\n"


def _hcs_backend() -> Any:
    from winlayer import _hcs
    from winlayer.errors import BackendUnavailable

    try:
        return _hcs.hcs_backend()
    except BackendUnavailable as e:
        pytest.skip(f"the hcs backend is unavailable here: {e}")


@pytest.fixture(scope="module")
def backend() -> Any:
    if sys.platform != "win32":
        pytest.skip("the hcs backend runs on Windows only")
    return _hcs_backend()


@pytest.fixture(scope="module")
def image_tar() -> Path:
    name = os.environ.get("WINLAYER_HCS_IMAGE_TAR")
    if not name:
        message = "WINLAYER_HCS_IMAGE_TAR is not set (a `docker save` of a Windows base image)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    path = Path(name)
    assert path.is_file(), f"WINLAYER_HCS_IMAGE_TAR={name} does not exist"
    return path


def _base_layer(archive: tarfile.TarFile) -> tuple[IO[bytes], str]:
    """The first layer of a `docker save` archive and its diffID."""
    manifest = json.load(_member(archive, "manifest.json"))[0]
    config = json.load(_member(archive, manifest["Config"]))
    return _member(archive, manifest["Layers"][0]), config["rootfs"]["diff_ids"][0]


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    f = archive.extractfile(name)
    assert f is not None, f"{name} is not a file in the image archive"
    return f


def _tar_files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {
            m.name: (t.extractfile(m) or io.BytesIO()).read() for m in t.getmembers() if m.isfile()
        }


def _thread_impersonates() -> bool:
    """Whether the calling thread has its own token (privileges are taken on one)."""
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.GetCurrentThread.restype = ctypes.c_void_p
    token = ctypes.c_void_p()
    token_query = 0x0008
    ok = advapi32.OpenThreadToken(
        ctypes.c_void_p(kernel32.GetCurrentThread()), token_query, True, ctypes.byref(token)
    )
    if ok:
        kernel32.CloseHandle(token)
        return True
    error_no_token = 1008
    assert ctypes.get_last_error() == error_no_token  # type: ignore[attr-defined]
    return False


def _leftovers(home: Path) -> list[str]:
    """Layer folders and work folders still in `home` (the driver's dot-files aside)."""
    return sorted(
        name
        for name in os.listdir(home)
        if not name.startswith(".") or name.startswith((".winlayer-import-", ".winlayer-export-"))
    )


@pytest.fixture
def store(tmp_path: Path, backend: Any) -> Iterator[Any]:
    from winlayer import Driver

    driver = Driver(tmp_path / "store", backend="hcs")
    try:
        yield driver
    finally:
        # Leave nothing behind even when a step failed: HCS keeps layers mounted otherwise.
        for layer in reversed(driver.layers()):
            while driver.mount_count(layer.id):
                driver.put(layer.id)
            driver.remove(layer.id)


def test_name_to_guid_and_base_images(backend: Any) -> None:
    guid = backend.name_to_guid("winlayer-test-layer")
    assert guid == backend.name_to_guid("winlayer-test-layer")
    assert guid != backend.name_to_guid("winlayer-test-layer2")
    assert len(guid) == 36
    images = json.loads(backend.get_base_images())
    assert "Images" in images


def test_base_layer_sandbox_diff_and_reimport(store: Any, image_tar: Path) -> None:
    with tarfile.open(image_tar) as archive:
        layer, diff_id = _base_layer(archive)
        # Base layer: BackupWrite straight into the layer folder, then ProcessBaseImage.
        store.apply_diff("base", None, layer, digest=diff_id)
    assert not _thread_impersonates(), "import left the thread impersonating"
    assert store.exists("base")
    base_dir = Path(store.metadata("base")["dir"])
    assert (base_dir / "Files" / "Windows" / "System32" / "config" / "SYSTEM").is_file()

    store.create("sandbox", "base", read_write=True)
    mount = store.get("sandbox")
    try:
        assert str(mount).startswith("\\\\?\\Volume{"), mount
        assert (mount / "Windows" / "System32").is_dir()
        (mount / MARKER_FILE).write_bytes(MARKER_TEXT.encode())
    finally:
        store.put("sandbox")

    # Export: ActivateLayer -> ExportLayer -> BackupRead of the hives -> DeactivateLayer.
    with store.diff("sandbox") as stream:
        diff = stream.read()
    assert not _thread_impersonates(), "export left the thread impersonating"
    files = _tar_files(diff)
    assert files[f"Files/{MARKER_FILE}"] == MARKER_TEXT.encode()
    assert any(name.startswith("Hives/") for name in files), sorted(files)[:20]

    # Non-base import: the legacy staging folder, hives through BackupWrite, ImportLayer.
    digest = "sha256:" + hashlib.sha256(diff).hexdigest()
    size = store.apply_diff("layer2", "base", io.BytesIO(diff), digest=digest)
    assert size >= len(MARKER_TEXT)
    with store.diff("layer2") as stream:
        again = _tar_files(stream.read())
    assert again[f"Files/{MARKER_FILE}"] == MARKER_TEXT.encode()

    # The imported layer mounts under a sandbox like any other.
    store.create("sandbox2", "layer2", read_write=True)
    with store.mounted("sandbox2") as mount2:
        assert (mount2 / MARKER_FILE).read_bytes() == MARKER_TEXT.encode()

    for layer_id in ("sandbox2", "layer2", "sandbox", "base"):
        store.remove(layer_id)
        assert not store.exists(layer_id)
    assert _leftovers(store.home) == []


def test_failed_import_leaves_nothing(store: Any, image_tar: Path) -> None:
    from winlayer.errors import DigestMismatch

    with tarfile.open(image_tar) as archive:
        layer, _diff_id = _base_layer(archive)
        with pytest.raises(DigestMismatch):
            store.apply_diff("base", None, layer, digest="sha256:" + "0" * 64)
    assert not store.exists("base")
    assert _leftovers(store.home) == []
    assert store.cleanup() == []
