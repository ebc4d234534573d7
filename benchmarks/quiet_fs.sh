#!/usr/bin/env bash
# A quiet file system for the benchmarks: ext4 on a loop device backed by RAM (/dev/shm),
# mounted without `discard`. On a shared or throttled virtual disk the same import can take
# 0.6 s or 11 s a minute apart; here only the file system's and the contenders' own work
# is measured. Needs root.
#   benchmarks/quiet_fs.sh up [DIR] [SIZE]   # default /mnt/winlayer-bench, 6G
#   benchmarks/quiet_fs.sh down [DIR]
#   python benchmarks/bench_import.py --workdir /mnt/winlayer-bench
set -euo pipefail
cmd="${1:-}"
dir="${2:-/mnt/winlayer-bench}"
image="/dev/shm/winlayer-bench-$(basename "$dir").img"
case "$cmd" in
up)
  size="${3:-6G}"
  truncate -s "$size" "$image"
  mkfs.ext4 -q -F -i 4096 "$image"  # an inode per 4 KiB: the 100,000-entry runs need 1M
  mkdir -p "$dir"
  mount -o loop "$image" "$dir"
  echo "$dir: ext4 on $image ($size of RAM at most)"
  ;;
down)
  umount "$dir"
  rm -f "$image"
  rmdir "$dir" 2>/dev/null || true
  ;;
*)
  echo "usage: $0 up|down [DIR] [SIZE]" >&2
  exit 2
  ;;
esac
