"""Benchmark: reading every header of a layer tar and hashing all its bytes (the diffID).

Side by side in one run, on the same file with a warm page cache, each contender in its
own child process (so that its peak memory, ru_maxrss, is its own):

- ``openssl dgst -sha256 FILE``: hashing alone, the floor;
- winlayer ``_hcs.tar_digest``: every header parsed and validated + SHA-256 of all bytes;
- winlayer ``_hcs.TarReader``: the same, iterated from Python (an object per entry, one
  at a time: memory does not grow with the layer);
- winlayer ``_hcs.read_tar``: the same, returning the list of all entries;
- Python ``tarfile`` (streaming) listing + ``hashlib`` over the same bytes, one pass (the
  baseline of the ratios);
- ``tarfile`` listing by path, then ``hashlib`` over the file: two passes;
- GNU ``tar -tvf FILE`` as a reference point.

Prints the best of ``--runs`` times, the ratio to openssl, the speed-up over
tarfile+hashlib and the peak RSS of each child. Python contenders are timed around the
work itself (interpreter start-up and imports excluded, as a library call would be);
openssl and tar by wall time (their start-up is a few milliseconds). Peak RSS comes from
GNU time (``/usr/bin/time -f %M``) when present: ru_maxrss seen from this process would
include its own RSS at fork time. Targets (issue 3): at most 1.5x openssl,
at least 5x faster than tarfile+hashlib, peak memory under 64 MiB whatever the layer size.

    python benchmarks/bench_tar_read.py                       # 300 MB, 20,000 entries
    python benchmarks/bench_tar_read.py --size-mb 30 --entries 2000 --runs 1
    python benchmarks/bench_tar_read.py --file some-layer.tar
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.make_layer import cached_layer  # noqa: E402

# Python contenders print "<digest> <seconds of work>".
WINLAYER_DIGEST = """
import sys, time
from winlayer import _hcs
start = time.perf_counter()
digest = _hcs.tar_digest(sys.argv[1])
print(digest, time.perf_counter() - start)
"""

WINLAYER_LIST = """
import sys, time
from winlayer import _hcs
start = time.perf_counter()
scan = _hcs.read_tar(sys.argv[1])
assert len(scan.entries) > 0
print(scan.diff_id, time.perf_counter() - start)
"""

WINLAYER_STREAM = """
import sys, time
from winlayer import _hcs
start = time.perf_counter()
reader = _hcs.TarReader(sys.argv[1])
count = sum(1 for _ in reader)
assert count > 0
print(reader.diff_id, time.perf_counter() - start)
"""

# Two passes, as one would write it without thinking about I/O: list, then hash.
TARFILE_TWO_PASS = """
import hashlib, sys, tarfile, time
start = time.perf_counter()
with tarfile.open(sys.argv[1]) as tf:
    entries = [(m.name, m.size, m.mtime, m.pax_headers) for m in tf]
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    while chunk := f.read(1 << 20):
        h.update(chunk)
print("sha256:" + h.hexdigest(), time.perf_counter() - start)
"""

TARFILE_LIST = """
import hashlib, sys, tarfile, time
start = time.perf_counter()

class Hashing:
    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()
    def read(self, n=-1):
        data = self.f.read(n)
        self.h.update(data)
        return data

with open(sys.argv[1], "rb") as f:
    src = Hashing(f)
    with tarfile.open(fileobj=src, mode="r|") as tf:
        entries = [(m.name, m.size, m.mtime, m.pax_headers) for m in tf]
    while src.read(1 << 20):
        pass
print("sha256:" + src.h.hexdigest(), time.perf_counter() - start)
"""


@dataclass
class Result:
    name: str
    seconds: float
    peak_mib: float
    digest: str


GNU_TIME = "/usr/bin/time"


def run_child(argv: list[str]) -> tuple[float, float, str]:
    """Wall time, peak RSS (MiB) and stdout of one child process."""
    with tempfile.NamedTemporaryFile("r") as peak_file:
        use_time = os.access(GNU_TIME, os.X_OK)
        full = [GNU_TIME, "-f", "%M", "-o", peak_file.name, *argv] if use_time else argv
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(argv[:3])} failed")
        if use_time:
            peak = int(peak_file.read().split()[-1]) / 1024
        else:
            peak = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    return elapsed, peak, out


def best_of(
    name: str, argv: list[str], runs: int, parse: Callable[[str], str] | None = None
) -> Result:
    """Python contenders report their own work time; the others are timed from here."""
    times, peaks, digest = [], [], ""
    for _ in range(runs):
        wall, peak, out = run_child(argv)
        if parse is None:
            digest, seconds = out.split()
            times.append(float(seconds))
        else:
            digest = parse(out)
            times.append(wall)
        peaks.append(peak)
    return Result(name, min(times), max(peaks), digest)


def openssl_digest(out: str) -> str:
    return "sha256:" + out.strip().rsplit(" ", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--file", type=Path, help="an existing tar instead of the generated layer")
    args = parser.parse_args()

    path = args.file or cached_layer(args.size_mb * 1_000_000, args.entries)
    size = path.stat().st_size
    with open(path, "rb") as f:  # warm the page cache for every contender alike
        while f.read(1 << 20):
            pass
    py = sys.executable
    results: list[Result] = []
    if shutil.which("openssl"):
        results.append(
            best_of(
                "openssl dgst -sha256",
                ["openssl", "dgst", "-sha256", str(path)],
                args.runs,
                openssl_digest,
            )
        )
    results.append(
        best_of("winlayer tar_digest", [py, "-c", WINLAYER_DIGEST, str(path)], args.runs)
    )
    results.append(
        best_of("winlayer TarReader (iter)", [py, "-c", WINLAYER_STREAM, str(path)], args.runs)
    )
    results.append(
        best_of("winlayer read_tar (list)", [py, "-c", WINLAYER_LIST, str(path)], args.runs)
    )
    results.append(best_of("tarfile + hashlib", [py, "-c", TARFILE_LIST, str(path)], args.runs))
    results.append(
        best_of("tarfile, then hashlib", [py, "-c", TARFILE_TWO_PASS, str(path)], args.runs)
    )
    if shutil.which("tar"):
        results.append(
            best_of("tar -tvf (reference)", ["tar", "-tvf", str(path)], args.runs, lambda _: "")
        )

    digests = {r.digest for r in results if r.digest}
    if len(digests) != 1:
        raise SystemExit(f"contenders disagree on the digest: {digests}")

    from winlayer import _hcs

    by_name = {r.name: r for r in results}
    floor = by_name.get("openssl dgst -sha256")
    slow = by_name["tarfile + hashlib"]
    accelerated = _hcs.sha256_accelerated()
    print(f"{path.name}: {size / 1e6:.0f} MB; SHA-256 with SHA-NI: {accelerated}")
    print(f"best of {args.runs}; diffID {digests.pop()}")
    print(
        f"{'':24} {'seconds':>8} {'MB/s':>7} {'vs openssl':>11} {'vs tarfile':>11} {'peak RSS':>10}"
    )
    for r in results:
        vs_floor = f"{r.seconds / floor.seconds:.2f}x" if floor else "-"
        vs_slow = f"{slow.seconds / r.seconds:.1f}x faster" if r is not slow else "-"
        print(
            f"{r.name:26} {r.seconds:8.3f} {size / 1e6 / r.seconds:7.0f} {vs_floor:>11} "
            f"{vs_slow:>11} {r.peak_mib:8.1f} MiB"
        )


if __name__ == "__main__":
    main()
