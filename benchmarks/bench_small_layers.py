"""Benchmark: many small layers, imported one after another in one process, where the fixed
costs of a layer (locks, metadata files, syncs) dominate.

``--layers`` layers (200 by default) of about 1 MB and 100 entries each
(benchmarks/make_layer.py, five different ones in turn), each imported with
``Driver.apply_diff`` into one store (every import commits durably: its own sync), against
GNU ``tar -xf`` of each into a folder of its own followed by ``sync -f`` of that folder.
Rounds alternate; medians are reported, with the time per layer.

Target (issue 18): winlayer at most 1.0x tar + sync.

    python benchmarks/bench_small_layers.py
    python benchmarks/bench_small_layers.py --layers 50 --runs 1
    python benchmarks/bench_small_layers.py --workdir /mnt/winlayer-bench   # quiet_fs.sh up
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.make_layer import cached_layer  # noqa: E402


def winlayer_imports(layers: list[Path], count: int, home: Path) -> float:
    from winlayer import Driver

    driver = Driver(home, backend="portable", base_images=home.parent / "base-images")
    start = time.perf_counter()
    for i in range(count):
        driver.apply_diff(f"{i:064x}", None, str(layers[i % len(layers)]))
    return time.perf_counter() - start


def tar_extracts(layers: list[Path], count: int, work: Path) -> float:
    start = time.perf_counter()
    for i in range(count):
        dest = work / f"tar{i}"
        dest.mkdir()
        layer = str(layers[i % len(layers)])
        tar = ["tar", "--warning=no-unknown-keyword", "-xf", layer, "-C", str(dest)]
        subprocess.run(tar, check=True)
        subprocess.run(["sync", "-f", str(dest)], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    layers = [cached_layer(1_000_000, 100, seed=seed) for seed in range(5)]
    results: dict[str, list[float]] = {"winlayer apply_diff": [], "tar -xf + sync -f": []}
    for run in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="winlayer-bench-small-", dir=args.workdir))
        try:
            names = list(results)
            for name in names[run % 2 :] + names[: run % 2]:
                if name == "winlayer apply_diff":
                    results[name].append(winlayer_imports(layers, args.layers, work / "h"))
                else:
                    results[name].append(tar_extracts(layers, args.layers, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
            os.sync()
    print(f"{args.layers} layers of ~1 MB, 100 entries; median of {args.runs}")
    for name, times in results.items():
        median = statistics.median(times)
        per = median / args.layers * 1000
        print(f"{name:22} {median:7.2f} s  {per:6.1f} ms/layer  runs {times}")
    ratio = statistics.median(results["winlayer apply_diff"]) / statistics.median(
        results["tar -xf + sync -f"]
    )
    print(f"ratio winlayer / tar + sync: {ratio:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
