"""The graph-driver contract, run on every available backend."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from winlayer import (
    DigestMismatch,
    Driver,
    InvalidLayer,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    WinlayerError,
)
from winlayer.backend import load
from winlayer.chain import MAX_DEPTH, read_chain

from . import stores
from .layerbuild import base_layer, d, f, layer_tar, link, snapshot, wh

driver = stores.driver


def _sha(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _chain3(driver: Driver) -> None:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver.apply_diff(
        "mid",
        "base",
        io.BytesIO(
            layer_tar(
                [
                    d("Files"),
                    d("Files/Windows"),
                    f("Files/Windows/win.ini", b"[fonts]\r\nchanged\r\n"),
                    f("Files/app.exe", b"MZapp"),
                    wh("Files/Windows/System32/kernel32.dll"),
                ]
            )
        ),
    )
    driver.apply_diff(
        "top",
        "mid",
        io.BytesIO(
            layer_tar(
                [
                    d("Files"),
                    f("Files/data.txt", b"data"),
                    link("Files/data2.txt", "Files/data.txt"),
                ]
            )
        ),
    )


# -- create, chains, layerchain.json ---------------------------------------------------


def test_str_and_status(driver: Driver, tmp_path: Path) -> None:
    assert str(driver) == "windowsfilter"
    assert driver.status() == [("Windows", "")]
    diff = Driver(
        tmp_path / "d", flavour="windowsdiff", backend=driver.backend, base_images=tmp_path / "b"
    )
    assert str(diff) == "windowsdiff"
    with pytest.raises(ValueError, match="unknown flavour"):
        Driver(tmp_path / "x", flavour="overlay", backend=driver.backend)


def test_chain_of_three_and_sandbox(driver: Driver) -> None:
    _chain3(driver)
    home = driver.home
    assert driver.parents("top") == [str(home / "mid"), str(home / "base")]
    # layerchain.json exactly as Go's encoding/json writes a []string
    raw = (home / "top" / "layerchain.json").read_bytes()
    assert (
        raw == json.dumps([str(home / "mid"), str(home / "base")], separators=(",", ":")).encode()
    )
    assert (home / "base" / "layerchain.json").read_bytes() == b"null"
    if os.name == "posix":
        assert (home / "top" / "layerchain.json").stat().st_mode & 0o777 == 0o600

    driver.create("top-init", "top")
    driver.create("ctr", "top-init")  # the seed's -init convention: a sandbox on top's chain
    assert driver.parents("ctr") == [str(home / "top"), str(home / "mid"), str(home / "base")]
    assert driver.info("ctr").read_write
    with driver.mounted("ctr") as root:
        assert (root / "data.txt").read_bytes() == b"data"
        assert (root / "Windows" / "win.ini").read_bytes() == b"[fonts]\r\nchanged\r\n"
        assert (root / "app.exe").exists()
        assert not (root / "Windows" / "System32" / "kernel32.dll").exists()
        (root / "new.txt").write_bytes(b"written in the sandbox")
    changes = {c.path: c.kind for c in driver.changes("ctr")}
    assert changes["Files/new.txt"] == "A"


def test_read_write_flag_makes_sandbox_on_parent_itself(driver: Driver) -> None:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver.create("rw", "base", read_write=True, size="1GB")
    assert driver.parents("rw") == [str(driver.home / "base")]
    assert driver.info("rw").read_write
    with driver.mounted("rw") as root:
        assert (root / "Windows" / "win.ini").exists()


def test_sandbox_needs_a_parent(driver: Driver) -> None:
    with pytest.raises(ValueError, match="without a parent"):
        driver.create("rw", None, read_write=True)
    assert not (driver.home / "rw").exists()


def test_size_only_for_sandboxes_and_validated(driver: Driver) -> None:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    with pytest.raises(ValueError, match="read/write"):
        driver.create("ro", "base", size="1GB")
    with pytest.raises(ValueError, match="invalid size"):
        driver.create("rw", "base", read_write=True, size="lots")
    assert not (driver.home / "ro").exists()
    assert not (driver.home / "rw").exists()


def test_missing_parent_creates_nothing(driver: Driver) -> None:
    with pytest.raises(LayerNotFound, match="nope"):
        driver.create("child", "nope")
    assert not (driver.home / "child").exists()
    with pytest.raises(LayerNotFound):
        driver.apply_diff("child", "nope", io.BytesIO(base_layer()))
    assert not (driver.home / "child").exists()


def test_create_twice_is_layer_exists(driver: Driver) -> None:
    driver.create("a")
    with pytest.raises(LayerExists):
        driver.create("a")


def test_chains_are_at_most_125_read_only_layers_deep(driver: Driver) -> None:
    parent = None
    for n in range(1, MAX_DEPTH + 1):
        driver.apply_diff(f"l{n}", parent, io.BytesIO(layer_tar([f(f"Files/{n}", b"x")])))
        parent = f"l{n}"
    assert len(driver.parents("l125")) == 124
    before = snapshot(driver.home)
    refused = "a read-only layer on 'l125' would be 126 layers deep; a chain holds at most 125"
    with pytest.raises(ValueError, match=refused):
        driver.apply_diff("l126", "l125", io.BytesIO(b"never read"))
    with pytest.raises(ValueError, match=refused):
        driver.create("l126", "l125")
    assert snapshot(driver.home) == before
    # Docker's init and container layers on a full stack: read/write, one level above it.
    driver.create("ctr-init", "l125", read_write=True)
    driver.create("ctr", "ctr-init")
    assert len(driver.parents("ctr")) == 125
    with pytest.raises(ValueError, match="a read/write layer on 'ctr' would be 127 layers deep"):
        driver.create("nested", "ctr", read_write=True)
    assert not driver.exists("nested")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\\b", ".hidden", "x-removing"])
def test_invalid_ids_refused(driver: Driver, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid layer id"):
        driver.create(bad)


# -- import / export -------------------------------------------------------------------


def test_apply_diff_returns_size_and_records_diff_id(driver: Driver) -> None:
    tar = base_layer()
    size = driver.apply_diff("base", None, io.BytesIO(tar), digest=_sha(tar))
    assert size == len(b"[fonts]\r\n") + 1002 + 64
    info = driver.info("base")
    assert info.diff_id == _sha(tar)
    assert info.size == size
    assert [layer.id for layer in driver.layers()] == ["base"]


def test_apply_diff_into_created_empty_layer(driver: Driver) -> None:
    driver.create("base")
    assert driver.apply_diff("base", None, io.BytesIO(base_layer())) > 0


def test_digest_mismatch_leaves_nothing(driver: Driver) -> None:
    before = snapshot(driver.home)
    with pytest.raises(DigestMismatch) as caught:
        driver.apply_diff("base", None, io.BytesIO(base_layer()), digest="sha256:" + "0" * 64)
    assert caught.value.subject == "layer 'base'"
    assert str(caught.value).startswith("digest mismatch of layer 'base': expected sha256:000")
    assert snapshot(driver.home) == before
    assert not driver.exists("base")


def test_a_damaged_stored_layer_is_named_by_verify_and_diff(driver: Driver) -> None:
    tar = base_layer()
    driver.apply_diff("base", None, io.BytesIO(tar))
    if driver.backend != "portable":
        pytest.skip("damages the portable backend's files")
    ini = driver.home / "base" / "Files" / "Windows" / "win.ini"
    ini.write_bytes(b"X" + ini.read_bytes()[1:])  # same size: found by the final hash
    with pytest.raises(DigestMismatch) as caught:
        driver.verify("base")
    assert caught.value.subject == "layer 'base'"
    assert caught.value.expected == _sha(tar)
    with (
        pytest.raises(DigestMismatch, match=r"^digest mismatch of layer 'base': "),
        driver.diff("base", original=True) as stream,
    ):
        stream.read()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_reimport_of_other_content_is_layer_exists(driver: Driver, compression: str) -> None:
    import gzip

    first, second = base_layer(), base_layer(f("Files/extra.txt", b"x"))
    driver.apply_diff("base", None, io.BytesIO(first))
    before = snapshot(driver.home)
    blob = gzip.compress(second) if compression == "gzip" else second
    with pytest.raises(LayerExists) as exc:  # hashed without --digest: never imported
        driver.apply_diff("base", None, io.BytesIO(blob))
    assert str(exc.value) == (
        f"layer already holds diffID {_sha(first)}, the new content has {_sha(second)}: 'base'"
    )
    with pytest.raises(LayerExists, match=f"holds diffID {_sha(first)}.*has {_sha(second)}"):
        driver.apply_diff("base", None, io.BytesIO(b"unread"), digest=_sha(second))
    assert snapshot(driver.home) == before
    assert driver.info("base").diff_id == _sha(first)


def test_reimport_of_the_same_content_is_idempotent(driver: Driver) -> None:
    tar = base_layer()
    size = driver.apply_diff("base", None, io.BytesIO(tar))
    before = snapshot(driver.home)
    assert driver.apply_diff("base", None, io.BytesIO(tar)) == size
    assert driver.apply_diff("base", None, io.BytesIO(b"never read"), digest=_sha(tar)) == size
    assert snapshot(driver.home) == before


def test_bad_tar_leaves_nothing(driver: Driver) -> None:
    tar = layer_tar([d("Files"), f("Files/../../escape", b"x")])
    with pytest.raises(InvalidLayer, match="escape"):
        driver.apply_diff("bad", None, io.BytesIO(tar))
    assert not driver.exists("bad")
    assert [p for p in os.listdir(driver.home) if not p.startswith(".")] == []


def test_gzip_and_path_sources(driver: Driver, tmp_path: Path) -> None:
    import gzip

    tar = base_layer()
    gz = tmp_path / "layer.tar.gz"
    gz.write_bytes(gzip.compress(tar))
    plain = tmp_path / "layer.tar"
    plain.write_bytes(tar)
    driver.apply_diff("a", None, gz, digest=_sha(tar))
    driver.apply_diff("b", None, str(plain), digest=_sha(tar))
    assert driver.info("a").diff_id == driver.info("b").diff_id == _sha(tar)


def test_diff_original_is_byte_identical_and_canonical_reimports(driver: Driver) -> None:
    tar = base_layer()
    driver.apply_diff("base", None, io.BytesIO(tar))
    with driver.diff("base", original=True) as stream:
        assert stream.read() == tar
    with driver.diff("base") as stream:
        canonical = stream.read()
    with driver.diff("base") as stream:
        assert stream.read() == canonical  # deterministic
    driver.apply_diff("again", None, io.BytesIO(canonical))
    with driver.diff("again") as stream:
        assert stream.read() == canonical
    with tarfile.open(fileobj=io.BytesIO(canonical)) as tar:
        names = tar.getnames()
    assert "Files/Windows/win.ini" in names


def test_diff_close_does_not_touch_mount_count(driver: Driver) -> None:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver.get("base")
    with driver.diff("base") as stream:
        stream.read(10)
    stream.close()  # closing twice is harmless
    assert driver.mount_count("base") == 1
    driver.put("base")
    assert driver.mount_count("base") == 0
    with pytest.raises(WinlayerError, match="not mounted"):
        driver.put("base")


def test_diff_with_wrong_parent_is_refused(driver: Driver) -> None:
    _chain3(driver)
    with pytest.raises(ValueError, match="not the parent"):
        driver.diff("top", "base")
    with driver.diff("top", "mid") as stream:
        assert stream.read(1)


def test_changes_and_diff_size(driver: Driver) -> None:
    _chain3(driver)
    changes = {c.path: c.kind for c in driver.changes("mid")}
    assert changes["Files/Windows/win.ini"] == "C"
    assert changes["Files/app.exe"] == "A"
    assert changes["Files/Windows/System32/kernel32.dll"] == "D"
    assert driver.diff_size("mid") == len(b"[fonts]\r\nchanged\r\n") + len(b"MZapp")
    assert driver.diff_size("base") == driver.info("base").size


class _RecordingBackend:
    """A backend that records the names of the calls made to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def test_changes_walk_the_layer_without_a_tar(tmp_path: Path, backend_name: str) -> None:
    recording = _RecordingBackend(load(backend_name, str(tmp_path / "base")))
    driver = Driver(tmp_path / "home", backend=recording, base_images=tmp_path / "base")
    _chain3(driver)
    recording.calls.clear()
    changes = {c.path: c.kind for c in driver.changes("mid")}
    assert changes["Files/app.exe"] == "A"
    assert driver.diff_size("mid") == len(b"[fonts]\r\nchanged\r\n") + len(b"MZapp")
    assert "layer_changes" in recording.calls
    assert "export_layer" not in recording.calls


