"""Entries whose names (or link targets) other tar readers could resolve differently.

A header can carry a name several ways (ustar name, prefix/name, GNU long name, PAX path)
and readers differ in which wins. winlayer gives the original bytes back on export, so a
name it does not use must not be one that escapes the extraction folder where the used
one does not. Each hostile tar here is built by hand; Python's tarfile is shown to read
the unsafe name from the same bytes (the whole archive, or the ustar header alone as a
reader that ignores the extension sees it), and winlayer refuses the entry, naming it and
the offset of its first header block, leaving the store unchanged."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from winlayer import Driver, InvalidLayer, _hcs

from .layerbuild import base_layer, snapshot
from .test_tar_reader import END, pad, pax_header, record, ustar_block

FILES = ustar_block(b"Files/", type=b"5")  # the top-level folder, 512 bytes


def gnu_long(type: bytes, value: bytes) -> bytes:
    """A GNU long name ('L') or long link name ('K') header with its data."""
    data = value + b"\0"
    return ustar_block(b"././@LongLink", type=type, size=len(data), magic=b"ustar  \0") + pad(data)


def tarfile_names(raw: bytes) -> list[tuple[str, str]]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return [(m.name, m.linkname) for m in tf.getmembers()]


def ustar_alone(raw: bytes, at: int) -> tarfile.TarInfo:
    """The header block at `at` as a reader that ignores extension headers reads it."""
    return tarfile.TarInfo.frombuf(raw[at : at + 512], "utf-8", "surrogateescape")


@pytest.fixture
def driver(tmp_path: Path) -> Driver:
    d = Driver(tmp_path / "home", backend="portable", base_images=tmp_path / "base")
    d.apply_diff("base", None, io.BytesIO(base_layer()))
    return d


def assert_refused(driver: Driver, raw: bytes, entry: str, offset: int, alternative: str) -> None:
    before = snapshot(driver.home)
    with pytest.raises(InvalidLayer, match="ambiguous entry") as info:
        driver.apply_diff("evil", "base", io.BytesIO(raw))
    assert info.value.entry == entry
    assert info.value.offset == offset
    assert f"'{alternative}'" in str(info.value)
    assert snapshot(driver.home) == before
    assert not driver.exists("evil")
    # The generic reader refuses it too (the listing, and any other user of the codec).
    with pytest.raises(InvalidLayer, match="ambiguous entry"):
        _hcs.read_tar(io.BytesIO(raw))


# --- names ---------------------------------------------------------------------------


def test_gnu_long_name_unsafe_pax_path_safe(driver: Driver) -> None:
    raw = (
        FILES
        + gnu_long(b"L", b"Files/../../x")
        + pax_header(record("path", "Files/x"))
        + ustar_block(b"Files/x")
        + END
    )
    # Python (like Go) takes the GNU name here.
    assert tarfile_names(raw)[1] == ("Files/../../x", "")
    assert_refused(driver, raw, "Files/x", 512, "Files/../../x")


def test_pax_path_before_unsafe_gnu_long_name(driver: Driver) -> None:
    raw = (
        FILES
        + pax_header(record("path", "Files/x"))
        + gnu_long(b"L", b"/etc/cron.d/x")
        + ustar_block(b"Files/x")
        + END
    )
    # Python takes the PAX path in this order; Go takes the GNU name whatever the order.
    assert tarfile_names(raw)[1] == ("Files/x", "")
    assert_refused(driver, raw, "Files/x", 512, "/etc/cron.d/x")


@pytest.mark.parametrize(
    "name",
    [
        "../../x",
        "/etc/x",
        "C:/Windows/x",
        "c:x",
        "\\\\server\\share\\x",
        "\\Windows\\x",
        "Files\\..\\..\\x",
        "Files/sub/../../../x",
        "Files/..",
    ],
)
def test_unsafe_ustar_name_with_safe_pax_path(driver: Driver, name: str) -> None:
    header = ustar_block(name.encode())
    raw = FILES + pax_header(record("path", "Files/x")) + header + END
    assert tarfile_names(raw)[1] == ("Files/x", "")
    at = len(raw) - len(END) - 512
    assert ustar_alone(raw, at).name == name
    assert_refused(driver, raw, "Files/x", 512, name)


def test_unsafe_prefix_and_name_with_safe_pax_path(driver: Driver) -> None:
    header = ustar_block(b"x", prefix=b"Files/../..")
    raw = FILES + pax_header(record("path", "Files/x")) + header + END
    assert ustar_alone(raw, len(raw) - len(END) - 512).name == "Files/../../x"
    assert_refused(driver, raw, "Files/x", 512, "Files/../../x")


def test_unsafe_ustar_name_without_its_prefix(driver: Driver) -> None:
    # prefix/name is "Files/etc/x"; a v7 reader ignores the prefix and sees "/etc/x".
    header = ustar_block(b"/etc/x", prefix=b"Files")
    raw = FILES + pax_header(record("path", "Files/x")) + header + END
    block = raw[len(raw) - len(END) - 512 :][:512]
    assert block[:100].rstrip(b"\0") == b"/etc/x"
    assert_refused(driver, raw, "Files/x", 512, "/etc/x")


def test_unsafe_gnu_name_with_safe_ustar_name(driver: Driver) -> None:
    # No PAX: the GNU name is used, and it is the unsafe one: the path rules refuse it.
    raw = FILES + gnu_long(b"L", b"Files/../../x") + ustar_block(b"Files/x") + END
    with pytest.raises(InvalidLayer, match=r"'\.\.' path component") as info:
        driver.apply_diff("evil", "base", io.BytesIO(raw))
    assert info.value.offset == 512


def test_an_earlier_unsafe_pax_path_record(driver: Driver) -> None:
    records = record("path", "../../x") + record("path", "Files/x")
    raw = FILES + pax_header(records) + ustar_block(b"Files/x") + END
    assert_refused(driver, raw, "Files/x", 512, "../../x")


# --- link targets ---------------------------------------------------------------------


def test_hard_link_unsafe_ustar_linkname_with_safe_pax_linkpath(driver: Driver) -> None:
    link = ustar_block(b"Files/h", type=b"1", linkname=b"../../etc/passwd")
    raw = FILES + ustar_block(b"Files/a") + pax_header(record("linkpath", "Files/a")) + link + END
    assert tarfile_names(raw)[2] == ("Files/h", "Files/a")
    assert ustar_alone(raw, len(raw) - len(END) - 512).linkname == "../../etc/passwd"
    assert_refused(driver, raw, "Files/h", 1024, "../../etc/passwd")


def test_hard_link_unsafe_gnu_long_link_with_safe_pax_linkpath(driver: Driver) -> None:
    raw = (
        FILES
        + ustar_block(b"Files/a")
        + gnu_long(b"K", b"/etc/shadow")
        + pax_header(record("linkpath", "Files/a"))
        + ustar_block(b"Files/h", type=b"1", linkname=b"Files/a")
        + END
    )
    assert tarfile_names(raw)[2] == ("Files/h", "/etc/shadow")
    assert_refused(driver, raw, "Files/h", 1024, "/etc/shadow")


@pytest.mark.parametrize(
    ("alternative", "used"),
    [
        ("/etc/passwd", "target"),  # absolute where the used target is relative
        ("C:\\Windows", "target"),
        ("target", "C:\\Windows"),  # relative where the used target is absolute
        ("../../../etc", "sub/target"),  # leads outside the archive's root
    ],
)
def test_symlink_gnu_long_link_disagrees_with_pax_linkpath(
    driver: Driver, alternative: str, used: str
) -> None:
    raw = (
        FILES
        + gnu_long(b"K", alternative.encode())
        + pax_header(record("linkpath", used))
        + ustar_block(b"Files/s", type=b"2", linkname=used.encode())
        + END
    )
    assert tarfile_names(raw)[1] == ("Files/s", alternative)
    assert_refused(driver, raw, "Files/s", 512, alternative)


@pytest.mark.parametrize(
    ("ustar", "used"),
    [
        (b"../../x", "../../real"),  # both lead outside: no new reach
        (b"../x", "a/b/../../real"),  # both stay inside the archive's root
        (b"/x", "\u30c7\u30fc\u30bf/x"),  # Go drops non-ASCII characters
        (b"??/x", "\u00e9\u00e8/x"),  # Python writes '?' for each
        (b"____/x", "\u00e9\u00e8/x"),  # winlayer's writer writes '_' for each byte
    ],
)
def test_symlink_alternatives_that_are_accepted(driver: Driver, ustar: bytes, used: str) -> None:
    raw = (
        FILES
        + pax_header(record("linkpath", used))
        + ustar_block(b"Files/s", type=b"2", linkname=ustar)
        + END
    )
    driver.apply_diff("ok", "base", io.BytesIO(raw))
    with driver.diff("ok", original=True) as stream:
        assert stream.read() == raw


# --- what legitimate writers produce ---------------------------------------------------

LONG_DIR = "Files/" + "/".join(["\u30c7\u30a3\u30ec\u30af\u30c8\u30ea-" + "d" * 40] * 6)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_tarfile_long_names_are_accepted(driver: Driver, fmt: int) -> None:
    folders = ["Files", "Files/" + "b" * 200, LONG_DIR]  # the last: non-ASCII, 300+ long
    files = [
        "Files/" + "a" * 120,  # over the 100-byte name field
        "Files/" + "b" * 200 + "/" + "c" * 60,  # over 255 characters
        LONG_DIR + "/\u00fcber-\u0444\u0430\u0439\u043b.txt",
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tf:
        for name in folders:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for name in files:
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        hard = tarfile.TarInfo(LONG_DIR + "/hard-" + "h" * 100)
        hard.type = tarfile.LNKTYPE
        hard.linkname = files[2]
        tf.addfile(hard)
        for i, target in enumerate(
            ["../" * 5 + "\u00e9" * 80, "C:\\\u30c7\u30fc\u30bf\\" + "x" * 150, "\u00e9/" * 70]
        ):
            sym = tarfile.TarInfo(f"{LONG_DIR}/link{i}")
            sym.type = tarfile.SYMTYPE
            sym.linkname = target
            tf.addfile(sym)
    raw = buf.getvalue()
    driver.apply_diff("ok", "base", io.BytesIO(raw))
    with driver.diff("ok", original=True) as stream:
        assert stream.read() == raw
    # winlayer's own canonical export (PAX with ASCII fallbacks) imports again.
    with driver.diff("ok") as stream:
        canonical = stream.read()
    driver.apply_diff("again", "base", io.BytesIO(canonical))


def test_a_cut_that_leaves_dotdot(driver: Driver) -> None:
    # The first 100 bytes of this safe name end in "/..": as a ustar name alone it would
    # be the parent folder. Such a field is refused; winlayer's writer cuts shorter.
    name = "Files/" + "a" * 91 + "/..bcd"
    assert name[:100].endswith("/..")
    cut = FILES + pax_header(record("path", name)) + ustar_block(name[:100].encode()) + END
    assert_refused(driver, cut, name, 512, name[:100])
    placeholder = FILES + pax_header(record("path", name)) + ustar_block(b"Files/x") + END
    driver.apply_diff("ok", "base", io.BytesIO(placeholder))
    with driver.diff("ok") as stream:
        canonical = stream.read()
    with tarfile.open(fileobj=io.BytesIO(canonical)) as tf:
        member = tf.getmember(name)
    header = canonical[member.offset_data - 512 : member.offset_data]
    assert header[:100].rstrip(b"\0") == name[:99].encode()
    driver.apply_diff("again", "base", io.BytesIO(canonical))
