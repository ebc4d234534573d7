"""Benchmark: importing a layer tar into the portable backend (issue 4), side by side.

On the same layer (benchmarks/make_layer.py: 300 MB, 20,000 entries with Windows PAX
records, ADS, hard links, whiteouts), into the same file system, every run ending with its
data on disk (the import syncs itself; the others run ``sync -f`` on their folder). Each
contender runs in its own child process (peak RSS by GNU time when present) and writes
into a fresh folder; rounds are interleaved so that a busy machine hurts every contender
alike (in a rotated order), with a pause between rounds while the freed space is trimmed;
the best of ``--runs`` is kept:

- GNU ``tar -xf`` (+ sync): the anchor (it keeps no Windows metadata and hashes nothing);
- winlayer ``import_layer`` (diffID, full Windows metadata, tar-split record, synced);
- ``gzip -dc | tar -x``, ``pigz -dc | tar -x`` and ``zstd -dc | tar -x`` vs winlayer
  importing the .gz / .zst (through ``winlayer._pipeline.plain_tar``, as ``winlayer
  import`` does: decompressed on a read-ahead thread while the importer parses);
- two winlayer imports in two threads vs the same two one after the other (one child),
  and vs the same two in two processes (started by the child, counted);
- winlayer export, canonical and original, vs ``tar -cf - . | cat`` of the extracted tree;
- Python ``tarfile.extractall`` + ``hashlib`` (+ sync), for reference (``--no-python``
  skips it).

Targets: import <= 1.0x tar; gzip <= 0.5x ``gzip -dc | tar -x`` and <= 1.0x ``pigz -dc |
tar -x`` (pigz skipped when not installed; issue 18); zstd <= 1.3x its pipeline; two
threads <= 0.85x sequential and <= 1.0x two processes; exports <= 1.0x ``tar -cf``; peak
RSS < 100 MiB whatever the layer size.

    python benchmarks/bench_import.py                        # 300 MB, 20,000 entries
    python benchmarks/bench_import.py --size-mb 30 --entries 2000 --runs 1
    python benchmarks/bench_import.py --workdir /mnt/winlayer-bench   # another file system

A shared or throttled virtual disk can make the same run 20 times slower a minute later;
``benchmarks/quiet_fs.sh up`` mounts a RAM-backed ext4 at /mnt/winlayer-bench that
measures the file system's and the contenders' own work only.
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
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.make_layer import cached_layer  # noqa: E402

GNU_TIME = "/usr/bin/time"

# Python children print the seconds of their own work (start-up excluded, as for a
# library call); shell children are timed from here.
IMPORT = """
import sys, time
from winlayer import _hcs
from winlayer._pipeline import plain_tar
home, src = sys.argv[1], sys.argv[2]
start = time.perf_counter()
b = _hcs.portable_backend("")
with plain_tar(src) as tar:
    b.import_layer(_hcs.DriverInfo(1, home), "layer", [], tar)
print(time.perf_counter() - start)
"""

TWO_IMPORTS = """
import sys, threading, time
from winlayer import _hcs
home, src, mode = sys.argv[1], sys.argv[2], sys.argv[3]
b = _hcs.portable_backend("")
info = _hcs.DriverInfo(1, home)
def one(id):
    b.import_layer(info, id, [], src)