def test_whiteouts_and_hard_links_across_chain(driver: Driver) -> None:
    _chain3(driver)
    driver.create("ctr", "top", read_write=True)
    with driver.mounted("ctr") as root:
        assert not (root / "Windows" / "System32" / "kernel32.dll").exists()
        assert (root / "data2.txt").read_bytes() == b"data"
        assert (root / "Windows" / "win.ini").read_bytes().endswith(b"changed\r\n")


# -- get / put ---------------------------------------------------------------------


def test_get_put_reference_counting(driver: Driver) -> None:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    first = driver.get("base")
    second = driver.get("base")
    assert first == second
    assert driver.mount_count("base") == 2
    driver.put("base")
    assert driver.mount_count("base") == 1
    driver.put("base")
    assert driver.mount_count("base") == 0


def test_get_unknown_layer(driver: Driver) -> None:
    with pytest.raises(LayerNotFound):
        driver.get("nope")


class Faulty:
    """Wraps a backend; `fail` names calls that raise once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fail: set[str] = set()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in self.fail:
                self.fail.discard(name)
                raise OSError(5, f"injected failure in {name}")
            return target(*args, **kwargs)

        return call


@pytest.fixture
def faulty(tmp_path: Path, backend_name: str) -> tuple[Driver, Faulty]:
    backend = Faulty(load(backend_name, str(tmp_path / "base")))
    drv = Driver(tmp_path / "home", backend=backend)
    drv.apply_diff("base", None, io.BytesIO(base_layer()))
    return drv, backend


def test_failed_prepare_deactivates(faulty: tuple[Driver, Faulty]) -> None:
    drv, backend = faulty
    backend.fail = {"prepare_layer"}
    with pytest.raises(OSError, match="injected"):
        drv.get("base")
    assert backend.calls[-2:] == ["prepare_layer", "deactivate_layer"]
    assert drv.mount_count("base") == 0
    assert not (drv.home / ".winlayer" / "mounts" / "base.json").exists()
    drv.get("base")  # works again afterwards
    drv.put("base")


def test_failed_mount_path_unprepares_then_deactivates(faulty: tuple[Driver, Faulty]) -> None:
    drv, backend = faulty
    backend.fail = {"get_layer_mount_path"}
    with pytest.raises(OSError, match="injected"):
        drv.get("base")
    assert backend.calls[-3:] == ["get_layer_mount_path", "unprepare_layer", "deactivate_layer"]
    assert drv.mount_count("base") == 0


def test_failed_put_keeps_a_true_count(faulty: tuple[Driver, Faulty]) -> None:
    drv, backend = faulty
    drv.get("base")
    backend.fail = {"unprepare_layer"}
    with pytest.raises(OSError, match="injected"):
        drv.put("base")
    assert drv.mount_count("base") == 1  # still prepared: still mounted
    drv.put("base")
    assert drv.mount_count("base") == 0

    drv.get("base")
    backend.fail = {"deactivate_layer"}
    with pytest.raises(OSError, match="injected"):
        drv.put("base")
    assert drv.mount_count("base") == 0  # unprepared: no longer mounted
    drv.get("base")  # still activated: get only prepares
    assert backend.calls[-2:] == ["prepare_layer", "get_layer_mount_path"]
    drv.put("base")
    drv.cleanup()
    assert not (drv.home / ".winlayer" / "mounts" / "base.json").exists()


# -- remove ------------------------------------------------------------------------


def test_remove_mounted_layer_is_refused_and_nothing_lost(driver: Driver) -> None:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    with driver.mounted("base"):
        with pytest.raises(LayerInUse):
            driver.remove("base")
        assert driver.exists("base")
    with driver.diff("base") as stream:
        with pytest.raises(LayerInUse):
            driver.remove("base")
        assert stream.read()
    driver.remove("base")
    assert not driver.exists("base")
    assert [p for p in os.listdir(driver.home) if not p.startswith(".")] == []


def test_remove_parent_of_another_layer_is_refused(driver: Driver) -> None:
    _chain3(driver)
    with pytest.raises(LayerInUse, match="parent of top"):
        driver.remove("mid")
    driver.remove("top")
    driver.remove("mid")
    driver.remove("base")


def test_remove_unknown(driver: Driver) -> None:
    with pytest.raises(LayerNotFound):
        driver.remove("nope")


def test_leftovers_swept_on_open(driver: Driver, tmp_path: Path) -> None:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver.apply_diff("gone", None, io.BytesIO(base_layer()))
    os.replace(driver.home / "gone", driver.home / "gone-1234abcd-removing")
    driver.apply_diff("half", None, io.BytesIO(base_layer()))
    # As if the import had crashed between the backend's commit and the record (HCS's
    # import writes the layer folder, the driver its files after it).
    driver._state.mark_pending("half")
    (driver.home / "half" / "winlayer.json").unlink()
    again = Driver(driver.home, backend=driver.backend, base_images=tmp_path / "base")
    names = [p for p in os.listdir(again.home) if not p.startswith(".")]
    assert names == ["base"]
    assert os.listdir(again.home / ".winlayer" / "pending") == []


def test_a_marker_of_a_completed_import_is_dropped(driver: Driver, tmp_path: Path) -> None:
    """The marker's removal is not synced: after a power loss it may be back beside a
    layer whose record says it was imported; the sweep keeps the layer."""
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver._state.mark_pending("base")
    again = Driver(driver.home, backend=driver.backend, base_images=tmp_path / "base")
    assert again.cleanup() == []
    assert os.listdir(again.home / ".winlayer" / "pending") == []
    assert [layer.id for layer in again.layers()] == ["base"]
    again.verify("base")


def test_an_import_publishing_its_files_writes_no_marker(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a backend that publishes the chain and record with the layer (the portable
    one), an import has no half-created state to mark."""
    if not getattr(driver._backend, "publishes_layer_files", False):
        pytest.skip("the backend does not publish the driver's files")

    def no_marker(layer_id: str) -> None:
        raise AssertionError(f"marked {layer_id}")

    monkeypatch.setattr(driver._state, "mark_pending", no_marker)
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver.apply_diff("top", "base", io.BytesIO(layer_tar([d("Files"), f("Files/a.txt", b"a")])))
    assert read_chain(driver.home / "top") == [str(driver.home / "base")]
    assert driver.info("top").diff_id.startswith("sha256:")


