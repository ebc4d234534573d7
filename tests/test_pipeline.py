"""The import pipeline (winlayer._pipeline): one path from a layer blob to the importer."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import zstandard

from winlayer import DigestMismatch, Driver, InvalidLayer, _hcs
from winlayer._pipeline import HashingReader, TarFeed, digest_of, plain_tar

from . import stores
from .layerbuild import base_layer, f

COMPRESS = {"gzip": gzip.compress, "zstd": lambda data: zstandard.ZstdCompressor().compress(data)}


driver = stores.driver


class Watched(io.BytesIO):
    """A caller's stream that records the threads reading it and whether it was closed."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.readers: set[int] = set()
        self.was_closed = False

    def read(self, size: int | None = -1) -> bytes:
        self.readers.add(threading.get_ident())
        return super().read(size)

    def close(self) -> None:
        self.was_closed = True
        super().close()


def feed_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("winlayer-feed")]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_import_reads_and_decompresses_on_a_read_ahead_thread(
    driver: Driver, compression: str
) -> None:
    tar = base_layer()
    data = tar if compression == "none" else COMPRESS[compression](tar)
    source = Watched(data)
    size = driver.apply_diff("base", None, source)
    assert size == driver.info("base").size > 0
    assert driver.info("base").diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    # The importer parses on this thread; the blob is read (and decompressed) elsewhere.
    assert source.readers
    assert threading.get_ident() not in source.readers
    assert not source.was_closed  # the caller's stream stays the caller's
    assert feed_threads() == []


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_file_import_goes_through_the_feed(
    driver: Driver, tmp_path: Path, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import winlayer._pipeline as pipeline

    started: list[str] = []
    real = pipeline.TarFeed.__init__

    def init(self: TarFeed, *args: Any, **kwargs: Any) -> None:
        started.append(kwargs.get("compression"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.TarFeed, "__init__", init)
    path = tmp_path / f"layer.tar.{compression}"
    path.write_bytes(COMPRESS[compression](base_layer()))
    driver.apply_diff("base", None, path)
    assert started == [compression]  # sniffed once, by the caller, and handed over
    assert driver.info("base").size


def test_a_plain_tar_file_is_read_by_the_importer_itself(tmp_path: Path) -> None:
    path = tmp_path / "layer.tar"
    path.write_bytes(base_layer())
    with plain_tar(path) as tar:
        assert tar == str(path)


def test_the_callers_compression_is_not_sniffed_again() -> None:
    blob = gzip.compress(b"x" * 1000)
    feed = TarFeed(lambda: io.BytesIO(blob), compression="none")
    try:
        assert feed.reader().read() == blob  # told "none": passed through as it is
        feed.finish()
    finally:
        feed.close()
    feed = TarFeed(lambda: io.BytesIO(blob))
    try:
        assert feed.reader().read() == b"x" * 1000
        feed.finish()
    finally:
        feed.close()


def test_a_blob_digest_mismatch_fails_the_last_read() -> None:
    blob = base_layer()
    wrong = "sha256:" + "0" * 64
    feed = TarFeed(lambda: io.BytesIO(blob), name="blobs/x", blob_digest=wrong)
    try:
        pipe = feed.reader()
        got = bytearray()

        def read_all() -> None:
            while chunk := pipe.read(4096):
                got.extend(chunk)

        with pytest.raises(DigestMismatch) as exc:
            read_all()
        assert bytes(got) == blob  # every byte, then the failure instead of the end
        assert exc.value.expected == wrong
        assert "blobs/x" in str(exc.value)
        with pytest.raises(DigestMismatch):
            feed.finish()
    finally:
        feed.close()


def test_a_wrong_blob_size_is_named() -> None:
    feed = TarFeed(lambda: io.BytesIO(b"abc"), name="blobs/y", blob_size=4)
    try:
        with pytest.raises(InvalidLayer, match="3 bytes, its descriptor says 4") as exc:
            feed.finish()
        assert exc.value.entry == "blobs/y"
    finally:
        feed.close()


def test_a_failed_import_stops_the_read_ahead(driver: Driver) -> None:
    """The importer gives up early (a bad entry); the feed thread, blocked on a full pipe,
    stops, and nothing is left behind."""
    bad = base_layer(f("Files/../escape", b"x"), f("Files/big", bytes(24 << 20)))
    for name, data in [("gzip", gzip.compress(bad, 1)), ("plain", bad)]:
        with pytest.raises(InvalidLayer):
            driver.apply_diff(f"l-{name}", None, io.BytesIO(data))
        assert feed_threads() == []
        assert not driver.exists(f"l-{name}")


def test_corrupt_compressed_data_is_invalid_layer(driver: Driver) -> None:
    data = bytearray(gzip.compress(base_layer()))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(InvalidLayer, match="gzip"):
        driver.apply_diff("l", None, io.BytesIO(bytes(data)))
    assert not driver.exists("l")
    assert feed_threads() == []


def test_text_streams_are_refused(driver: Driver) -> None:
    with pytest.raises(TypeError, match="binary stream"):
        driver.apply_diff("l", None, io.StringIO("not bytes"))  # type: ignore[arg-type]
    assert not driver.exists("l")


def test_hashing_reader_counts_hashes_and_peeks() -> None:
    data = os.urandom(3 << 20)
    seen: list[int] = []
    reader = HashingReader(io.BytesIO(data), on_bytes=seen.append)
    assert reader.peek(4) == data[:4]
    assert reader.read(2) == data[:2]
    assert reader.read() == data[2:]
    assert reader.count == sum(seen) == len(data)
    assert reader.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest_of(io.BytesIO(data)) == (reader.digest, len(data))
    unhashed = HashingReader(io.BytesIO(data), hashed=False).drain()
    assert unhashed.digest is None
    assert unhashed.count == len(data)


def _archived(tmp_path: Path, blob: bytes) -> tuple[Path, int]:
    """`blob` stored between other bytes of a file, as an archive member is; its offset."""
    path = tmp_path / "archive"
    path.write_bytes(b"h" * 1536 + blob + b"t" * 700)
    return path, 1536


def test_a_plain_blob_in_place_is_read_by_the_importer_itself(
    driver: Driver, tmp_path: Path
) -> None:
    tar = base_layer()
    path, offset = _archived(tmp_path, tar)
    counted: list[int] = []
    feed = TarFeed(
        lambda: pytest.fail("no thread reads an in-place blob"),  # type: ignore[arg-type,return-value]
        blob_size=len(tar),
        trust_diff_id=True,
        in_place=(str(path), offset, len(tar)),
        on_bytes=counted.append,
    )
    assert feed_threads() == []
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    try:
        driver.apply_diff("base", None, feed, digest=diff_id)
        feed.finish()
    finally:
        feed.close()
    assert driver.info("base").diff_id == diff_id
    assert sum(counted) == feed.tar_size == len(tar)  # the load's progress sees every byte


@pytest.mark.parametrize(
    ("what", "kwargs"),
    [
        ("compressed", {"blob": "gzip"}),
        ("blob digest not the diffID", {"trust_diff_id": False}),
        ("descriptor size differs", {"blob_size": 1}),
    ],
)
def test_a_blob_in_place_goes_through_the_thread_unless_plain_and_trusted(
    tmp_path: Path, what: str, kwargs: dict[str, Any]
) -> None:
    tar = base_layer()
    blob = gzip.compress(tar) if kwargs.get("blob") == "gzip" else tar
    path, offset = _archived(tmp_path, blob)
    feed = TarFeed(
        lambda: io.BytesIO(blob),
        blob_size=kwargs.get("blob_size", len(blob)),
        trust_diff_id=kwargs.get("trust_diff_id", True),
        in_place=(str(path), offset, len(blob)),
    )
    try:
        assert not isinstance(feed.reader(), _hcs.FileSlice), what
    finally:
        feed.close()


def test_a_file_slice_cut_short_is_an_invalid_layer(driver: Driver, tmp_path: Path) -> None:
    tar = base_layer()
    path, offset = _archived(tmp_path, tar)
    too_long = (str(path), offset, len(tar) + 700 + 1000)  # the file shrank since it was listed
    never = lambda: pytest.fail("read in place")  # noqa: E731
    feed = TarFeed(never, trust_diff_id=True, in_place=too_long)  # type: ignore[arg-type]
    try:
        with pytest.raises(InvalidLayer, match="ends 1000 bytes before the end of the") as info:
            driver.apply_diff("base", None, feed)
    finally:
        feed.close()
    assert str(path) in str(info.value)
    assert not driver.exists("base")
    with pytest.raises(FileNotFoundError):
        _hcs.tar_digest(_hcs.FileSlice(tmp_path / "missing", 0, 10))
    assert _hcs.tar_digest(_hcs.FileSlice(path, offset, len(tar))) == (
        "sha256:" + hashlib.sha256(tar).hexdigest()
    )
