"""Benchmark: ``winlayer load`` of a docker save archive vs containerd's ``ctr images import``.

Issue 7's target: loading a docker save archive that holds one 300 MB, 20,000-entry
Windows layer, synced at the end, in at most 0.5x the wall time of ``ctr images import``
of the same archive (containerd started here with its own root, state dir and socket,
overlayfs snapshotter), synced likewise. GNU ``tar -xf`` of the bare layer + sync is
printed as a reference point.

Every run starts from an empty store (a fresh winlayer home; a fresh containerd root, so
its content store cannot skip blobs it already has). The page cache is warm for both: the
archive is read once before the first timed run.

    python benchmarks/bench_load.py                      # the issue's sizes
    python benchmarks/bench_load.py --size-mb 30 --entries 2000 --runs 1   # a quick check
    python benchmarks/bench_load.py --workdir /mnt/winlayer-bench   # benchmarks/quiet_fs.sh up

Needs root and containerd (``apt-get install containerd``) for the comparison; without
them only winlayer and tar are measured.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.daemons import Containerd  # noqa: E402

from benchmarks.make_layer import cached_layer  # noqa: E402


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a member `name` holding `data` to `tar`."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_archive(layer: Path, out: Path) -> str:
    """A docker save archive (Docker 25 layout: blobs/sha256, manifest.json, index.json)
    holding one image with `layer`; returns the image id."""
    digest = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    diff_id = "sha256:" + digest.hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "windows",
            "created": "2024-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "config": {"Cmd": ["cmd.exe"]},
        }
    ).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_hex}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": diff_id,
                    "size": layer.stat().st_size,
                }
            ],
        }
    ).encode()
    manifest_hex = hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{manifest_hex}",
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": "bench/layer:1",
                        "org.opencontainers.image.ref.name": "1",
                    },
                }
            ],
        }
    ).encode()
    docker_manifest = json.dumps(
        [
            {
                "Config": f"blobs/sha256/{config_hex}",
                "RepoTags": ["bench/layer:1"],
                "Layers": [f"blobs/sha256/{diff_id[7:]}"],
            }
        ]
    ).encode()

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(layer, arcname=f"blobs/sha256/{diff_id[7:]}")
        add_bytes(tar, f"blobs/sha256/{config_hex}", config)
        add_bytes(tar, f"blobs/sha256/{manifest_hex}", manifest)
        add_bytes(tar, "index.json", index)
        add_bytes(tar, "manifest.json", docker_manifest)
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tar, "repositories", json.dumps({"bench/layer": {"1": config_hex}}).encode())
    return config_hex


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    os.sync()
    return time.perf_counter() - start


def winlayer_load(archive: Path, home: Path, image_id: str) -> float:
    from winlayer import Driver
    from winlayer.images import ImageStore, load

    def run() -> None:
        driver = Driver(home, backend="portable", base_images=home.parent / "base-images")
        with ImageStore(driver.home) as store:
            images = load(driver, store, archive)
        assert [i.id for i in images] == [image_id], images

    return timed(run)


def containerd_import(archive: Path, workdir: Path) -> float:
    daemon = Containerd(workdir)
    try:
        return timed(
            lambda: daemon.ctr(
                "images",
                "import",
                "--snapshotter",
                "overlayfs",
                "--platform",
                "windows/amd64",
                str(archive),
            )
        )
    finally:
        daemon.stop()


def check_containerd_unpacked(workdir: Path, entries: int) -> None:
    """The import must have unpacked the layer, not only stored the blob."""
    snapshots = workdir / "root" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    files = sum(len(names) + len(dirs) for _, dirs, names in os.walk(snapshots))
    if files < entries * 0.9:
        raise RuntimeError(f"containerd unpacked only {files} of ~{entries} entries")


def tar_extract(layer: Path, dest: Path) -> float:
    dest.mkdir(parents=True)
    return timed(
        lambda: subprocess.run(
            ["tar", "--warning=no-unknown-keyword", "-xf", str(layer), "-C", str(dest)], check=True
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--settle", type=float, default=20, help="seconds to pause between rounds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="winlayer-bench-load-", dir=args.workdir))
    try:
        layer = cached_layer(args.size_mb * 1_000_000, args.entries)
        archive = work / "image.tar"
        image_id = build_archive(layer, archive)
        size_mb = archive.stat().st_size / 1e6
        print(f"archive: {size_mb:.0f} MB, one layer of {args.entries} entries", flush=True)
        with open(archive, "rb") as f:  # warm the page cache for every contender alike
            while f.read(1 << 24):
                pass

        have_containerd = shutil.which("containerd") and shutil.which("ctr") and os.geteuid() == 0
        results: dict[str, list[float]] = {
            "winlayer load": [],
            "ctr images import": [],
            "tar -xf (bare layer)": [],
        }

        # Each contender writes into a folder of its own, deleted only between rounds and
        # followed by a sync and a pause: on a file system mounted with `discard`, freed
        # blocks are trimmed in the background and would slow down whoever writes next.
        # The order rotates each round, so that no contender always follows another.
        def run_winlayer(base: Path) -> None:
            results["winlayer load"].append(winlayer_load(archive, base / "home", image_id))

        def run_containerd(base: Path) -> None:
            ctr_dir = base / "containerd"
            results["ctr images import"].append(containerd_import(archive, ctr_dir))
            check_containerd_unpacked(ctr_dir, args.entries)
            subprocess.run(["umount", "-R", str(ctr_dir)], capture_output=True, check=False)

        def run_tar(base: Path) -> None:
            results["tar -xf (bare layer)"].append(tar_extract(layer, base / "tar"))

        steps = [run_winlayer, run_tar] + ([run_containerd] if have_containerd else [])
        for n in range(args.runs):
            base = work / f"round{n}"
            base.mkdir()
            for step in steps[n % len(steps) :] + steps[: n % len(steps)]:
                step(base)
            shutil.rmtree(base)
            os.sync()
            time.sleep(args.settle)

        print(f"{'':24} {'median s':>9}  runs")
        for name, times in results.items():
            if times:
                runs = " ".join(f"{t:.2f}" for t in times)
                print(f"{name:24} {statistics.median(times):9.2f}  {runs}")
        ours = statistics.median(results["winlayer load"])
        if results["ctr images import"]:
            theirs = statistics.median(results["ctr images import"])
            print(f"ratio winlayer / containerd: {ours / theirs:.2f} (target <= 0.5)")
            # Within a round both ran minutes apart at most: on a disk whose speed drifts
            # (throttling), these are the fairer comparison.
            rounds = zip(results["winlayer load"], results["ctr images import"], strict=True)
            print("  per round: " + " ".join(f"{w / c:.2f}" for w, c in rounds))
        else:
            print("containerd not measured (needs root, containerd and ctr)")
        tar = statistics.median(results["tar -xf (bare layer)"])
        print(f"ratio winlayer / tar -xf: {ours / tar:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