start = time.perf_counter()
if mode == "parallel":
    threads = [threading.Thread(target=one, args=(f"l{i}",)) for i in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
elif mode == "processes":
    import subprocess
    script = "import sys; from winlayer import _hcs; _hcs.portable_backend('').import_layer(" \
        "_hcs.DriverInfo(1, sys.argv[1]), sys.argv[3], [], sys.argv[2])"
    argv = [sys.executable, "-c", script, home, src]
    children = [subprocess.Popen([*argv, f"l{i}"]) for i in range(2)]
    if any(c.wait() for c in children): sys.exit("an import failed")
else:
    one("l0"); one("l1")
print(time.perf_counter() - start)
"""

EXPORT = """
import sys, time
from winlayer import _hcs
home, original = sys.argv[1], sys.argv[2] == "original"
b = _hcs.portable_backend("")
start = time.perf_counter()
with b.export_layer(_hcs.DriverInfo(1, home), "layer", [], original) as s:
    while s.read(1 << 20):
        pass
print(time.perf_counter() - start)
"""

TARFILE = """
import hashlib, os, sys, tarfile, time
dest, src = sys.argv[1], sys.argv[2]
start = time.perf_counter()
class Hashing:
    def __init__(self, f): self.f, self.h = f, hashlib.sha256()
    def read(self, n=-1):
        b = self.f.read(n); self.h.update(b); return b
with open(src, "rb") as f:
    h = Hashing(f)
    with tarfile.open(fileobj=h, mode="r|") as t:
        t.extractall(dest, filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(dest)
    while h.read(1 << 20): pass
fd = os.open(dest, os.O_RDONLY)
os.fsync(fd); os.close(fd); os.sync()
print(time.perf_counter() - start)
"""


Argv = Callable[[str], list[str]]  # the folder to write into -> command line


@dataclass
class Contender:
    name: str
    argv: Argv
    self_timed: bool  # prints its own seconds
    times: list[float] = field(default_factory=list)
    peak_mib: float = 0.0


def run_child(argv: list[str]) -> tuple[float, float, str]:
    """Wall time, peak RSS (MiB) and stdout of one child."""
    with tempfile.NamedTemporaryFile("r") as peak_file:
        use_time = os.access(GNU_TIME, os.X_OK)
        full = [GNU_TIME, "-f", "%M", "-o", peak_file.name, *argv] if use_time else argv
        start = time.perf_counter()
        proc = subprocess.run(full, capture_output=True, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:4])} failed:\n{proc.stderr.decode()[-2000:]}")
        peak = int(peak_file.read().split()[-1]) / 1024 if use_time else 0.0
    return elapsed, peak, proc.stdout.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="make_layer's seed")
    parser.add_argument("--settle", type=float, default=20, help="seconds to pause between rounds")
    parser.add_argument("--no-python", action="store_true", help="skip tarfile.extractall")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="the file system to write into (default: beside the layer, in benchmarks/data)",
    )
    args = parser.parse_args()

    layer = cached_layer(args.size_mb * 1_000_000, args.entries, args.seed)
    gz, zst = layer.with_suffix(".tar.gz"), layer.with_suffix(".tar.zst")
    if not gz.exists():
        subprocess.run(
            f"gzip -c '{layer}' > '{gz}.tmp' && mv '{gz}.tmp' '{gz}'", shell=True, check=True
        )
    if not zst.exists():
        subprocess.run(["zstd", "-q", "-f", str(layer), "-o", str(zst)], check=True)
    for f in (layer, gz, zst):  # warm the page cache for everyone alike
        with open(f, "rb") as r:
            while r.read(1 << 20):
                pass

    work = Path(tempfile.mkdtemp(prefix="bench-import-", dir=args.workdir or layer.parent))
    py = sys.executable
    sh = "mkdir -p {d} && {cmd} -C {d} && sync -f {d}"

    def shell(cmd: str) -> Argv:
        return lambda d: ["sh", "-c", sh.format(d=d, cmd=cmd)]

    def child(script: str, *extra: str) -> Argv:
        return lambda d: [py, "-c", script, d, *extra]

    contenders = [
        Contender("tar -xf + sync", shell(f"tar -xf '{layer}'"), False),
        Contender("winlayer import", child(IMPORT, str(layer)), True),
        Contender("gzip -dc | tar -x + sync", shell(f"gzip -dc '{gz}' | tar -x"), False),
        Contender("winlayer import .gz", child(IMPORT, str(gz)), True),
        *(
            [Contender("pigz -dc | tar -x + sync", shell(f"pigz -dc '{gz}' | tar -x"), False)]
            if shutil.which("pigz")  # a Debian package; skipped when absent
            else []
        ),
        Contender("zstd -dc | tar -x + sync", shell(f"zstd -dcq '{zst}' | tar -x"), False),
        Contender("winlayer import .zst", child(IMPORT, str(zst)), True),
        Contender("2 imports, sequential", child(TWO_IMPORTS, str(layer), "sequential"), True),
        Contender("2 imports, 2 threads", child(TWO_IMPORTS, str(layer), "parallel"), True),
        Contender("2 imports, 2 processes", child(TWO_IMPORTS, str(layer), "processes"), True),
    ]
    if not args.no_python:
        contenders.append(Contender("tarfile + hashlib + sync", child(TARFILE, str(layer)), True))
    # Exports read what this round's first tar extraction and first import left.
    exports = [
        Contender(
            "tar -cf - tree | cat",
            lambda d: ["sh", "-c", f"tar -cf - -C {d} . | cat > /dev/null"],
            False,
        ),
        Contender("winlayer export canonical", child(EXPORT, "canonical"), True),
        Contender("winlayer export original", child(EXPORT, "original"), True),
    ]

    def measure(c: Contender, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        wall, peak, out = run_child(c.argv(str(folder)))
        c.times.append(float(out.split()[-1]) if c.self_timed else wall)
        c.peak_mib = max(c.peak_mib, peak)

    # Every run writes into a folder of its own; folders are deleted only between rounds,
    # followed by a pause: on a file system mounted with `discard`, the device trims freed
    # blocks in the background and would slow down whoever writes next.
    try:
        for round in range(args.runs):
            base = work / f"round{round}"
            base.mkdir()
            # Rotate the order each round: whoever runs right after a big write pays a
            # little for it (writeback, trims), so no contender should always follow another.
            order = [*range(round, len(contenders)), *range(round)]
            for i in order:
                measure(contenders[i], base / str(i))
            for k, c in enumerate(exports):
                measure(c, base / ("0" if k == 0 else "1"))
            shutil.rmtree(base)
            subprocess.run(["sync", "-f", str(work)], check=True)
            time.sleep(args.settle)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    from winlayer import _hcs

    best = {c.name: min(c.times) for c in contenders + exports}
    print(
        f"{layer.name}: {layer.stat().st_size / 1e6:.0f} MB, {args.entries} entries; "
        f"best of {args.runs}; SHA-NI: {_hcs.sha256_accelerated()}; {os.cpu_count()} CPUs"
    )
    print(f"{'':28} {'seconds':>8} {'peak RSS':>10}")
    for c in contenders + exports:
        print(f"{c.name:28} {min(c.times):8.2f} {c.peak_mib:7.1f} MiB")
    ratios = [
        ("import / tar -xf", "winlayer import", "tar -xf + sync", 1.0),
        ("import .gz / gzip|tar", "winlayer import .gz", "gzip -dc | tar -x + sync", 0.5),
        ("import .gz / pigz|tar", "winlayer import .gz", "pigz -dc | tar -x + sync", 1.0),
        ("import .zst / zstd|tar", "winlayer import .zst", "zstd -dc | tar -x + sync", 1.3),
        ("2 threads / sequential", "2 imports, 2 threads", "2 imports, sequential", 0.85),
        ("2 threads / 2 processes", "2 imports, 2 threads", "2 imports, 2 processes", 1.0),
        ("export canonical / tar -cf", "winlayer export canonical", "tar -cf - tree | cat", 1.0),
        ("export original / tar -cf", "winlayer export original", "tar -cf - tree | cat", 1.0),
    ]
    print("ratios (target):")
    for label, a, b, target in ratios:
        if b not in best:  # pigz absent
            print(f"  {label:28}   -    ({b.split()[0]} not installed)")
            continue
        r = best[a] / best[b]
        print(f"  {label:28} {r:5.2f}x  (<= {target}x: {'met' if r <= target else 'NOT met'})")
    peak = max(
        c.peak_mib for c in contenders + exports if c.name.startswith(("winlayer", "2 imports"))
    )
    print(f"  winlayer peak RSS {peak:.1f} MiB  (< 100 MiB: {'met' if peak < 100 else 'NOT met'})")


if __name__ == "__main__":
    main()
