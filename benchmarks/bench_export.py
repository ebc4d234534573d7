"""Benchmark: exporting a layer (issue 18), canonical and original, side by side with GNU
``tar -cf - DIR | cat >/dev/null`` of the same files extracted.

The layer (benchmarks/make_layer.py, 300 MB and 20,000 entries by default: "L300") is
imported once into the portable backend and extracted once with GNU tar into the same file
system; then rounds alternate (in a rotated order) between

- ``tar -cf - -C tree . | cat > /dev/null``: the anchor (no Windows metadata, no hash);
- winlayer's canonical export (``export_layer(original=False)``), read in 1 MiB pieces;
- winlayer's original export (``original=True``: the imported tar byte for byte, rebuilt
  from the tar-split record and the stored payloads, its SHA-256 checked at the end).

Each runs in a child process (start-up excluded for winlayer: a library call is timed,
peak RSS by GNU time when present); the median of ``--runs`` is reported, with the runs.

Target: each export at most 1.0x tar -cf.

    python benchmarks/bench_export.py
    python benchmarks/bench_export.py --size-mb 30 --entries 2000 --runs 3
    python benchmarks/bench_export.py --workdir /mnt/winlayer-bench   # quiet_fs.sh up
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

from benchmarks.bench_import import EXPORT  # noqa: E402  (the same child as bench_import's)
from benchmarks.make_layer import cached_layer  # noqa: E402

GNU_TIME = "/usr/bin/time"

IMPORT = """
import sys
from winlayer import _hcs
_hcs.portable_backend("").import_layer(_hcs.DriverInfo(1, sys.argv[1]), "layer", [], sys.argv[2])
"""


def run(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB (0 without GNU time) and stdout of a child."""
    timed = Path(GNU_TIME).exists()
    cmd = [GNU_TIME, "-f", "%M", *argv] if timed else argv
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    peak = int(done.stderr.strip().splitlines()[-1]) / 1024 if timed else 0.0
    return wall, peak, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    layer = cached_layer(args.size_mb * 1_000_000, args.entries)
    work = Path(tempfile.mkdtemp(prefix="winlayer-bench-export-", dir=args.workdir))
    try:
        home, tree = work / "home", work / "tree"
        home.mkdir()
        tree.mkdir()
        subprocess.run([sys.executable, "-c", IMPORT, str(home), str(layer)], check=True)
        tar_x = ["tar", "--warning=no-unknown-keyword", "-xf", str(layer), "-C", str(tree)]
        subprocess.run(tar_x, check=True)
        contenders = {
            "tar -cf - tree | cat": ["sh", "-c", f"tar -cf - -C '{tree}' . | cat > /dev/null"],
            "winlayer export canonical": [sys.executable, "-c", EXPORT, str(home), "canonical"],
            "winlayer export original": [sys.executable, "-c", EXPORT, str(home), "original"],
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        peaks: dict[str, float] = dict.fromkeys(contenders, 0.0)
        names = list(contenders)
        for r in range(args.runs):
            for name in names[r % 3 :] + names[: r % 3]:
                wall, peak, out = run(contenders[name])
                times[name].append(float(out.split()[-1]) if name.startswith("winlayer") else wall)
                peaks[name] = max(peaks[name], peak)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{layer.name}: {layer.stat().st_size / 1e6:.0f} MB; median of {args.runs}")
    for name, ts in times.items():
        runs = ", ".join(f"{t:.3f}" for t in ts)
        print(f"{name:28} {statistics.median(ts):7.3f} s  {peaks[name]:6.1f} MiB  runs {runs}")
    anchor = statistics.median(times["tar -cf - tree | cat"])
    for name in names[1:]:
        ratio = statistics.median(times[name]) / anchor
        print(f"ratio {name[9:]:18} / tar -cf: {ratio:.2f}x (target <= 1.0)")


if __name__ == "__main__":
    main()
