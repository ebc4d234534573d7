"""Generate a realistic Windows container layer tar for benchmarks.

The layer looks like what Docker/hcsshim export: PAX format, ``Files/`` and ``Hives/``
trees, directories before their children, every entry with ``MSWINDOWS.fileattr``,
``MSWINDOWS.rawsd`` (a self-relative security descriptor, base64) and
``LIBARCHIVE.creationtime`` plus fractional mtime/atime/ctime; files of varied sizes
(many small, a few large hives), alternate data streams (``file:stream`` entries right
after their file), hard links, a few symlinks, and whiteouts (bare ustar entries).
Content mixes random and compressible data, so it also serves gzip/zstd benchmarks.
The same (size, entries, seed) always gives the same bytes.

    python benchmarks/make_layer.py                       # 300 MB, 20,000 entries
    python benchmarks/make_layer.py --size-mb 30 --entries 2000 -o /tmp/small.tar

As a library::

    from benchmarks.make_layer import make_layer, cached_layer
    make_layer(path, size=300_000_000, entries=20_000, seed=0)
    path = cached_layer()          # benchmarks/data/layer-300MB-20000-s0.tar, made once
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

FILE_ATTRIBUTE_READONLY = 0x1
FILE_ATTRIBUTE_HIDDEN = 0x2
FILE_ATTRIBUTE_SYSTEM = 0x4
FILE_ATTRIBUTE_DIRECTORY = 0x10
FILE_ATTRIBUTE_ARCHIVE = 0x20
FILE_ATTRIBUTE_REPARSE_POINT = 0x400

_POOL = 1 << 23  # content is cut from 8 MiB pools of random and of compressible bytes
_MAX_FILE = 64 << 20

_WORDS = (  # noqa: SIM905 - a word list reads better as text
    "windows system32 drivers config kernel ntdll user32 gdi32 advapi32 winsxs manifest "
    "amd64 microsoft servicing packages catalog resources en-us fonts assembly native "
    "images program files common data registry policy update component store"
).split()


@dataclass
class LayerStats:
    path: Path
    size: int  # bytes of tar
    entries: int
    payload: int  # bytes of file and stream data


def _sid(authority: int, *subs: int) -> bytes:
    return (
        struct.pack("<BB", 1, len(subs))
        + authority.to_bytes(6, "big")
        + struct.pack(f"<{len(subs)}I", *subs)
    )


def _ace(ace_type: int, flags: int, mask: int, sid: bytes) -> bytes:
    return struct.pack("<BBHI", ace_type, flags, 8 + len(sid), mask) + sid


def _security_descriptor(rng: random.Random) -> str:
    """A self-relative SD: owner, group and a DACL of a few ACEs (variable length, as real
    Windows files have), base64 like MSWINDOWS.rawsd."""
    owner = rng.choice(
        [_sid(5, 32, 544), _sid(5, 18), _sid(5, 80, *(rng.getrandbits(32) for _ in range(5)))]
    )
    group = _sid(5, 32, 544) if rng.random() < 0.7 else _sid(5, 18)
    aces = [
        _ace(0, rng.choice([0, 3, 0x13]), rng.choice([0x1F01FF, 0x1200A9, 0x1301BF]), sid)
        for sid in rng.sample(
            [
                _sid(5, 18),
                _sid(5, 32, 544),
                _sid(5, 32, 545),
                _sid(1, 0),
                _sid(5, 11),
                _sid(15, 2, 1),
            ],
            rng.randint(2, 6),
        )
    ]
    acl_body = b"".join(aces)
    acl = struct.pack("<BBHHH", 2, 0, 8 + len(acl_body), len(aces), 0) + acl_body
    header_len = 20
    off_owner = header_len
    off_group = off_owner + len(owner)
    off_dacl = off_group + len(group)
    control = 0x8000 | 0x0004  # SE_SELF_RELATIVE | SE_DACL_PRESENT
    header = struct.pack("<BBHIIII", 1, 0, control, off_owner, off_group, 0, off_dacl)
    return base64.b64encode(header + owner + group + acl).decode()


def _pax_time(sec: int, rng: random.Random) -> str:
    """`sec` plus a random 100 ns fraction, trailing zeros trimmed (as backuptar writes)."""
    return f"{sec}.{rng.randrange(1, 10**7):07d}".rstrip("0")


def _times(rng: random.Random, info: tarfile.TarInfo) -> None:
    base = 1_600_000_000 + rng.randrange(100_000_000)
    info.mtime = base + rng.randrange(1_000_000) / 1e6  # PAX mtime with a fraction
    info.pax_headers["atime"] = _pax_time(base + rng.randrange(10**6), rng)
    info.pax_headers["ctime"] = _pax_time(base + rng.randrange(10**6), rng)
    info.pax_headers["LIBARCHIVE.creationtime"] = _pax_time(base - rng.randrange(10**7), rng)


def _name(rng: random.Random) -> str:
    parts = rng.sample(_WORDS, rng.randint(1, 3))
    return "-".join(parts) + (f"_{rng.randrange(10**6)}" if rng.random() < 0.6 else "")


def _sizes(rng: random.Random, count: int, total: int) -> list[int]:
    """Log-normal sizes (median ~4 KiB, long tail) scaled to `total`, capped per file."""
    raw = [rng.lognormvariate(8.3, 2.0) for _ in range(count)]
    scale = total / max(sum(raw), 1.0)
    sizes = [min(int(r * scale), _MAX_FILE) for r in raw]
    # Whatever the cap cut off goes to the largest files below it (hives, big DLLs).
    short = total - sum(sizes)
    order = sorted(range(count), key=lambda i: -sizes[i])
    i = 0
    while short > 0 and count:
        k = order[i % count]
        add = min(short, _MAX_FILE - sizes[k])
        sizes[k] += add
        short -= add
        i += 1
        if i > 4 * count:
            break
    return sizes


def make_layer(
    path: Path | str, *, size: int = 300_000_000, entries: int = 20_000, seed: int = 0
) -> LayerStats:
    """Write a layer tar of about `size` bytes with exactly `entries` entries to `path`."""
    rng = random.Random(seed)
    random_pool = rng.randbytes(_POOL)
    text_pool = " ".join(rng.choice(_WORDS) for _ in range(_POOL // 6)).encode()[:_POOL]
    entries = max(entries, 10)

    n_dirs = max(entries // 10, 3)
    n_ads = entries // 50
    n_links = entries // 50
    n_symlinks = entries // 200
    n_whiteouts = entries // 100
    n_hives = min(8, entries // 100)
    n_files = entries - n_dirs - n_ads - n_links - n_symlinks - n_whiteouts - n_hives
    # Headers take ~1.5 KiB per entry; the rest of the budget is data.
    data_budget = max(size - entries * 1536 - 10240, 0)
    hive_budget = data_budget // 10 if n_hives else 0
    file_sizes = _sizes(rng, n_files + n_ads, data_budget - hive_budget)

    # Directory tree: Files/, Hives/ and nested folders under Files/.
    dirs = ["Files", "Hives"]
    while len(dirs) < n_dirs:
        parent = rng.choice(dirs[:1] + dirs[2:]) if len(dirs) > 2 else "Files"
        candidate = f"{parent}/{_name(rng)}"
        if candidate not in dirs and candidate.count("/") < 12:
            dirs.append(candidate)
    dirs.sort()

    # Names in one layer differ case-insensitively (NTFS): a drawn name that is taken
    # gets a number.
    taken = {d.lower() for d in dirs}

    def unique(path: str) -> str:
        stem, ext = os.path.splitext(path)
        candidate, n = path, 1
        while candidate.lower() in taken:
            candidate, n = f"{stem}-{n}{ext}", n + 1
        taken.add(candidate.lower())
        return candidate

    files_by_dir: dict[str, list[str]] = {d: [] for d in dirs}
    for _ in range(n_files):
        d = rng.choice(dirs[:1] + dirs[2:])
        ext = rng.choice([".dll", ".exe", ".sys", ".mui", ".xml", ".manifest", ".cat", ".dat"])
        files_by_dir[d].append(unique(f"{d}/{_name(rng)}{ext}"))
    hives = [
        f"Hives/{h}_Delta"
        for h in (
            "DefaultUser",
            "Sam",
            "Security",
            "Software",
            "System",
            "Components",
            "Bcd",
            "Drivers",
        )
    ][:n_hives]
    files_by_dir["Hives"] = hives

    ads_owner = set(
        rng.sample([f for fs in files_by_dir.values() for f in fs], min(n_ads, n_files))
    )
    payload = 0
    count = 0
    size_iter = iter(file_sizes)
    all_files: list[str] = []

    def content(n: int) -> bytes:
        pool = random_pool if rng.random() < 0.5 else text_pool
        out = bytearray()
        while len(out) < n:
            start = rng.randrange(_POOL)
            out += pool[start : start + n - len(out)]
        return bytes(out)

    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            nonlocal count, payload
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            count += 1
            payload += len(data or b"")

        def windows_entry(name: str, type_: bytes, attrs: int) -> tarfile.TarInfo:
            info = tarfile.TarInfo(name)
            info.type = type_
            info.mode = {tarfile.DIRTYPE: 0o40000, tarfile.SYMTYPE: 0o120000}.get(type_, 0o100000)
            info.pax_headers = {
                "MSWINDOWS.fileattr": str(attrs),
                "MSWINDOWS.rawsd": _security_descriptor(rng),
            }
            _times(rng, info)
            return info

        whiteouts_left = n_whiteouts
        links_left = n_links
        symlinks_left = n_symlinks
        for d in dirs:
            add(windows_entry(d, tarfile.DIRTYPE, FILE_ATTRIBUTE_DIRECTORY))
            if whiteouts_left and d.startswith("Files/") and rng.random() < 0.3:
                gone = unique(f"{d}/{_name(rng)}.dll").rsplit("/", 1)[1]
                wh = tarfile.TarInfo(f"{d}/.wh.{gone}")  # bare ustar, as exported
                wh.mode = 0
                wh.mtime = 0
                add(wh, b"")
                whiteouts_left -= 1
            for name in sorted(files_by_dir[d]):
                if name.startswith("Hives/"):
                    n = hive_budget // max(n_hives, 1)
                else:
                    n = next(size_iter, 0)
                attrs = FILE_ATTRIBUTE_ARCHIVE | (
                    FILE_ATTRIBUTE_READONLY if rng.random() < 0.1 else 0
                )
                info = windows_entry(name, tarfile.REGTYPE, attrs)
                info.size = n
                add(info, content(n))
                all_files.append(name)
                if name in ads_owner:
                    stream = tarfile.TarInfo(
                        f"{name}:{rng.choice(['Zone.Identifier', 'SmartScreen', 'meta'])}"
                    )
                    data = content(next(size_iter, 0))
                    stream.size = len(data)
                    stream.mtime = info.mtime
                    add(stream, data)
                if (
                    links_left
                    and len(all_files) > 1
                    and rng.random() < n_links / max(n_files, 1) * 2
                ):
                    link = windows_entry(
                        unique(f"{d}/{_name(rng)}.lnk.dll"), tarfile.LNKTYPE, attrs
                    )
                    link.linkname = rng.choice(all_files[:-1])
                    add(link)
                    links_left -= 1
                if symlinks_left and rng.random() < n_symlinks / max(n_files, 1) * 2:
                    sym = windows_entry(
                        unique(f"{d}/{_name(rng)}.symlink"),
                        tarfile.SYMTYPE,
                        FILE_ATTRIBUTE_REPARSE_POINT,
                    )
                    sym.linkname = "C:\\Windows\\System32\\" + _name(rng) + ".dll"
                    add(sym)
                    symlinks_left -= 1
        # Top up to exactly `entries` with small files (random draws above may fall short).
        filler = 0
        while count < entries:
            name = unique(f"Files/zz-filler-{filler:06d}.txt")
            filler += 1
            info = windows_entry(name, tarfile.REGTYPE, FILE_ATTRIBUTE_ARCHIVE)
            data = content(rng.randrange(0, 4096))
            info.size = len(data)
            add(info, data)
    written = Path(path).stat().st_size
    return LayerStats(Path(path), written, count, payload)


def cached_layer(size: int = 300_000_000, entries: int = 20_000, seed: int = 0) -> Path:
    """The layer for these parameters in benchmarks/data/, generated on first use."""
    # v2: names unique case-insensitively (v1 layers held duplicate names).
    path = DATA_DIR / f"layer-{size // 1_000_000}MB-{entries}-s{seed}-v2.tar"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        make_layer(tmp, size=size, entries=entries, seed=seed)
        tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mb", type=int, default=300, help="approximate tar size in MB (10^6)"
    )
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, help="default: benchmarks/data/layer-...tar")
    args = parser.parse_args()
    size = args.size_mb * 1_000_000
    if args.output:
        stats = make_layer(args.output, size=size, entries=args.entries, seed=args.seed)
    else:
        path = cached_layer(size, args.entries, args.seed)
        stats = LayerStats(path, path.stat().st_size, args.entries, 0)
    print(f"{stats.path}: {stats.size / 1e6:.1f} MB, {stats.entries} entries")


if __name__ == "__main__":
    main()
