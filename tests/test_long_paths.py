"""Long and deep paths: refused past NTFS's limit, cheaply; below it they work end to end
although Linux refuses a path of PATH_MAX (4,096) bytes or more in one system call."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from winlayer import Driver, InvalidLayer
from winlayer.layertar import list_layer_tar

from .conftest import REPO, rss_budget_kib
from .layerbuild import base_layer, d, f, layer_tar, link, snapshot
from .test_portable_backend import _overlay_possible
from .test_tar_reader import END, pax_header, record, ustar_block

NTFS_MAX = 32_767  # UTF-16 units


def long_entry(name: str, offset_pad: int = 1) -> bytes:
    """`offset_pad` folder entries, then a file named `name` by a PAX path."""
    head = ustar_block(b"Files/", type=b"5") * offset_pad
    return head + pax_header(record("path", name)) + ustar_block(b"Files/x") + END


def remove_deep(path: Path) -> None:
    """Python's rmtree recurses once per folder (too deep here) and pytest's clean-up of
    old temporary folders trips over what it cannot remove: rm(1) can."""
    subprocess.run(["rm", "-rf", str(path)], check=False)


# --- refused up front ------------------------------------------------------------------

_REFUSE = r"""
import io, json, resource, sys
sys.path.insert(0, sys.argv[1])
from tests.test_long_paths import long_entry
from winlayer import Driver, InvalidLayer
kind = sys.argv[3]
if kind == "chars":
    name = "Files/" + "/".join(["n" * 199] * 200)
elif kind == "components":
    name = "Files/" + "a/" * 100_000 + "f"
else:  # the most folders a path within the limit can imply
    name = "Files/" + "a/" * 16_380 + "f"
raw = long_entry(name)
driver = Driver(sys.argv[2], backend="portable", base_images=sys.argv[2] + "-base")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    driver.apply_diff("long", "base", io.BytesIO(raw))
    out = {"error": None}
except InvalidLayer as e:
    out = {"error": str(e)[:300], "entry_is_name": e.entry == name, "offset": e.offset}
