"""Property: any valid list of layer entries -> canonical export -> import gives the same
entries and data back, and exporting those again gives the same bytes."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winlayer import _hcs as h
from winlayer.layertar import LayerTarEntry, list_layer_tar

from .test_layertar import SD_BA, SD_BU

SECURITY = [b"", SD_BA, SD_BU, h.sddl_to_security_descriptor("O:SYG:SYD:P(A;OICI;FA;;;SY)")]
NAME_CHARS = "abcXYZ019_-é日ß"
TICKS = st.integers(min_value=0, max_value=2**62)


def names() -> st.SearchStrategy[str]:
    return st.text(NAME_CHARS, min_size=1, max_size=12).filter(
        lambda n: h.layer_path_problem("Files/" + n) == ""
    )


@st.composite
def layers(draw: Any) -> list[dict[str, object]]:
    """Entries in a valid export order: parents first, streams right after their file."""
    taken: set[str] = set()  # NTFS-folded paths already used
    dirs = ["Files"]
    files: list[str] = []
    out: list[dict[str, object]] = [
        {"path": "Files", "type": "directory", "attributes": 16, "times": (0, 0, 0, 0)}
    ]

    def fresh_path() -> str:
        while True:
            path = draw(st.sampled_from(dirs)) + "/" + draw(names())
            if h.ntfs_fold(path) not in taken:
                taken.add(h.ntfs_fold(path))
                return path

    def metadata(attributes: int) -> dict[str, object]:
        eas = draw(
            st.dictionaries(
                st.text("ABCDEFGHIJ_$.0", min_size=1, max_size=8),
                st.binary(max_size=40),
                max_size=3,
            )
        )
        return {
            "attributes": attributes,
            "times": draw(st.tuples(TICKS, TICKS, TICKS, TICKS)),
            "security_descriptor": draw(st.sampled_from(SECURITY)),
            "extended_attributes": sorted(eas.items()),
        }

    for drawn in draw(st.lists(st.sampled_from(["dir", "file", "link", "wh", "sym"]), max_size=25)):
        kind = "file" if drawn == "link" and not files else drawn
        path = fresh_path()
        if kind == "dir":
            out.append(
                {"path": path, "type": "directory", **metadata(16 | draw(st.integers(0, 7)))}
            )
            dirs.append(path)
        elif kind == "file":
            attrs = draw(st.integers(0, 2**32 - 1)) & ~0x10
            out.append(
                {
                    "path": path,
                    "type": "file",
                    "data": draw(st.binary(max_size=600)),
                    **metadata(attrs),
                }
            )
            files.append(path)
            for stream in draw(
                st.lists(st.text("abcQ_ .", min_size=1, max_size=6), max_size=2, unique=True)
            ):
                out.append(
                    {
                        "path": f"{path}:{stream}",
                        "type": "alternate_stream",
                        "data": draw(st.binary(max_size=50)),
                    }
                )
        elif kind == "link":
            out.append(
                {"path": path, "type": "hard_link", "link_target": draw(st.sampled_from(files))}
            )
        elif kind == "wh":
            out.append({"path": path, "type": "whiteout"})
        else:
            junction = draw(st.booleans())
            target = draw(st.text("abc\\ .é", min_size=1, max_size=20))
            if junction:
                target = "C:\\" + target
            attrs = 0x400 | (0x10 if junction else draw(st.sampled_from([0x20, 0x10, 0x21])))
            out.append(
                {
                    "path": path,
                    "type": "symlink",
                    "link_target": target,
                    "mount_point": junction,
                    **metadata(attrs),
                }
            )
    return out


def as_entry_dict(e: LayerTarEntry, data: bytes) -> dict[str, object]:
    d: dict[str, object] = {"path": e.path, "type": e.type}
    if e.type in ("directory", "file", "symlink"):
        d.update(
            attributes=e.attributes,
            times=e.filetimes,
            security_descriptor=e.security_descriptor,
            extended_attributes=sorted(e.extended_attributes),
        )
    if e.type in ("file", "alternate_stream"):
        d["data"] = data
    if e.type == "symlink":
        d.update(link_target=e.link_target, mount_point=e.mount_point)
    if e.type == "hard_link":
        d["link_target"] = e.link_target
    return d


def data_by_entry(tar: bytes) -> list[bytes]:
    """The data the import wrote for each File / AlternateStream entry, in order."""
    calls, err = h.trace_layer_import(io.BytesIO(tar))
    assert err is None
    out: list[bytes] = []
    for op, _path, kind, data in calls:
        if op == "add" and kind in ("file", "alternate_stream"):
            out.append(b"")
        elif op == "write":
            out[-1] += data
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_export_import_round_trip(entries: list[dict[str, object]]) -> None:
    tar = h.export_layer_entries(entries)
    listed = list(list_layer_tar(io.BytesIO(tar)))
    datas = iter(data_by_entry(tar))
    back = [
        as_entry_dict(e, next(datas) if e.type in ("file", "alternate_stream") else b"")
        for e in listed
    ]
    expected = []
    for original in entries:
        e = dict(original)
        if e["type"] in ("directory", "file", "symlink"):
            e.setdefault("security_descriptor", b"")
            e.setdefault("extended_attributes", [])
        if e["type"] in ("file", "alternate_stream"):
            e.setdefault("data", b"")
        if e["type"] == "symlink":
            e["attributes"] = int(e["attributes"]) | 0x400  # type: ignore[call-overload]
            e.setdefault("mount_point", False)
        expected.append(e)
    assert back == expected
    assert h.export_layer_entries(back) == tar
