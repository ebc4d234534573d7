"""Driver.apply_diffs and load --jobs: a chain's layers imported several at a time, each
while its parent is still being written, committed parent first; the first failure
stops the rest and leaves nothing of the layers it stopped."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import pytest

from winlayer import DigestMismatch, Driver, InvalidArgument, InvalidLayer, _archive_load
from winlayer._pipeline import PARALLEL_READ_AHEAD, READ_AHEAD, TarFeed, read_ahead
from winlayer.driver import Diff
from winlayer.images import ImageStore, load

from . import stores
from .imagebuild import config_for, docker_save, sha
from .layerbuild import base_layer, f, layer_tar, link, tar_tree, wh

driver = stores.driver
store = stores.store

BASE = base_layer(f("Files/Windows/a.txt", b"a" * 5000), f("Files/Windows/b.txt", b"b" * 300))
CHILD = layer_tar([f("Files/app/one.bin", os.urandom(200_000)), wh("Files/Windows/b.txt")])
CHILD_ON_NOTHING = base_layer(f("Files/app/one.bin", os.urandom(100_000)))
TOP = layer_tar(
    [f("Files/app/two.bin", b"two"), link("Files/app/a-link.txt", "Files/Windows/a.txt")]
)


class HeldStream(io.RawIOBase):
    """`data`, read up to `hold_at` bytes, then held until :attr:`go` is set; notes
    when its last byte has been read."""

    def __init__(self, data: bytes, hold_at: int | None = None) -> None:
        super().__init__()
        self._data = data
        self._pos = 0
        self._hold_at = hold_at
        self.held = threading.Event()
        self.go = threading.Event()
        self.read_to_end = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        end = len(self._data)
        if self._hold_at is not None and self._pos >= self._hold_at and not self.go.is_set():
            self.held.set()
            assert self.go.wait(30), "the test never released the stream"
        elif self._hold_at is not None and self._pos < self._hold_at:
            end = self._hold_at
        n = min(len(buffer), end - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        if self._pos == len(self._data):
            self.read_to_end.set()
        return n


def ids(n: int) -> list[str]:
    return [f"{i:x}" * 64 for i in range(10, 10 + n)]


def test_a_layer_is_written_while_its_parent_is_and_commits_after_it(driver: Driver) -> None:
    base = HeldStream(BASE, hold_at=len(BASE) // 2)
    child = HeldStream(CHILD)
    a, b = ids(2)
    committed: list[int] = []
    child_read_while_base_held: list[bool] = []

    def release_base() -> None:
        assert base.held.wait(30)
        # The child's tar is read to its end while its parent is still being written.
        child_read_while_base_held.append(child.read_to_end.wait(30))
        assert not driver.exists(a)
        assert not driver.exists(b)
        base.go.set()

    releaser = threading.Thread(target=release_base)
    releaser.start()
    sizes = driver.apply_diffs(
        [
            Diff(a, None, cast(IO[bytes], base), sha(BASE)),
            Diff(b, a, cast(IO[bytes], child), sha(CHILD)),
        ],
        jobs=2,
        on_commit=lambda i, _size: committed.append(i),
    )
    releaser.join()
    assert child_read_while_base_held == [True]
    assert committed == [0, 1]  # parent first
    assert sizes == [driver.info(a).size, 200_000]
    assert driver.info(b).parent == a
    assert driver.info(b).diff_id == sha(CHILD)
    with driver.merged(b) as merged:
        tree = tar_tree(merged.read())
    assert "Windows/b.txt" not in tree
    assert tree["Windows/a.txt"] == b"a" * 5000


def test_a_hard_link_into_the_parent_waits_for_it(driver: Driver) -> None:
    # The link's target is in the bottom layer, held half-read while the top layer's tar
    # (small: read at once) reaches the link: without the wait, the target is not there.
    a, b, c = ids(3)
    base = HeldStream(BASE, hold_at=len(BASE) // 2)
    threading.Timer(0.3, base.go.set).start()
    driver.apply_diffs(
        [
            Diff(a, None, cast(IO[bytes], base), sha(BASE)),
            Diff(b, a, io.BytesIO(CHILD), sha(CHILD)),
            Diff(c, b, io.BytesIO(TOP), sha(TOP)),
        ],
        jobs=3,
    )
    with driver.merged(c) as merged:
        tree = tar_tree(merged.read())
    assert tree["app/a-link.txt"] == tree["Windows/a.txt"] == b"a" * 5000
    assert tree["app/two.bin"] == b"two"


def test_a_failed_parent_stops_the_layers_on_it(driver: Driver) -> None:
    base = HeldStream(BASE, hold_at=len(BASE) // 2)
    child, top = io.BytesIO(CHILD), io.BytesIO(TOP)
    a, b, c = ids(3)
    committed: list[int] = []
    threading.Timer(0.2, base.go.set).start()  # the others reach their commit first
    with pytest.raises(DigestMismatch, match=a):  # the real failure, not "aborted"
        driver.apply_diffs(
            [
                Diff(a, None, cast(IO[bytes], base), "sha256:" + "0" * 64),
                Diff(b, a, cast(IO[bytes], child), sha(CHILD)),
                Diff(c, b, top, sha(TOP)),
            ],
            jobs=3,
            on_commit=lambda i, _size: committed.append(i),
        )
    assert committed == []
    assert driver.layers() == []
    assert sorted(os.listdir(driver.home)) == [".winlayer", ".winlayer-store.lock"]


def test_a_failure_keeps_the_layers_committed_before_it(driver: Driver) -> None:
    a, b, c = ids(3)
    committed: list[int] = []
    bad = CHILD[:-2048] + b"\xff" * 512 + b"\0" * 1536  # a broken header where the end was
    with pytest.raises(InvalidLayer):
        driver.apply_diffs(
            [
                Diff(a, None, io.BytesIO(BASE), sha(BASE)),
                Diff(b, a, io.BytesIO(bad)),
                Diff(c, b, io.BytesIO(TOP), sha(TOP)),
            ],
            jobs=3,
            on_commit=lambda i, _size: committed.append(i),
        )
    assert committed == [0]
    assert [layer.id for layer in driver.layers()] == [a]


def test_jobs_one_imports_one_after_another(driver: Driver) -> None:
    a, b = ids(2)
    parent_committed_when_opened: list[bool] = []

    @contextlib.contextmanager
    def open_child() -> Iterator[io.BytesIO]:
        parent_committed_when_opened.append(driver.exists(a))
        yield io.BytesIO(CHILD)

    driver.apply_diffs([Diff(a, None, io.BytesIO(BASE)), Diff(b, a, open_child)], jobs=1)
    assert parent_committed_when_opened == [True]
    assert driver.info(b).parent == a


@pytest.mark.parametrize(
    ("diffs", "message"),
    [
        (lambda a, _: [Diff(a, None, io.BytesIO(BASE)), Diff(a, None, io.BytesIO(BASE))], "twice"),
        (lambda a, b: [Diff(b, a, io.BytesIO(CHILD)), Diff(a, None, io.BytesIO(BASE))], "not fo"),
        (lambda a, _: [Diff(a, None, io.BytesIO(BASE), "sha256:zz")], "invalid digest"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    driver: Driver, diffs: Any, message: str
) -> None:
    with pytest.raises(Exception, match=message):
        driver.apply_diffs(diffs(*ids(2)))
    assert driver.layers() == []


def test_jobs_below_one_is_refused(driver: Driver) -> None:
    with pytest.raises(InvalidArgument, match="jobs must be at least 1"):
        driver.apply_diffs([Diff(ids(1)[0], None, io.BytesIO(BASE))], jobs=0)


@pytest.mark.parametrize("jobs", [1, 2, 4])
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_load_with_jobs(
    driver: Driver, store: ImageStore, tmp_path: Path, jobs: int, compression: str
) -> None:
    layers = [BASE, CHILD, TOP]
    data, config = docker_save(layers, compression=[compression] * 3, layout="blobs")
    archive = tmp_path / "image.tar"
    archive.write_bytes(data)
    (image,) = load(driver, store, archive, jobs=jobs)
    stores.check_loaded(driver, store, layers, config)
    assert image.id == sha(config)[7:]
    assert stores.staging_empty(driver)


@pytest.mark.parametrize(("jobs", "capacity"), [(1, READ_AHEAD), (2, PARALLEL_READ_AHEAD)])
def test_layers_loaded_at_once_read_ahead_less_each(
    driver: Driver,
    store: ImageStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jobs: int,
    capacity: int,
) -> None:
    """A load's memory does not grow with its jobs: each feed's read-ahead pipe is
    smaller when several layers are imported at once."""
    made: list[int] = []

    def recording_feed(*args: Any, **kwargs: Any) -> TarFeed:
        made.append(kwargs["capacity"])
        return TarFeed(*args, **kwargs)

    monkeypatch.setattr(_archive_load, "TarFeed", recording_feed)
    data, _ = docker_save([BASE, CHILD, TOP], layout="blobs")
    archive = tmp_path / "image.tar"
    archive.write_bytes(data)
    load(driver, store, archive, jobs=jobs)
    assert made == [capacity] * 3
    assert read_ahead(1) == READ_AHEAD > read_ahead(2) == read_ahead(8) == PARALLEL_READ_AHEAD


def test_a_load_that_fails_in_a_middle_layer_leaves_nothing(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    layers = [BASE, CHILD, TOP]
    data, _ = docker_save(layers, config=config_for([BASE, TOP, TOP]))  # wrong diffID for CHILD
    archive = tmp_path / "image.tar"
    archive.write_bytes(data)
    with pytest.raises(DigestMismatch):
        load(driver, store, archive, jobs=3)
    stores.assert_pristine(driver, store)


def test_cli_load_takes_jobs(cli: Any, tmp_path: Path) -> None:
    layers = [BASE, CHILD, TOP]
    data, config = docker_save(layers, compression=["gzip"] * 3, layout="blobs")
    archive = tmp_path / "image.tar"
    archive.write_bytes(data)
    refused = cli("load", "--jobs", "0", str(archive))
    assert refused.returncode == 2, refused.stderr
    assert b"--jobs must be at least 1" in refused.stderr
    (loaded,) = cli.json("load", "-j", "2", str(archive))
    assert loaded["id"].removeprefix("sha256:") == sha(config)[7:]
    assert len(cli.json("ls")) == 3


def test_two_imports_in_two_threads_run_at_once(driver: Driver) -> None:
    # The first import is held half-way through its tar (inside the native writer) until
    # the second, in another thread, has committed: a lock or queue that serialised the
    # imports of one process would hold the second back, and the first's hold time out.
    a, b = ids(2)
    first = HeldStream(BASE, hold_at=len(BASE) // 2)

    def first_import() -> None:
        driver.apply_diff(a, None, cast(IO[bytes], first), digest=sha(BASE))

    thread = threading.Thread(target=first_import)
    thread.start()
    assert first.held.wait(30)
    driver.apply_diff(b, None, io.BytesIO(CHILD_ON_NOTHING), digest=sha(CHILD_ON_NOTHING))
    assert driver.exists(b)
    assert not driver.exists(a)  # still being written
    first.go.set()
    thread.join(30)
    assert driver.info(a).diff_id == sha(BASE)


def test_a_failed_layer_does_not_stop_the_layers_before_it(driver: Driver) -> None:
    a, b, c = ids(3)
    base = HeldStream(BASE, hold_at=len(BASE) // 2)
    top = io.BytesIO(b"not a tar" * 1000)
    committed: list[int] = []
    threading.Timer(0.3, base.go.set).start()  # the top layer has failed by then
    with pytest.raises(InvalidLayer):
        driver.apply_diffs(
            [
                Diff(a, None, cast(IO[bytes], base), sha(BASE)),
                Diff(b, a, io.BytesIO(CHILD), sha(CHILD)),
                Diff(c, b, top),
            ],
            jobs=3,
            on_commit=lambda i, _size: committed.append(i),
        )
    assert committed == [0, 1]
    assert [layer.id for layer in driver.layers()] == [a, b]
