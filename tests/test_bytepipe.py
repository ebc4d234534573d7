"""_hcs.BytePipe: a Python producer thread feeding native readers (and Python ones)."""

from __future__ import annotations

import _thread
import faulthandler
import hashlib
import os
import random
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.layerbuild import base_layer, f
from winlayer import _hcs
from winlayer.errors import InvalidLayer

from .test_tar_reader import build, info

MIB = 1 << 20
SIZES = [0, 1, 2, 511, 512, 513, 65535, 65536, 65537, MIB - 1, MIB, MIB + 1, 3 * MIB]


def producer(
    pipe: _hcs.BytePipe, data: bytes, rng: random.Random, max_piece: int
) -> threading.Thread:
    """A thread feeding `data` in random pieces, then finish(); fail() with its error."""

    def run() -> None:
        try:
            view = memoryview(data)
            i = 0
            while i < len(view):
                k = rng.randint(1, max_piece)
                pipe.feed(view[i : i + k])
                i += k
        except BaseException as exc:
            pipe.fail(exc)
        else:
            pipe.finish()

    t = threading.Thread(target=run)
    t.start()
    return t


def joined(t: threading.Thread, seconds: float = 30) -> bool:
    t.join(seconds)
    return not t.is_alive()


@pytest.mark.parametrize("capacity", [1, 7, 4096, 1 << 20])
def test_python_reader_gets_every_byte_in_order(capacity: int) -> None:
    rng = random.Random(capacity)
    for size in SIZES:
        if size > 5000 * capacity:
            break  # a byte or a few per piece: slow, and nothing new
        data = os.urandom(size)
        with _hcs.BytePipe(capacity) as pipe:
            t = producer(pipe, data, rng, max(1, min(size, 3 * capacity, 1 << 20)))
            got = bytearray()
            buf = bytearray(70_000)
            while True:
                if rng.random() < 0.5:
                    chunk = pipe.read(rng.randint(1, 70_000))
                else:
                    n = pipe.readinto(memoryview(buf)[: rng.randint(1, 70_000)])
                    chunk = bytes(buf[:n])
                if not chunk:
                    break
                got += chunk
            assert joined(t)
            assert bytes(got) == data, (capacity, size)
            assert pipe.read() == b""  # stays at the end


def random_tar(rng: random.Random) -> tuple[bytes, dict[str, bytes]]:
    payloads = {f"f{i}": os.urandom(size) for i, size in enumerate(SIZES)}
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (info(name, size=len(data)), data) for name, data in payloads.items()
    ]
    rng.shuffle(members)
    return build(members, tarfile.PAX_FORMAT), payloads


@pytest.mark.parametrize("capacity", [100, 4096, 32 << 20])
def test_native_reader_gets_every_byte_in_order(capacity: int) -> None:
    rng = random.Random(capacity)
    tar, payloads = random_tar(rng)
    pipe = _hcs.BytePipe(capacity)
    t = producer(pipe, tar, rng, 200_000)
    scan = _hcs.read_tar(pipe, payloads=True)
    assert joined(t)
    assert scan.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert {e.name: e.data for e in scan.entries} == payloads


def test_backend_imports_a_layer_fed_by_a_producer_thread(tmp_path: Path) -> None:
    layer = base_layer(f("Files/big.bin", os.urandom(5 << 20)))
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    (tmp_path / "home").mkdir()
    backend = _hcs.portable_backend(str(tmp_path / "base-images"))
    drv = _hcs.DriverInfo(1, str(tmp_path / "home"))
    pipe = _hcs.BytePipe(1 << 20)
    t = producer(pipe, layer, random.Random(1), 100_000)
    result = backend.import_layer(drv, "layer", [], pipe, diff_id)
    assert joined(t)
    assert result.diff_id == diff_id
    with backend.export_layer(drv, "layer", [], True) as stream:
        assert stream.read() == layer


def test_layer_tar_lister_reads_a_pipe() -> None:
    layer = base_layer()
    pipe = _hcs.BytePipe(1000)
    t = producer(pipe, layer, random.Random(2), 3000)
    lister = _hcs.LayerTarLister(pipe)
    paths = []
    while batch := lister.next_batch():
        paths += [e[0] for e in batch]
    assert joined(t)
    assert "Files/Windows/win.ini" in paths
    assert lister.diff_id == "sha256:" + hashlib.sha256(layer).hexdigest()


