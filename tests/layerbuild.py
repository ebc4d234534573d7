"""Build Windows layer tars for tests, with Python's tarfile (an independent writer), and
read what they and mounted views hold."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

# Self-relative security descriptor O:BAG:BA (REFERENCE.md section 4).
SD_BA = "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAgAgAAAQIAAAAAAAUgAAAAIAIAAA=="
MTIME = 1_600_000_000


@dataclass
class E:
    """One entry: kind is dir, file, link (hard link), whiteout, ads or symlink."""

    path: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    pax: dict[str, str] = field(default_factory=dict)


def d(path: str) -> E:
    return E(path, "dir")


def f(path: str, data: bytes = b"") -> E:
    return E(path, "file", data)


def link(path: str, target: str) -> E:
    return E(path, "link", target=target)


def wh(path: str) -> E:
    """A whiteout deleting `path` (``dir/.wh.name``)."""
    head, _, name = path.rpartition("/")
    return E(f"{head}/.wh.{name}", "whiteout")


def layer_tar(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mtime = MTIME
            pax = {}
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o40000
                pax = {"MSWINDOWS.fileattr": "16", "MSWINDOWS.rawsd": SD_BA}
            elif entry.kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = entry.target
                info.mode = 0o100000
            elif entry.kind == "whiteout":
                info.mode = 0
                info.mtime = 0
            else:
                info.mode = 0o100000
                info.size = len(entry.data)
                if entry.kind == "file":
                    pax = {"MSWINDOWS.fileattr": "32", "MSWINDOWS.rawsd": SD_BA}
            pax.update(entry.pax)
            info.pax_headers = pax
            tar.addfile(info, io.BytesIO(entry.data) if info.isreg() else None)
    return buf.getvalue()


def base_layer(*extra: E) -> bytes:
    """A small base layer: Files/ and Hives/ with a few files."""
    return layer_tar(
        [
            d("Files"),
            d("Files/Windows"),
            f("Files/Windows/win.ini", b"[fonts]\r\n"),
            d("Files/Windows/System32"),
            f("Files/Windows/System32/kernel32.dll", b"MZ" + bytes(1000)),
            d("Hives"),
            f("Hives/System_Delta", b"regf" + bytes(60)),
            *extra,
        ]
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a digest of its content (lock files excluded)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.endswith(os.path.join(".winlayer", "locks")):
            continue
        for name in dirnames:
            result[os.path.join(rel, name)] = "dir"
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                result[os.path.join(rel, name)] = "link:" + os.readlink(path)
            else:
                result[os.path.join(rel, name)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def tar_tree(tar: bytes) -> dict[str, bytes | None]:
    """Files/ of a layer tar: path -> the file's bytes (hard links resolved), None for a
    folder; the tree a view of it shows (`folder_tree`)."""
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            if not m.name.startswith("Files/") or ":" in m.name:
                continue
            rel = m.name[len("Files/") :]
            if m.islnk():
                out[rel] = out[m.linkname[len("Files/") :]]
            else:
                data = t.extractfile(m) if m.isreg() else None
                out[rel] = data.read() if data else None
    return out


def folder_tree(root: str | Path) -> dict[str, bytes | None]:
    """Relative path -> content (None for folders) of a folder, such as a mounted view."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames:
            out[os.path.normpath(os.path.join(rel, name))] = None
        for name in filenames:
            out[os.path.normpath(os.path.join(rel, name))] = Path(dirpath, name).read_bytes()
    return out
