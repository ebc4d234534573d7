"""Benchmark: list a layer tar with decoded Windows metadata and its diffID.

Issue target, on a 300 MB, 20,000-entry layer tar with MSWINDOWS records: the listing
(``winlayer.list_layer_tar``, every entry's attributes, owner, times, link target and stream
name touched, plus the diffID) takes at most 1.5x the time of ``openssl dgst -sha256`` of the
same file (hashing is the floor), is at least 5x faster than Python ``tarfile`` listing +
``hashlib``, and peaks under 64 MiB, independent of the layer's size.

Every contender runs in its own process (so that peak RSS is its own), on the same file, warm
in the page cache, interleaved round by round; the median of the rounds is reported:

    python benchmarks/bench_layertar_ls.py [--size-mb 300] [--entries 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.make_layer import make_layer  # noqa: E402

TIME = "/usr/bin/time"

# Each Python contender prints: entries, diffID, seconds spent after its imports.
WINLAYER = """
import sys, time
from winlayer import list_layer_tar
start = time.perf_counter()
n = 0
with list_layer_tar(sys.argv[1], allow_parent_links=True) as layer:
    for e in layer:
        # what `tar ls` shows: decoded attributes, owner, time, link target, stream name
        e.mode, e.owner, e.last_write_time, e.link_target, e.stream
        n += 1
print(n, layer.diff_id, time.perf_counter() - start)
"""

TARFILE = """
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
    n = 0
    with tarfile.open(fileobj=src, mode="r|") as t:
        for m in t:
            m.pax_headers.get("MSWINDOWS.fileattr"), m.pax_headers.get("MSWINDOWS.rawsd"), m.mtime
            n += 1
    while src.read(1 << 20):
        pass
print(n, "sha256:" + src.h.hexdigest(), time.perf_counter() - start)
"""


def run(cmd: list[str], rss_file: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes and stdout of one process.

    The peak comes from GNU time, a small parent: a child forked from this interpreter
    would count this interpreter's own pages in its peak."""
    start = time.perf_counter()
    result = subprocess.run(
        [TIME, "-f", "%M", "-o", str(rss_file), *cmd], capture_output=True, check=False
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {result.stderr.decode(errors='replace')}")
    return elapsed, int(rss_file.read_text().split()[-1]) * 1024, result.stdout.decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layer", type=Path, help="use this layer tar instead of generating one")
    args = parser.parse_args()

    openssl = shutil.which("openssl")
    if openssl is None or not Path(TIME).exists():
        raise SystemExit(f"needs openssl and GNU time ({TIME})")
    with tempfile.TemporaryDirectory(prefix="bench-layertar-ls-") as tmp:
        layer = args.layer
        if layer is None:
            layer = Path(tmp) / "layer.tar"
            make_layer(layer, size=args.size_mb * 1_000_000, entries=args.entries)
        size = layer.stat().st_size
        with open(layer, "rb") as f:  # warm the page cache for everyone
            while f.read(1 << 24):
                pass

        contenders = {
            "openssl dgst -sha256": [openssl, "dgst", "-sha256", str(layer)],
            "winlayer list_layer_tar": [sys.executable, "-c", WINLAYER, str(layer)],
            "tarfile + hashlib": [sys.executable, "-c", TARFILE, str(layer)],
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        inner: dict[str, list[float]] = {name: [] for name in contenders}
        peaks: dict[str, int] = dict.fromkeys(contenders, 0)
        outputs: dict[str, list[str]] = {}
        for _ in range(args.rounds):
            for name, cmd in contenders.items():
                elapsed, peak, out = run(cmd, Path(tmp) / "rss")
                times[name].append(elapsed)
                peaks[name] = max(peaks[name], peak)
                outputs[name] = out.split()
                # openssl has no start-up to speak of: its in-process time is its wall time
                inner[name].append(float(outputs[name][2]) if len(outputs[name]) == 3 else elapsed)

    digest = "sha256:" + outputs["openssl dgst -sha256"][-1]
    w_count, w_digest = outputs["winlayer list_layer_tar"][:2]
    t_count, t_digest = outputs["tarfile + hashlib"][:2]
    if not (w_digest == t_digest == digest):
        raise SystemExit(f"digests differ: {digest} {w_digest} {t_digest}")

    print(f"layer: {size / 1e6:.0f} MB, {w_count} entries (tarfile sees {t_count} members)")
    print(f"{args.rounds} rounds, medians; 'after imports' leaves out interpreter start-up")
    print(f"{'contender':<26} {'process s':>10} {'after imports s':>16} {'peak RSS MiB':>13}")
    for name in contenders:
        print(
            f"{name:<26} {statistics.median(times[name]):>10.3f} "
            f"{statistics.median(inner[name]):>16.3f} {peaks[name] / 2**20:>13.1f}"
        )
    for label, table in (("process", times), ("after imports", inner)):
        ours = statistics.median(table["winlayer list_layer_tar"])
        floor = statistics.median(table["openssl dgst -sha256"])
        slow = statistics.median(table["tarfile + hashlib"])
        print(
            f"{label:<14} winlayer/openssl {ours / floor:.2f}x (target <= 1.5x), "
            f"tarfile/winlayer {slow / ours:.2f}x (target >= 5x)"
        )
    peak = peaks["winlayer list_layer_tar"] / 2**20
    print(f"winlayer peak RSS {peak:.1f} MiB (target < 64 MiB)")


if __name__ == "__main__":
    main()
