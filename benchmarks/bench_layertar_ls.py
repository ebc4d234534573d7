"""Benchmark: list a layer tar with its decoded Windows metadata and its diffID.

Issue 3's target, on a 300 MB, 20,000-entry layer tar with MSWINDOWS records: listing every
entry with decoded metadata (``winlayer.list_layer_tar``: attributes, owner and group of
the security descriptor, times, link target, stream name touched for each entry) plus the
diffID takes at most 1.5x the time of ``openssl dgst -sha256`` of the same file (hashing is
the floor), is at least 5x faster than Python ``tarfile`` listing + ``hashlib``, and peaks
under 64 MiB whatever the layer's size.

Issue 18's target, through the CLI: ``winlayer --json tar ls FILE`` (start-up, the JSON
document and its spool included, stdout to /dev/null) at most 1.5x ``openssl dgst -sha256
FILE``: the two run alternately, ``--cli-runs`` times each, and their medians are compared
(from .pyc files, as an installed package runs: ``benchmarks/installed.py``).

Side by side in one run, with the harness of bench_tar_read.py (each contender in its own
process, warm page cache, best of ``--runs``, peak RSS from GNU time). The Python
contenders are timed around the work itself; their process wall time (interpreter
start-up and ``import winlayer`` included) is printed too, as `winlayer tar ls` pays it.

    python benchmarks/bench_layertar_ls.py                    # 300 MB, 20,000 entries
    python benchmarks/bench_layertar_ls.py --size-mb 30 --entries 2000 --runs 1
    python benchmarks/bench_layertar_ls.py --file some-layer.tar
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_tar_read import (  # noqa: E402
    TARFILE_LIST,
    Result,
    best_of,
    openssl_digest,
    run_child,
)
from benchmarks.installed import cli_env  # noqa: E402
from benchmarks.make_layer import cached_layer  # noqa: E402

# Prints "<diffID> <seconds of work>", like the contenders of bench_tar_read.py.
WINLAYER_LS = """
import sys, time
from winlayer import list_layer_tar
start = time.perf_counter()
with list_layer_tar(sys.argv[1], allow_parent_links=True) as layer:
    for e in layer:
        # what `winlayer tar ls` shows: attributes, owner, time, link target, stream
        e.mode, e.owner, e.group, e.last_write_time, e.link_target, e.stream
print(layer.diff_id, time.perf_counter() - start)
"""


def cli_medians(path: Path, runs: int) -> tuple[float, float, str]:
    """Medians of `openssl dgst -sha256` and `winlayer --json tar ls`, run alternately,
    and the CLI's diffID."""
    env = cli_env()
    openssl = ["openssl", "dgst", "-sha256", str(path)]
    cli = [sys.executable, "-m", "winlayer", "--json", "tar", "ls", str(path)]
    subprocess.run(cli, env=env, stdout=subprocess.DEVNULL, check=True)  # warms the page cache
    times: dict[str, list[float]] = {"openssl": [], "cli": []}
    for _ in range(runs):
        for name, argv in (("openssl", openssl), ("cli", cli)):
            start = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - start)
    out = subprocess.run(cli, env=env, capture_output=True, check=True).stdout
    digest = out[out.rindex(b'"diff_id": "') + 12 :].split(b'"')[0].decode()
    return statistics.median(times["openssl"]), statistics.median(times["cli"]), digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=9)
    parser.add_argument(
        "--file", type=Path, help="an existing layer tar instead of the generated one"
    )
    args = parser.parse_args()
    if not shutil.which("openssl"):
        raise SystemExit("openssl is needed: it is the floor of this benchmark")

    path = args.file or cached_layer(args.size_mb * 1_000_000, args.entries)
    size = path.stat().st_size
    with open(path, "rb") as f:  # warm the page cache for every contender alike
        while f.read(1 << 20):
            pass
    py = sys.executable
    ls_argv = [py, "-c", WINLAYER_LS, str(path)]
    openssl = best_of(
        "openssl dgst -sha256", ["openssl", "dgst", "-sha256", str(path)], args.runs, openssl_digest
    )
    ours = best_of("winlayer list_layer_tar", ls_argv, args.runs)
    tarfile = best_of("tarfile + hashlib", [py, "-c", TARFILE_LIST, str(path)], args.runs)
    # The same listing timed as a whole process: start-up and imports included.
    walls = [run_child(ls_argv)[0] for _ in range(args.runs)]
    process = Result("  as a process", min(walls), ours.peak_mib, ours.digest)

    if len({openssl.digest, ours.digest, tarfile.digest}) != 1:
        raise SystemExit(f"digests differ: {openssl.digest} {ours.digest} {tarfile.digest}")
    print(f"{path.name}: {size / 1e6:.0f} MB; best of {args.runs}; diffID {ours.digest}")
    print(f"{'':26} {'seconds':>8} {'vs openssl':>11} {'tarfile is':>12} {'peak RSS':>12}")
    for r in (openssl, ours, process, tarfile):
        print(
            f"{r.name:26} {r.seconds:8.3f} {r.seconds / openssl.seconds:10.2f}x "
            f"{tarfile.seconds / r.seconds:10.1f}x {r.peak_mib:8.1f} MiB"
        )
    print("targets: <= 1.5x openssl, tarfile >= 5x slower, peak RSS < 64 MiB")

    ssl_median, cli_median, cli_digest = cli_medians(path, args.cli_runs)
    if cli_digest != openssl.digest:
        raise SystemExit(f"digests differ: {openssl.digest} {cli_digest}")
    print(f"\nthrough the CLI, medians of {args.cli_runs} alternating runs")
    print(f"{'openssl dgst -sha256':26} {ssl_median:8.3f}")
    print(f"{'winlayer --json tar ls':26} {cli_median:8.3f} {cli_median / ssl_median:10.2f}x")
    print("target: winlayer --json tar ls <= 1.5x openssl dgst -sha256")


if __name__ == "__main__":
    main()