def blocked(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException | None]]:
    """Runs `call` on a thread; the list gets its exception (or None) when it returns."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    t = threading.Thread(target=run)
    t.start()
    return t, outcome


def test_feed_blocks_while_the_pipe_is_full() -> None:
    pipe = _hcs.BytePipe(4096)
    pipe.feed(b"a" * 4096)  # fills it, without blocking
    assert pipe.buffered == 4096
    t, outcome = blocked(lambda: pipe.feed(b"b" * 10_000))
    t.join(0.2)
    assert t.is_alive()  # waits for room
    assert not outcome
    assert pipe.buffered == 4096  # the bound holds
    got = pipe.read(4096)
    assert got == b"a" * 4096
    # The rest arrives as room is made, never more than the capacity at a time.
    while len(got) < 14_096:
        assert pipe.buffered <= 4096
        chunk = pipe.read(1000)
        assert chunk
        got += chunk
    assert joined(t)
    assert outcome == [None]
    assert got == b"a" * 4096 + b"b" * 10_000


def test_fail_raises_that_exception_in_the_native_readers_caller(tmp_path: Path) -> None:
    layer = base_layer()

    class Lost(Exception):
        pass

    def failing_pipe(exc: BaseException, fed: bytes = layer[:2048]) -> _hcs.BytePipe:
        pipe = _hcs.BytePipe()
        pipe.feed(fed)
        pipe.fail(exc)
        return pipe

    def list_entries(pipe: _hcs.BytePipe) -> None:
        lister = _hcs.LayerTarLister(pipe)
        while lister.next_batch():
            pass

    for read in (_hcs.read_tar, _hcs.tar_digest, list_entries):
        exc = Lost("the network went away")
        with pytest.raises(Lost) as raised:
            read(failing_pipe(exc))
        assert raised.value is exc

    # A backend import aborts: nothing is left in the store.
    (tmp_path / "home").mkdir()
    backend = _hcs.portable_backend(str(tmp_path / "base-images"))
    drv = _hcs.DriverInfo(1, str(tmp_path / "home"))
    exc = Lost("decompression failed")
    with pytest.raises(Lost) as raised:
        backend.import_layer(drv, "layer", [], failing_pipe(exc, layer[: len(layer) // 2]))
    assert raised.value is exc
    assert not backend.layer_exists(drv, "layer")
    assert os.listdir(tmp_path / "home") == [".winlayer-store.lock"]

    # A Python reader gets the data fed before, then the exception, every time it reads.
    pipe = failing_pipe(exc, b"head")
    assert pipe.read(10) == b"head"
    for _ in range(2):
        with pytest.raises(Lost) as raised:
            pipe.read(1)
        assert raised.value is exc


def test_closing_the_reader_makes_a_blocked_feed_raise_broken_pipe() -> None:
    pipe = _hcs.BytePipe(100)
    pipe.feed(b"x" * 100)
    t, outcome = blocked(lambda: pipe.feed(b"y" * 1000))
    t.join(0.2)
    assert t.is_alive()
    pipe.close()
    assert joined(t, 5)
    assert len(outcome) == 1
    assert isinstance(outcome[0], BrokenPipeError)
    with pytest.raises(BrokenPipeError):
        pipe.feed(b"z")
    assert pipe.closed
    with pytest.raises(ValueError, match="closed"):
        pipe.read(1)
    with pytest.raises(ValueError, match="closed"):
        _hcs.tar_digest(pipe)
    pipe.finish()  # nobody is told of the end, and that is no error


def test_closing_the_reader_fails_a_native_read_in_progress() -> None:
    pipe = _hcs.BytePipe()
    pipe.feed(base_layer()[:1024])
    t, outcome = blocked(lambda: _hcs.tar_digest(pipe))
    while pipe.buffered:  # the reader has taken what was fed and waits for more
        time.sleep(0.01)
    pipe.close()
    assert joined(t, 5)
    assert len(outcome) == 1
    assert "closed" in str(outcome[0])


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity must be positive"):
        _hcs.BytePipe(0)
    pipe = _hcs.BytePipe()
    with pytest.raises(TypeError, match="exception instance"):
        pipe.fail("not an exception")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pipe.feed(memoryview(b"abcdef")[::2])  # not contiguous
    with pytest.raises(TypeError):
        pipe.feed("text")  # type: ignore[arg-type]
    pipe.feed(bytearray(b"ab"))
    pipe.feed(memoryview(b"cd"))
    pipe.finish()
    with pytest.raises(ValueError, match="finished"):
        pipe.feed(b"more")
    with pytest.raises(ValueError, match="finished"):
        pipe.finish()
    with pytest.raises(ValueError, match="finished"):
        pipe.fail(RuntimeError())
    assert pipe.read() == b"abcd"
    assert pipe.readable()
    assert not pipe.seekable()
    assert not pipe.writable()


def test_a_native_read_waiting_on_the_main_thread_can_be_interrupted() -> None:
    pipe = _hcs.BytePipe()
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _hcs.tar_digest(pipe)  # nothing is fed
    finally:
        timer.join()
        pipe.close()


class PythonLevelReader:
    """The pipe behind a Python method: native code must then take the GIL per chunk."""

    def __init__(self, pipe: _hcs.BytePipe) -> None:
        self._pipe = pipe

    def readinto(self, buffer: Any) -> int:
        return self._pipe.readinto(buffer)


def stalls_while_this_thread_holds_the_gil(
    as_source: Callable[[_hcs.BytePipe], Any], patience: float
) -> bool:
    """Feeds a tar to _hcs.tar_digest (on another thread) from this thread, which keeps
    the GIL throughout: a long switch interval, and feed() only when there is room (it
    then copies without releasing the GIL). True when the reader took no data for
    `patience` seconds: it needed the GIL."""
    capacity, piece = 64 << 10, 16 << 10
    tar = build([(info("big", size=8 << 20), os.urandom(8 << 20))], tarfile.PAX_FORMAT)
    pipe = _hcs.BytePipe(capacity)
    pipe.feed(tar[:capacity])
    digest: list[str] = []
    reader = threading.Thread(target=lambda: digest.append(_hcs.tar_digest(as_source(pipe))))
    reader.start()
    pipe.feed(tar[capacity : capacity + piece])  # waits (GIL released) until the reader reads
    offset = capacity + piece
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    stalled = False
    try:
        while offset < len(tar) and not stalled:
            give_up = time.monotonic() + patience
            while pipe.buffered + piece > capacity:  # no GIL release in here
                if time.monotonic() > give_up:
                    stalled = True
                    break
            else:
                pipe.feed(tar[offset : offset + piece])
                offset += piece
    finally:
        sys.setswitchinterval(interval)
    pipe.feed(tar[offset:])
    pipe.finish()
    assert joined(reader)
    assert digest == ["sha256:" + hashlib.sha256(tar).hexdigest()]
    return stalled


def test_native_reads_do_not_take_the_gil_per_chunk() -> None:
    # The check itself sees a reader that needs the GIL ...
    assert stalls_while_this_thread_holds_the_gil(PythonLevelReader, patience=1)
    # ... and the pipe read natively is not one (however slow the machine).
    assert not stalls_while_this_thread_holds_the_gil(lambda pipe: pipe, patience=30)


def test_invalid_data_through_a_pipe_names_the_offset() -> None:
    pipe = _hcs.BytePipe()
    pipe.feed(b"\xff" * 1024)
    pipe.finish()
    with pytest.raises(InvalidLayer) as exc:
        _hcs.read_tar(pipe)
    assert exc.value.offset == 0


def test_closing_from_another_thread_while_the_main_thread_reads_natively() -> None:
    """The main thread's reader takes the GIL every 100 ms of waiting (for signals); a
    close() made meanwhile by a thread holding the GIL must not wait for that reader."""
    pipe = _hcs.BytePipe()
    pipe.feed(base_layer()[:1024])

    def close_while_holding_the_gil() -> None:
        while pipe.buffered:  # the reader has taken the bytes and waits for more
            time.sleep(0.01)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1000.0)
        try:
            end = time.monotonic() + 0.35  # the reader's signal check now waits for the GIL
            while time.monotonic() < end:
                pass
            pipe.close()
        finally:
            sys.setswitchinterval(interval)

    faulthandler.dump_traceback_later(120, exit=True)  # a deadlock ends the run, loudly
    try:
        closer = threading.Thread(target=close_while_holding_the_gil)
        closer.start()
        with pytest.raises(ValueError, match="closed"):
            _hcs.tar_digest(pipe)
        assert joined(closer)
    finally:
        faulthandler.cancel_dump_traceback_later()
