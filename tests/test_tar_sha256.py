"""SHA-256 (SHA-NI and portable) against hashlib."""

from __future__ import annotations

import hashlib
import io
import platform
import random
import sys
from pathlib import Path

import pytest

from winlayer import _hcs


def lengths() -> list[int]:
    # Every length around the 64-byte block and the 56-byte padding boundary, then
    # larger ones that cross many blocks with odd tails.
    rng = random.Random(7)
    return list(range(0, 300)) + [rng.randrange(300, 200_000) for _ in range(40)] + [1 << 20]


@pytest.mark.parametrize("portable", [False, True], ids=["auto", "portable"])
def test_sha256_matches_hashlib(portable: bool) -> None:
    rng = random.Random(1)
    data = rng.randbytes(1 << 20)
    for n in lengths():
        assert _hcs.sha256_hex(data[:n], portable) == hashlib.sha256(data[:n]).hexdigest(), n


def test_sha256_accepts_any_buffer() -> None:
    data = bytearray(b"abc" * 1000)
    assert _hcs.sha256_hex(memoryview(data)[3:]) == hashlib.sha256(data[3:]).hexdigest()


def test_incremental_hashing_over_odd_chunks() -> None:
    # The tar reader hashes what each read() returns: chunks of any size must give the
    # digest of the whole stream.
    rng = random.Random(3)
    raw = rng.randbytes(50_000)
    tar = _hcs.TarWriter()
    tar.add("f", size=len(raw))
    tar.write(raw)
    whole = tar.finish()
    assert whole is not None

    class Odd:
        def __init__(self) -> None:
            self.f = io.BytesIO(whole)

        def read(self, n: int) -> bytes:
            return self.f.read(min(n, rng.randrange(1, 200)))

    assert _hcs.tar_digest(Odd()) == "sha256:" + hashlib.sha256(whole).hexdigest()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.machine() != "x86_64",
    reason="reads x86 CPU flags from /proc/cpuinfo",
)
def test_sha_ni_used_exactly_where_the_cpu_has_it() -> None:
    flags = Path("/proc/cpuinfo").read_text()
    assert _hcs.sha256_accelerated() == (" sha_ni" in flags)