def test_an_import_on_a_backend_that_does_not_publish_files_marks_it(
    tmp_path: Path, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HCS creates the layer folder itself: the driver marks the import, writes the chain
    and the record after it and clears the marker."""
    inner = load(backend_name, str(tmp_path / "base"))
    driver = Driver(tmp_path / "home", backend=_Proxy(inner, publishes_layer_files=False))
    marks: list[str] = []
    real_mark = driver._state.mark_pending

    def mark(layer_id: str) -> None:
        marks.append(layer_id)
        real_mark(layer_id)

    monkeypatch.setattr(driver._state, "mark_pending", mark)
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver.apply_diff("top", "base", io.BytesIO(layer_tar([d("Files"), f("Files/a.txt", b"a")])))
    assert marks == ["base", "top"]
    assert read_chain(driver.home / "top") == [str(driver.home / "base")]
    assert driver.info("top").diff_id.startswith("sha256:")
    assert os.listdir(driver.home / ".winlayer" / "pending") == []


def test_an_intent_marker_being_written_is_not_a_crashed_operation(
    driver: Driver, tmp_path: Path
) -> None:
    """Another process writing an intent marker leaves its temporary file beside the
    markers for a moment; a sweep then must not take it for a half-created layer, nor
    remove it while its writer lives (this process stands for it)."""
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    writing = driver.home / ".winlayer" / "pending" / f".base.{os.getpid()}.tmp"
    writing.write_bytes(str(os.getpid()).encode())
    again = Driver(driver.home, backend=driver.backend, base_images=tmp_path / "base")
    assert again.cleanup() == []
    assert writing.exists()


def test_a_marker_whose_writer_died_mid_write_is_swept(driver: Driver, tmp_path: Path) -> None:
    """A process killed between creating a marker's temporary file and renaming it leaves
    that file; the next sweep removes it (its writer is gone), and nothing else."""
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    state = driver.home / ".winlayer"
    left = [state / "pending" / f".victim.{dead}.tmp", state / "mounts" / f".base.json.{dead}.tmp"]
    for path in left:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(dead.encode())
    assert sorted(driver.cleanup()) == sorted(
        f"removed {p.parent.name}/{p.name}, left by a crash" for p in left
    )
    assert not any(p.exists() for p in left)
    assert [layer.id for layer in driver.layers()] == ["base"]


# -- alternate IDs -----------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["layerId", "layerID", "LAYERID"])
def test_alternate_id_any_spelling(driver: Driver, spelling: str) -> None:
    driver.apply_diff("folder1", None, io.BytesIO(base_layer()))
    alias = driver.home / "imageid"
    alias.mkdir()
    (alias / spelling).write_text("folder1")
    assert driver.exists("imageid")
    assert driver.metadata("imageid") == {"dir": str(driver.home / "folder1")}
    with driver.mounted("imageid") as root:
        assert (driver.home / "folder1").exists()
        assert root
    driver.create("child", "imageid")
    assert driver.parents("child") == [str(driver.home / "folder1")]
    driver.remove("child")
    driver.remove("imageid")
    assert not alias.exists()
    assert not (driver.home / "folder1").exists()


# -- concurrency ---------------------------------------------------------------------


def test_same_layer_imported_twice_at_once_unpacks_once(driver: Driver) -> None:
    tar = base_layer()
    calls = []
    real = driver._backend.import_layer

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return real(*args, **kwargs)

    driver._backend = _Proxy(driver._backend, import_layer=counting)
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(driver.apply_diff("l", None, io.BytesIO(tar)))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["l"]
    assert len(set(results)) == 1
    assert len(results) == 4


class _Proxy:
    def __init__(self, inner: Any, **overrides: Any) -> None:
        self._inner = inner
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_threads_get_put_keep_counts_consistent(driver: Driver) -> None:
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                with driver.mounted("base") as root:
                    assert (root / "Files" / "Windows" / "win.ini").exists()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert driver.mount_count("base") == 0


def test_restored_base_image_is_a_parent(tmp_path: Path) -> None:
    from winlayer.images import ImageStore, install_base_image, remove_image

    base_images = tmp_path / "base"
    driver = Driver(tmp_path / "home", backend="portable", base_images=base_images)
    config = "Files/Windows/System32/config/"
    tar = base_layer(
        d("Files/Windows/System32/config"),
        *(
            f(config + hive, b"regf")
            for hive in ("DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM")
        ),
    )
    install_base_image(driver, "ServerCore", "10.0.1", io.BytesIO(tar), base_images=base_images)
    with ImageStore(driver.home) as store:
        (image_id,) = driver.restore_custom_images(store, store)
        assert driver.restore_custom_images(store, store) == []
    assert driver.exists(image_id)
    assert driver.layers() == []  # the alias is not a layer of the store
    driver.create("ctr", image_id, read_write=True)
    base_dir = driver.metadata(image_id)["dir"]
    assert Path(base_dir).parent == base_images
    assert driver.parents("ctr") == [base_dir]
    with driver.mounted("ctr") as root:
        assert (root / "Windows" / "win.ini").read_bytes() == b"[fonts]\r\n"
    with pytest.raises(LayerInUse, match=r"used by image servercore:10\.0\.1"):
        driver.remove(image_id)  # the alias is the registered image's layer
    with ImageStore(driver.home) as store:
        remove_image(driver, store, "servercore:10.0.1")  # only the alias goes with it
    assert not driver.exists(image_id)
    with driver.mounted("ctr") as root:  # so what stands on it still works
        assert (root / "Windows" / "win.ini").exists()
    driver.remove("ctr")
    assert Path(base_dir, "Files", "Windows", "win.ini").exists()
    with pytest.raises(WinlayerError, match="host base image"):
        driver.remove(Path(base_dir).name)


def test_windowsdiff_extracts_into_the_layers_own_folder(tmp_path: Path, backend_name: str) -> None:
    driver = Driver(
        tmp_path / "diffhome",
        flavour="windowsdiff",
        backend=backend_name,
        base_images=tmp_path / "b",
    )
    driver.apply_diff("base", None, io.BytesIO(base_layer()))
    driver.apply_diff("child", "base", io.BytesIO(layer_tar([d("Files"), f("Files/c.txt", b"c")])))
    # not into the home's root, as the 2015 driver did
    assert not (driver.home / "Files").exists()
    assert [p.name for p in driver.home.iterdir() if not p.name.startswith(".")] == [
        "base",
        "child",
    ]
    with driver.mounted("child") as root:
        assert root == driver.home / "child"
        assert (root / "Files" / "c.txt").read_bytes() == b"c"
    assert driver.parents("child") == [str(driver.home / "base")]
