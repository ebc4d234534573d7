"""open_layer (compression detection, pipes, limits, corrupt data) and NativeStream."""

from __future__ import annotations

import _thread
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import zstandard
from zlib_ng import zlib_ng

from winlayer import _hcs
from winlayer._stream import gzip_inflater, open_layer
from winlayer.errors import InvalidLayer

from .test_tar_reader import build, sample_members

TAR = build(sample_members(), 2) + os.urandom(3000)  # trailing bytes are part of the digest
DIGEST = "sha256:" + hashlib.sha256(TAR).hexdigest()


@pytest.fixture(autouse=True, params=["zlib-ng", "zlib"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with zlib-ng and with the fallback, zlib (zlib-ng missing)."""
    if request.param == "zlib":
        monkeypatch.setitem(sys.modules, "zlib_ng", None)  # `import zlib_ng` fails
    return str(request.param)


def test_gzip_is_inflated_by_zlib_ng_else_by_zlib(inflater: str) -> None:
    assert gzip_inflater() is (zlib_ng if inflater == "zlib-ng" else zlib)


def gzip_members(data: bytes, n: int = 3) -> bytes:
    step = len(data) // n + 1
    return b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step))


def zstd_frames(data: bytes, n: int = 3) -> bytes:
    step = len(data) // n + 1
    c = zstandard.ZstdCompressor()
    return b"".join(c.compress(data[i : i + step]) for i in range(0, len(data), step))


CLEAN = {"none": TAR, "gzip": gzip_members(TAR), "zstd": zstd_frames(TAR)}
# gzip(1) ignores NUL padding after the last member: so must we.
COMPRESSED = {**CLEAN, "gzip": CLEAN["gzip"] + b"\0" * 64}


class RawOnly(io.RawIOBase):
    """A file object without peek(): like a socket or a custom stream."""

    def __init__(self, data: bytes, chunk: int = 1 << 30) -> None:
        self._f = io.BytesIO(data)
        self._chunk = chunk

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        return self._f.readinto(memoryview(b)[: self._chunk])


def read_all(stream: object) -> bytes:
    return stream.read()  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_path_input(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "blob"
    path.write_bytes(COMPRESSED[compression])
    tar, detected = open_layer(path)
    assert detected == compression
    if compression == "none":
        assert tar == str(path)  # read natively by path
    else:
        with tar:  # type: ignore[union-attr]
            assert _hcs.tar_digest(tar) == DIGEST


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize(
    "wrap",
    [
        io.BytesIO,
        RawOnly,
        lambda b: RawOnly(b, chunk=1),  # one byte per read
        lambda b: io.BufferedReader(RawOnly(b), buffer_size=2),  # peek() shorter than magic
    ],
    ids=["bytesio", "raw", "raw-1-byte", "buffered-tiny"],
)
def test_file_object_input(compression: str, wrap: object) -> None:
    source = wrap(COMPRESSED[compression])  # type: ignore[operator]
    tar, detected = open_layer(source)
    assert detected == compression
    assert read_all(tar) == TAR
    tar.close()  # type: ignore[union-attr]
    assert not source.closed  # the caller's object stays the caller's


def test_peekable_plain_stream_is_returned_as_is() -> None:
    source = io.BufferedReader(io.BytesIO(TAR))  # type: ignore[arg-type]
    tar, detected = open_layer(source)
    assert (tar, detected) == (source, "none")
    assert source.tell() == 0


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_pipe_input(compression: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    feeder = threading.Thread(
        target=lambda: (proc.stdin.write(COMPRESSED[compression]), proc.stdin.close())  # type: ignore[union-attr]
    )
    feeder.start()
    tar, detected = open_layer(proc.stdout)
    assert detected == compression
    assert _hcs.tar_digest(tar) == DIGEST
    feeder.join()
    proc.stdout.close()
    assert proc.wait() == 0


def test_zstd_skippable_frames_anywhere() -> None:
    skippable = b"\x5a\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"12345"
    frames = zstd_frames(TAR, 2)
    half = len(zstandard.ZstdCompressor().compress(TAR[: len(TAR) // 2 + 1]))
    for blob in (skippable + frames, frames[:half] + skippable + frames[half:]):
        tar, detected = open_layer(io.BytesIO(blob))
        assert detected == "zstd"
        assert read_all(tar) == TAR


def test_text_and_non_blocking_streams_are_refused() -> None:
    with pytest.raises(TypeError, match="binary stream"):
        open_layer(io.StringIO("not bytes"))

    class NonBlocking(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int | None:  # type: ignore[override]
            self.calls += 1
            if self.calls == 1:
                b[:4] = b"\x28\xb5\x2f\xfd"
                return 4
            return None  # would block

    tar, detected = open_layer(NonBlocking())
    assert detected == "zstd"
    with pytest.raises(ValueError, match="non-blocking"):
        read_all(tar)  # not taken for the end of the layer


def test_empty_input_is_plain() -> None:
    tar, detected = open_layer(io.BytesIO(b""))
    assert detected == "none"
    with pytest.raises(InvalidLayer, match="missing end-of-archive"):
        _hcs.tar_digest(tar)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_decompression_limit(compression: str) -> None:
    bomb = (
        gzip.compress if compression == "gzip" else zstandard.ZstdCompressor(level=19).compress
    )(b"\0" * (64 << 20))
    assert len(bomb) < 100_000
    tar, _ = open_layer(io.BytesIO(bomb), max_uncompressed=10 << 20)
    with pytest.raises(InvalidLayer) as exc:
        _hcs.tar_digest(tar)
    assert f"{compression} data expands past the limit of {10 << 20}" in exc.value.reason
    assert exc.value.offset == 10 << 20


@pytest.mark.parametrize(
    ("compression", "damage", "message"),
    [
        ("gzip", lambda b: b[: len(b) // 2], "the stream ends inside a gzip member"),
        (
            "gzip",
            lambda b: b[:20] + bytes(x ^ 0x55 for x in b[20:60]) + b[60:],
            "corrupt gzip data",
        ),
        ("gzip", lambda b: b + b"not gzip", "incorrect header check"),
        ("zstd", lambda b: b[: len(b) // 2], "the stream ends inside a zstd frame"),
        ("zstd", lambda b: b[:4] + b"\xff" * 16 + b[20:], "corrupt zstd data"),
    ],
    ids=[
        "gzip-truncated",
        "gzip-corrupt",
        "gzip-trailing-garbage",
        "zstd-truncated",
        "zstd-corrupt",
    ],
)
def test_corrupt_compressed_data(compression: str, damage: object, message: str) -> None:
    blob = damage(CLEAN[compression])  # type: ignore[operator]
    tar, _ = open_layer(io.BytesIO(blob))
    with pytest.raises(InvalidLayer, match=message) as exc:
        _hcs.tar_digest(tar)
    assert "compressed offset" in exc.value.reason


# --- NativeStream -------------------------------------------------------------------------


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def native_threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def threads_left(threads: set[str], seconds: float = 5.0) -> set[str]:
    """Which of `threads` are still listed after up to `seconds`: a thread that
    pthread_join has seen end stays in /proc/self/task until the kernel reaps it."""
    deadline = time.monotonic() + seconds
    while (left := threads & native_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def test_native_stream_reads_like_a_file(tmp_path: Path) -> None:
    size = 3 * (1 << 20) + 17
    expected = pattern(size)
    with _hcs._test_stream(size, buffer_size=1000) as s:
        assert s.readable()
        assert not s.seekable()
        assert not s.writable()
        assert s.read(10) == expected[:10]
        buf = bytearray(100)
        n = s.readinto(buf)
        assert 0 < n <= 100
        assert bytes(buf[:n]) == expected[10 : 10 + n]
        assert s.read() == expected[10 + n :]
        assert s.read(5) == b""
    assert s.closed
    with pytest.raises(ValueError, match="closed"):
        s.read()
    out = tmp_path / "copy"
    with _hcs._test_stream(size) as s, out.open("wb") as f:
        shutil.copyfileobj(s, f)  # type: ignore[misc]
    assert out.read_bytes() == expected
    buffered = io.BufferedReader(_hcs._test_stream(size))  # type: ignore[arg-type]
    assert buffered.read(7) == expected[:7]
    assert buffered.read() == expected[7:]
    buffered.close()


def test_native_stream_error_after_the_data_before_it() -> None:
    got = bytearray()

    def drain(s: _hcs.NativeStream) -> None:
        while chunk := s.read(1 << 20):
            got.extend(chunk)

    with _hcs._test_stream(10_000_000, fail_after=3_000_000) as s:
        with pytest.raises(InvalidLayer, match="test failure") as exc:
            drain(s)
        assert got == pattern(3_000_000)
        assert exc.value.offset == 3_000_000
        with pytest.raises(InvalidLayer):  # the error stays
            s.read(1)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_closing_early_stops_the_producer() -> None:
    before = native_threads()
    streams = [_hcs._test_stream(1 << 50, buffer_size=4096) for _ in range(4)]
    for s in streams:
        assert len(s.read(100)) == 100
    producers = native_threads() - before
    assert len(producers) == 4
    started = time.monotonic()
    for s in streams:
        s.close()
        s.close()  # idempotent
    assert time.monotonic() - started < 5
    assert not threads_left(producers)
    # Dropping an unclosed stream joins its thread too.
    before = native_threads()
    s = _hcs._test_stream(1 << 50)
    s.read(1)
    producer = native_threads() - before
    assert len(producer) == 1
    del s, streams
    assert not threads_left(producer)


def test_read_waiting_on_a_slow_producer_can_be_interrupted() -> None:
    scan = _hcs.read_tar(io.BytesIO(TAR), tar_split=True, payloads=True)
    assert scan.tar_split is not None
    payloads = {e.name: e.data for e in scan.entries if e.data}
    release = threading.Event()

    def slow(name: str, size: int) -> bytes:
        release.wait(30)
        return payloads[name]  # type: ignore[return-value]

    stream = _hcs.tar_split_rebuild(scan.tar_split, slow)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            stream.read()
    finally:
        release.set()
        timer.join()
        stream.close()


def test_native_stream_feeds_the_tar_reader() -> None:
    record = _hcs.read_tar(io.BytesIO(TAR), tar_split=True, payloads=True)
    payloads = {e.name: e.data for e in record.entries if e.data}
    assert record.tar_split is not None
    with _hcs.tar_split_rebuild(record.tar_split, lambda n, s: payloads[n]) as s:  # type: ignore[arg-type,return-value]
        # A Python stream of native data read back by native code through Python.
        assert _hcs.tar_digest(s) == DIGEST


def test_a_python_error_of_a_producer_is_raised_again_at_every_read() -> None:
    """A producer's Python exception stays the reader's answer: the same object each time
    (it used to abort the process at the second read)."""
    scan = _hcs.read_tar(io.BytesIO(TAR), tar_split=True, payloads=True)
    assert scan.tar_split is not None
    errors = []

    def no_payload(name: str, size: int) -> bytes:
        errors.append(LookupError(name))
        raise errors[-1]

    with _hcs.tar_split_rebuild(scan.tar_split, no_payload) as s:
        raised = []
        for _ in range(2):
            with pytest.raises(LookupError) as exc:
                s.read()
            raised.append(exc.value)
        assert raised == [errors[0], errors[0]]

    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            raise errors[0]

    lister = _hcs.LayerTarLister(Failing())
    for _ in range(2):
        with pytest.raises(LookupError) as exc:
            lister.next_batch()
        assert exc.value is errors[0]
