"""Benchmark: ``winlayer pull`` from a local registry, side by side with the ways to get
the same image into a store today.

A 3-layer Windows image (benchmarks/make_layer.py layers, 1 GB of layer data in all by
default, each blob gzip) is pushed to the CNCF distribution registry (Debian's
``docker-registry``) started here on 127.0.0.1 with its storage in the work folder. Each
contender starts from an empty store, runs as its own process (peak RSS by GNU time) and
ends with its data synced:

- ``winlayer pull`` (the CLI): download, verify, decompress and import, overlapped;
- ``skopeo copy docker://... oci:DIR`` followed by ``winlayer load DIR``: the two-step way;
- ``ctr images pull --plain-http`` (containerd started here on its own root, unpacking
  into its overlayfs snapshotter).

Rounds are interleaved (the order rotates) with a pause between them; medians are
reported. Targets: winlayer pull <= 0.6x skopeo-then-load, <= 1.0x ctr pull, peak RSS
< 200 MiB.

    python benchmarks/bench_pull.py                                  # 1 GB, 3 layers
    python benchmarks/bench_pull.py --size-mb 60 --entries 3000 --runs 1   # a quick check
    python benchmarks/bench_pull.py --workdir /mnt/winlayer-bench    # benchmarks/quiet_fs.sh up
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.daemons import Containerd, Registry, tool_env  # noqa: E402

from benchmarks.installed import cli_env  # noqa: E402
from benchmarks.make_layer import cached_layer  # noqa: E402
from winlayer._registry import Manifest, RegistryClient  # noqa: E402

GNU_TIME = "/usr/bin/time"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def gzip_layer(layer: Path) -> tuple[Path, str]:
    """The layer gzipped (level 6, as docker push does), cached beside it; its diffID."""
    out = layer.with_suffix(".tar.gz")
    if not out.exists():
        tmp = out.with_suffix(".partial")
        with (
            open(layer, "rb") as src,
            open(tmp, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        tmp.rename(out)
    return out, "sha256:" + file_digest(layer)


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            yield chunk


def push_image(host: str, layers: list[Path]) -> str:
    """Push the image (gzip blobs, an OCI manifest) with the registry client; its id."""
    blobs, diff_ids = zip(*(gzip_layer(layer) for layer in layers), strict=True)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "windows",
            "os.version": "10.0.20348.2227",
            "created": "2024-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
            "config": {"Cmd": ["cmd.exe"]},
        }
    ).encode()
    descriptors = []
    with RegistryClient(host) as client:
        for blob in blobs:
            digest = "sha256:" + file_digest(blob)
            client.upload_blob("bench/app", digest, chunks(blob), monolithic=False)
            size = blob.stat().st_size
            descriptors.append({"mediaType": MT_LAYER_GZIP, "digest": digest, "size": size})
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        client.upload_blob("bench/app", config_digest, iter([config]), monolithic=True)
        doc = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": descriptors,
        }
        data = json.dumps(doc).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client.put_manifest("bench/app", "1", Manifest(MT_MANIFEST, digest, data))
    return config_digest


def measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of a command, then a sync, as a child of GNU time."""
    with tempfile.NamedTemporaryFile(prefix="winlayer-bench-time-", delete=False) as f:
        timing = Path(f.name)
    prefix = [GNU_TIME, "-f", "%M", "-o", str(timing)] if os.path.exists(GNU_TIME) else []
    start = time.perf_counter()
    subprocess.run([*prefix, *argv], check=True, env=env, stdout=subprocess.DEVNULL)
    os.sync()
    seconds = time.perf_counter() - start
    rss = float(timing.read_text().split()[-1]) / 1024 if prefix else float("nan")
    timing.unlink(missing_ok=True)
    return seconds, rss


def winlayer(*args: str) -> list[str]:
    return [sys.executable, "-m", "winlayer", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="layer data in all")
    parser.add_argument("--entries", type=int, default=20_000, help="entries in all")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--settle", type=float, default=10, help="seconds between rounds")
    args = parser.parse_args()

    layers = [
        cached_layer(args.size_mb * 1_000_000 // 3, args.entries // 3, seed=n) for n in range(3)
    ]
    work = Path(tempfile.mkdtemp(prefix="winlayer-bench-pull-", dir=args.workdir))
    registry = Registry(work / "registry")
    try:
        image_id = push_image(registry.host, layers)
        ref = f"{registry.host}/bench/app:1"
        print(f"image {image_id[:19]}: 3 gzip layers, {args.size_mb} MB of layer data", flush=True)
        env = cli_env(tool_env(), WINLAYER_BACKEND="portable")
        have_skopeo = shutil.which("skopeo") is not None
        have_ctr = shutil.which("containerd") and shutil.which("ctr") and os.geteuid() == 0
        results: dict[str, list[tuple[float, float]]] = {
            "winlayer pull": [],
            "skopeo copy + winlayer load": [],
            "ctr images pull": [],
        }

        def run_pull(base: Path) -> None:
            home = base / "pull-home"
            results["winlayer pull"].append(
                measured(winlayer("--home", str(home), "pull", ref), env)
            )

        def run_skopeo(base: Path) -> None:
            layout, home = base / "oci", base / "load-home"
            copy = [
                "skopeo",
                "--insecure-policy",
                "--override-os",
                "windows",
                "copy",
                "--src-tls-verify=false",
                f"docker://{ref}",
                f"oci:{layout}",
            ]
            first = measured(copy, env)
            second = measured(winlayer("--home", str(home), "load", str(layout)), env)
            results["skopeo copy + winlayer load"].append(
                (first[0] + second[0], max(first[1], second[1]))
            )

        def run_ctr(base: Path) -> None:
            daemon = Containerd(base / "containerd")
            try:
                pull = [
                    "ctr",
                    "--address",
                    str(daemon.socket),
                    "--namespace",
                    "bench",
                    "images",
                    "pull",
                    "--plain-http",
                    "--platform",
                    "windows/amd64",
                    "--snapshotter",
                    "overlayfs",
                    ref,
                ]
                results["ctr images pull"].append(measured(pull, tool_env()))
            finally:
                daemon.stop()
                umount = ["umount", "-R", str(base / "containerd")]
                subprocess.run(umount, capture_output=True, check=False)

        steps = [run_pull] + ([run_skopeo] if have_skopeo else []) + ([run_ctr] if have_ctr else [])
        for n in range(args.runs):
            base = work / f"round{n}"
            base.mkdir()
            for step in steps[n % len(steps) :] + steps[: n % len(steps)]:
                step(base)
            shutil.rmtree(base, ignore_errors=True)
            os.sync()
            time.sleep(args.settle)

        print(f"{'':30} {'median s':>9} {'peak MiB':>9}  runs")
        for name, runs in results.items():
            if runs:
                times = [t for t, _ in runs]
                peak = max(r for _, r in runs)
                listed = " ".join(f"{t:.2f}" for t in times)
                print(f"{name:30} {statistics.median(times):9.2f} {peak:9.0f}  {listed}")
        ours = statistics.median(t for t, _ in results["winlayer pull"])
        for name, target in [("skopeo copy + winlayer load", 0.6), ("ctr images pull", 1.0)]:
            if results[name]:
                theirs = statistics.median(t for t, _ in results[name])
                print(f"ratio winlayer pull / {name}: {ours / theirs:.2f} (target <= {target})")
            else:
                print(f"{name}: not measured (needs the tool, and root for containerd)")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