out["rss_growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
out["length"] = len(name)
if out["error"] is None:
    # Removed with few folders open, however deep (a usual limit is 1,024 open files).
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    driver.remove("long")
    out["removed"] = not (driver.home / "long").exists()
print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["chars", "components"])
def test_over_long_path_is_refused_quickly_with_bounded_memory(tmp_path: Path, kind: str) -> None:
    home = tmp_path / "home"
    Driver(home, backend="portable", base_images=tmp_path / "home-base").apply_diff(
        "base", None, io.BytesIO(base_layer())
    )
    before = snapshot(home)
    result = subprocess.run(
        [sys.executable, "-c", _REFUSE, str(REPO), str(home), kind],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["length"] > 40_000
    assert out["error"] is not None, out
    assert "32,767" in out["error"], out
    assert out["entry_is_name"]
    assert out["offset"] == 512  # the PAX header, after one folder entry
    assert out["rss_growth_kib"] < rss_budget_kib(200), out
    assert snapshot(home) == before


def test_the_limit_counts_utf16_units_of_the_layer_path() -> None:
    # U+1F600 is two UTF-16 units (four UTF-8 bytes); 'é' one unit (two bytes).
    def name(units: int) -> str:
        folders = ["\U0001f600" * 100] * 162  # 200 units each
        rest = units - len("Files") - 201 * len(folders) - 1
        return "/".join(["Files", *folders, "\u00e9" * rest])

    assert len(name(NTFS_MAX).encode("utf-16-le")) // 2 == NTFS_MAX
    listed = [e.path for e in list_layer_tar(io.BytesIO(long_entry(name(NTFS_MAX))))]
    assert listed[-1] == name(NTFS_MAX)
    with pytest.raises(InvalidLayer, match="32,767") as info:
        list(list_layer_tar(io.BytesIO(long_entry(name(NTFS_MAX + 1)))))
    assert info.value.entry == name(NTFS_MAX + 1)
    assert info.value.offset == 512


def test_a_long_hard_link_target_is_refused(tmp_path: Path) -> None:
    target = "Files/" + "t" * 200 + "/" + "/".join(["x" * 250] * 140)
    raw = (
        ustar_block(b"Files/", type=b"5")
        + ustar_block(b"Files/a")
        + pax_header(record("linkpath", target))
        + ustar_block(b"Files/h", type=b"1", linkname=b"Files/a")
        + END
    )
    with pytest.raises(InvalidLayer, match="32,767") as info:
        list(list_layer_tar(io.BytesIO(raw), allow_parent_links=True))
    assert info.value.entry == "Files/h"
    assert info.value.offset == 1024


def test_deepest_path_within_the_limit_imports_with_bounded_memory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Driver(home, backend="portable", base_images=tmp_path / "home-base").apply_diff(
        "base", None, io.BytesIO(base_layer())
    )
    result = subprocess.run(
        [sys.executable, "-c", _REFUSE, str(REPO), str(home), "deepest"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    remove_deep(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["length"] == NTFS_MAX
    assert out["error"] is None, out
    assert out["removed"]
    # 16,380 folders made by one entry: their names are kept, not their paths.
    assert out["rss_growth_kib"] < rss_budget_kib(100), out


# --- below the limit: everything works ------------------------------------------------

DEEP = "Files/" + "/".join(["d"] * 3000)  # 3,000 nested folders, 6,005 characters
DEEP_TAR = layer_tar(
    [
        d("Files"),
        d(DEEP),
        f(DEEP + "/f.txt", b"deep data"),
        link(DEEP + "/hard.txt", DEEP + "/f.txt"),
        f("Files/top.txt", b"top"),
    ]
)


def open_deep(root: Path, rel: str, flags: int = os.O_RDONLY) -> int:
    """Opens root/rel one folder at a time (rel is longer than PATH_MAX)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    *folders, last = rel.split("/")
    for name in folders:
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    try:
        return os.open(last, flags, 0o644, dir_fd=fd)
    finally:
        os.close(fd)


def read_deep(root: Path, rel: str) -> bytes:
    fd = open_deep(root, rel)
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    driver = Driver(tmp_path / "home", backend="portable", base_images=tmp_path / "base")
    yield driver
    try:  # the store removes its own deep trees (sandboxes first)
        for layer in sorted(driver.layers(), key=lambda info: -len(driver.parents(info.id))):
            driver.remove(layer.id)
        left = sorted(p.name for p in driver.home.iterdir())
        assert left == [".winlayer", ".winlayer-store.lock"]
    finally:
        remove_deep(tmp_path)


def test_deep_path_round_trips(driver: Driver) -> None:
    assert len(DEEP) > 6000
    driver.apply_diff("deep", None, io.BytesIO(DEEP_TAR), digest=None)
    with driver.diff("deep", original=True) as stream:
        assert stream.read() == DEEP_TAR
    with driver.diff("deep") as stream:
        canonical = stream.read()
    assert read_deep(driver.home / "deep", DEEP + "/f.txt") == b"deep data"

    driver.apply_diff("again", None, io.BytesIO(canonical))
    with driver.diff("again") as stream:
        assert stream.read() == canonical
    with driver.diff("again", original=True) as stream:
        assert stream.read() == canonical

    listed = [(e.path, e.type) for e in list_layer_tar(io.BytesIO(canonical))]
    assert (DEEP + "/f.txt", "file") in listed
    assert (DEEP + "/hard.txt", "hard_link") in listed
    changes = {(c.kind, c.path) for c in driver.changes("deep")}
    assert ("A", DEEP + "/f.txt") in changes
    assert ("A", DEEP + "/hard.txt") in changes


def check_sandbox(driver: Driver) -> None:
    """A sandbox on the deep layer mounts, shows the deep file, and exports a change."""
    driver.apply_diff("deep", None, io.BytesIO(DEEP_TAR))
    driver.create("box", "deep", read_write=True)
    view = driver.get("box")
    try:
        assert read_deep(view, DEEP[len("Files/") :] + "/f.txt") == b"deep data"
        fd = open_deep(view, DEEP[len("Files/") :] + "/new.txt", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"new")
        os.close(fd)
    finally:
        driver.put("box")
    with driver.diff("box") as stream:
        changed = [(e.path, e.type) for e in list_layer_tar(io.BytesIO(stream.read()))]
    assert (DEEP + "/new.txt", "file") in changed


def test_sandbox_on_a_deep_layer_copy_view(driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINLAYER_PORTABLE_MOUNT", "copy")
    check_sandbox(driver)


_OVERLAY = r"""
import sys
sys.path.insert(0, sys.argv[1])
from tests.test_long_paths import check_sandbox
from winlayer import Driver
driver = Driver(sys.argv[2], backend="portable", base_images=sys.argv[2] + "-base")
check_sandbox(driver)
for layer in ("box", "deep"):
    driver.remove(layer)
print("ok")
"""


def test_sandbox_on_a_deep_layer_overlay_view(tmp_path: Path) -> None:
    if not _overlay_possible():
        pytest.skip("no user namespaces for an overlayfs mount here")
    env = {**os.environ, "WINLAYER_PORTABLE_MOUNT": "overlay"}
    result = subprocess.run(
        ["unshare", "-Urm", sys.executable, "-c", _OVERLAY, str(REPO), str(tmp_path / "home")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    remove_deep(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok"]


def test_a_path_at_the_limit_imports(driver: Driver) -> None:
    # 131 folders of 250 characters: 32,767 in all, eight times PATH_MAX.
    name = "Files/" + "/".join(["p" * 250] * 130)
    name += "/" + "q" * (NTFS_MAX - len(name) - 1)
    assert len(name) == NTFS_MAX
    driver.apply_diff("limit", None, io.BytesIO(layer_tar([d("Files"), f(name, b"at the limit")])))
    assert read_deep(driver.home / "limit", name) == b"at the limit"
    with driver.diff("limit") as stream:
        assert [e.path for e in list_layer_tar(io.BytesIO(stream.read()))][-1] == name
