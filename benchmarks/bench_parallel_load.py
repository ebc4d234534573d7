"""Benchmark: ``winlayer load --jobs N`` of a multi-layer image, N = 1..4, side by side.

An OCI image layout tar of a 4-layer Windows image of equal layers (benchmarks/make_layer.py
layers, 75 MB and 5,000 entries each by default), once with plain layer blobs and once with
gzip ones, is loaded through the CLI into a fresh store by each ``--jobs`` value in turn,
each load its own process (peak RSS by GNU time), synced at the end. Rounds are
interleaved (the order rotates); medians are reported with the CPU the load used (user +
system seconds of the process, and that divided by the wall time: the cores kept busy).

Target (issue 18): ``--jobs 2`` at most 0.8x ``--jobs 1`` on a 2-core machine; peak RSS
under 100 MiB.

    python benchmarks/bench_parallel_load.py                         # 4 x 75 MB
    python benchmarks/bench_parallel_load.py --size-mb 20 --entries 1000 --runs 1
    python benchmarks/bench_parallel_load.py --workdir /mnt/winlayer-bench   # quiet_fs.sh up
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_load import add_bytes  # noqa: E402
from benchmarks.bench_pull import file_digest, gzip_layer  # noqa: E402
from benchmarks.installed import cli_env  # noqa: E402
from benchmarks.make_layer import cached_layer  # noqa: E402

GNU_TIME = "/usr/bin/time"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"


def oci_archive(layers: list[Path], out: Path, *, gzipped: bool) -> None:
    """An OCI image layout tar holding one image of `layers` (gzip blobs if `gzipped`)."""
    blobs, diff_ids, media_type = [], [], MT_LAYER + ("+gzip" if gzipped else "")
    for layer in layers:
        blob, diff_id = gzip_layer(layer) if gzipped else (layer, "sha256:" + file_digest(layer))
        blobs.append(blob)
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "windows",
            "created": "2024-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Cmd": ["cmd.exe"]},
        }
    ).encode()

    def descriptor(kind: str, digest: str, size: int) -> dict[str, object]:
        return {"mediaType": kind, "digest": digest, "size": size}

    digests = ["sha256:" + file_digest(blob) for blob in blobs]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor(
                "application/vnd.oci.image.config.v1+json",
                "sha256:" + hashlib.sha256(config).hexdigest(),
                len(config),
            ),
            "layers": [
                descriptor(media_type, d, b.stat().st_size)
                for d, b in zip(digests, blobs, strict=True)
            ],
        }
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                descriptor(
                    "application/vnd.oci.image.manifest.v1+json", manifest_digest, len(manifest)
                )
            ],
        }
    ).encode()

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tar, "index.json", index)
        add_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest)
        add_bytes(tar, f"blobs/sha256/{hashlib.sha256(config).hexdigest()}", config)
        for digest, blob in zip(digests, blobs, strict=True):
            tar.add(blob, arcname=f"blobs/sha256/{digest[7:]}")


def load(archive: Path, home: Path, jobs: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of ``winlayer load --jobs`` + sync."""
    argv = [sys.executable, "-m", "winlayer", "--home", str(home), "load", "-j", str(jobs)]
    with tempfile.NamedTemporaryFile(prefix="winlayer-bench-time-", delete=False) as f:
        timing = Path(f.name)
    prefix = [GNU_TIME, "-f", "%M", "-o", str(timing)] if os.path.exists(GNU_TIME) else []
    env = cli_env(WINLAYER_BACKEND="portable")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([*prefix, *argv, str(archive)], check=True, env=env, stdout=subprocess.DEVNULL)
    os.sync()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rss = float(timing.read_text().split()[-1]) / 1024 if prefix else float("nan")
    timing.unlink(missing_ok=True)
    return wall, cpu, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=75, help="per layer")
    parser.add_argument("--entries", type=int, default=5_000, help="per layer")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--settle", type=float, default=2, help="seconds between loads")
    args = parser.parse_args()

    layers = [
        cached_layer(args.size_mb * 1_000_000, args.entries, seed=n) for n in range(args.layers)
    ]
    work = Path(tempfile.mkdtemp(prefix="winlayer-bench-jobs-", dir=args.workdir))
    try:
        for gzipped in (False, True):
            kind = "gzip" if gzipped else "plain"
            archive = work / f"image-{kind}.tar"
            oci_archive(layers, archive, gzipped=gzipped)
            with open(archive, "rb") as f:  # the page cache warm for every run alike
                while f.read(1 << 24):
                    pass
            results: dict[int, list[tuple[float, float, float]]] = {n: [] for n in args.jobs}
            for run in range(args.runs):
                order = args.jobs[run % len(args.jobs) :] + args.jobs[: run % len(args.jobs)]
                for jobs in order:
                    home = work / f"home-{jobs}"
                    results[jobs].append(load(archive, home, jobs))
                    shutil.rmtree(home)
                    os.sync()
                    time.sleep(args.settle)
            mb = archive.stat().st_size / 1e6
            print(f"\n{kind}: {args.layers} layers x {args.size_mb} MB, archive {mb:.0f} MB")
            header = f"{'median s':>9} {'ratio':>6} {'CPU s':>6} {'cores':>6} {'MiB':>5}"
            print(f"{'':10} {header}  runs")
            base = statistics.median(w for w, _, _ in results[args.jobs[0]])
            for jobs, runs in results.items():
                wall = statistics.median(w for w, _, _ in runs)
                cpu = statistics.median(c for _, c, _ in runs)
                peak = max(r for _, _, r in runs)
                listed = " ".join(f"{w:.2f}" for w, _, _ in runs)
                print(
                    f"--jobs {jobs:<3} {wall:9.2f} {wall / base:6.2f} {cpu:6.2f} "
                    f"{cpu / wall:6.2f} {peak:5.0f}  {listed}"
                )
        print(f"\ntarget: --jobs 2 <= 0.8x --jobs 1 (ratio column, against --jobs {args.jobs[0]})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
