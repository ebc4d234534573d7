"""Windows path rules of layer entries: the rule table, NTFS case folding, and the
rules as an import applies them (entry names, hard-link targets, whiteouts, streams)."""

from __future__ import annotations

import importlib.util
import io
import re
import tarfile
import unicodedata
from types import ModuleType

import pytest

from winlayer import InvalidLayer
from winlayer import _hcs as h
from winlayer.layertar import list_layer_tar

from .conftest import REPO

GENERATOR = REPO / "native" / "core" / "gen_ntfs_upcase.py"

VALID = [
    "Files",
    "Hives",
    "UtilityVM",
    "Files/Windows/System32/drivers/etc/hosts",
    "Hives/Software_Delta",
    "UtilityVM/Files/EFI/Microsoft/Boot/BCD",
    "Files/with space/and.dots.ok",
    "Files/ünïcødé/日本語/🙂",
    "Files/.hidden",
    "Files/con_not_reserved",
    "Files/COM0",
    "Files/COM10",
    "Files/LPT",
    "Files/nul_",
    "Files/" + "x" * 255,
    "Files/" + "🙂" * 127,  # 254 UTF-16 units
    "Files/" + "/".join(["d"] * 200),  # long paths are fine
]

INVALID = [
    ("", "empty path"),
    ("/Files/a", "absolute path"),
    ("Files//a", "empty path component"),
    ("Files/a/", "empty path component"),
    ("Files/./a", "'.' path component"),
    ("Files/../a", "'..' path component"),
    ("Files/a/..", "'..' path component"),
    ("C:/Files", "drive letter"),
    ("c:", "drive letter"),
    ("Files\\a", "backslash"),
    ("//server/share", "absolute path"),
    ("root/readonly", "outside the layer's top-level folders"),
    ("files/a", "outside the layer's top-level folders"),
    ("Files2", "outside the layer's top-level folders"),
    ("Files/a:b", "only allowed as the alternate-data-stream separator"),
    ("Files/a\0b", "NUL"),
    ("Files/a\x01b", "character Windows forbids"),
    ("Files/a\x7fb", "character Windows forbids"),
    *[(f"Files/a{c}b", "character Windows forbids") for c in '<>"|?*'],
    ("Files/trailing.", "ends with a dot or a space"),
    ("Files/trailing ", "ends with a dot or a space"),
    ("Files/CON", "reserved Windows device name"),
    ("Files/con", "reserved Windows device name"),
    ("Files/dir/Nul.txt", "reserved Windows device name"),
    ("Files/aux.tar.gz", "reserved Windows device name"),
    ("Files/PRN ", "ends with a dot or a space"),
    ("Files/COM1", "reserved Windows device name"),
    ("Files/lpt9.log", "reserved Windows device name"),
    ("Files/COM\u00b9", "reserved Windows device name"),
    ("Files/CONIN$", "reserved Windows device name"),
    ("Files/conout$.x", "reserved Windows device name"),
    ("Files/CON .txt", "reserved Windows device name"),
    ("Files/" + "x" * 256, "longer than 255"),
    ("Files/" + "🙂" * 128, "longer than 255"),
]


@pytest.mark.parametrize("path", VALID)
def test_valid_paths(path: str) -> None:
    assert h.layer_path_problem(path) == ""


@pytest.mark.parametrize(("path", "problem"), INVALID)
def test_invalid_paths(path: str, problem: str) -> None:
    assert problem in h.layer_path_problem(path)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Zone.Identifier", ""),
        ("with space and <>*?", ""),
        ("", "empty"),
        ("a:b", "':'"),
        ("a/b", "'/'"),
        ("a\\b", "'\\'"),
        ("a\x00", "control"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_stream_names(name: str, problem: str) -> None:
    got = h.stream_name_problem(name)
    assert (problem in got) if problem else got == ""


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Files/Readme.TXT", "FILES/readme.txt"),
        ("àéîõüÿ", "ÀÉÎÕÜŸ"),
        ("ăąćĉčďđēėęěĝğġģĥħĩīĭįĳĵķ", "ĂĄĆĈČĎĐĒĖĘĚĜĞĠĢĤĦĨĪĬĮĲĴĶ"),
        ("ĺļľŀłńņňŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷźżž", "ĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŹŻŽ"),
        ("αβγδεζηθικλμνξοπρστυφχψω", "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ"),
        ("ς", "Σ"),
        ("άέήίόύώ", "ΆΈΉΊΌΎΏ"),
        ("абвгдежзийклмнопрстуфхцчшщъыьэюя", "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"),
        ("ѐёђѓєѕіїјљњћќѝўџ", "ЀЁЂЃЄЅІЇЈЉЊЋЌЍЎЏ"),
        ("ѡҋӂӑ", "ѠҊӁӐ"),
        ("աբգ", "ԱԲԳ"),
        ("\uff41\uff42\uff5a", "\uff21\uff22\uff3a"),  # fullwidth a b z
        ("liệu", "LIỆU"),  # Latin Extended Additional
        ("ⓐⓩ", "ⒶⓏ"),  # circled letters
        ("ⅰⅻ", "ⅠⅫ"),  # Roman numerals
        ("ǆǉǌǳ", "ǄǇǊǱ"),  # digraphs
        ("ɓɗɛɠɨ", "ƁƊƐƓƗ"),  # African Latin letters
        ("ⰰⲁꙁꜳ", "ⰀⲀꙀꜲ"),  # Glagolitic, Coptic, Cyrillic Extended-B, Latin Extended-D
        ("ⴀ", "Ⴀ"),  # Georgian Nuskhuri / Asomtavruli
        ("ა", "Ა"),  # Georgian Mkhedruli / Mtavruli (Unicode 11)
        ("ꭰᏸ", "ᎠᏰ"),  # Cherokee (Unicode 8)
        ("ᾀῃ", "ᾈῌ"),  # Greek with iota subscript: their simple uppercase is the titlecase
    ],
)
def test_ntfs_fold_equates_cases(a: str, b: str) -> None:
    assert h.ntfs_fold(a) == h.ntfs_fold(b)
    assert h.ntfs_fold(b) == b.upper() or not b.isascii()


@pytest.mark.parametrize(
    "name",
    [
        "ßŉǰΐﬀ",  # no single-code-point uppercase
        "ıſµǅǈǋǲ",  # share an uppercase letter but are no case pair (dotless i, long s, ...)
        "ϐϑϕϖϰϱϵ\u0345\u1fbeẛᲀ",  # Greek symbol forms, iota subscripts, Cyrillic variants
        "ẞ",  # capital sharp s: ß has no uppercase, so the two stay apart
        "\U00010428\U0001e922",  # supplementary (Deseret, Adlam): two UTF-16 units each
        "\u00d7\u00f7日本",
    ],
)
def test_ntfs_fold_keeps_what_ntfs_does_not_upcase(name: str) -> None:
    assert h.ntfs_fold(name) == name


def test_ntfs_fold_keeps_distinct_names_distinct() -> None:
    assert h.ntfs_fold("a") != h.ntfs_fold("b")
    # final sigma: no case pair of capital sigma, but Windows folds it too
    assert h.ntfs_fold("\u03c2") == h.ntfs_fold("\u03c3") == "\u03a3"
    assert h.ntfs_fold("ß") != h.ntfs_fold("ẞ")
    assert h.ntfs_fold("\u0131") != h.ntfs_fold("i")  # dotless i


def _upcase_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_ntfs_upcase", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_upcase_table_is_the_generators_output() -> None:
    gen = _upcase_generator()
    table: dict[int, int] = gen.upcase_map()
    committed = gen.TABLE.read_text()
    made_from = re.search(r"the Unicode (\S+) database", committed)
    assert made_from is not None
    same_unicode = made_from.group(1) == unicodedata.unidata_version
    if same_unicode:
        assert gen.render(table) == committed
    for c in range(0x10000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        got = ord(h.ntfs_fold(chr(c)))
        if same_unicode:
            assert got == table.get(c, c), hex(c)
        else:  # a later Unicode only adds case pairs
            assert got in (c, table.get(c, c)), hex(c)


@pytest.mark.parametrize(("a", "b"), [("Files/liệu", "Files/LIỆU"), ("Files/ⓐ", "Files/Ⓐ")])
def test_names_ntfs_upcases_to_one_collide(a: str, b: str) -> None:
    err = listing_error(("Files/", "5", ""), (a, "0", ""), (b, "0", ""))
    assert err.entry == b
    assert "collides with an earlier file" in err.reason


# -- the rules inside an import ---------------------------------------------------------


def tar_of(*entries: tuple[str, str, str]) -> io.BytesIO:
    """A tar of (name, type, linkname) entries, no data."""
    w = h.TarWriter()
    for name, kind, link in entries:
        w.add(name, kind, mode=0o40000 if kind == "5" else 0o100000, linkname=link)
    data = w.finish()
    assert data is not None
    return io.BytesIO(data)


def listing_error(*entries: tuple[str, str, str], **options: bool) -> InvalidLayer:
    with pytest.raises(InvalidLayer) as info:
        list(list_layer_tar(tar_of(*entries), **options))
    return info.value


def test_case_insensitive_duplicate_is_an_error() -> None:
    err = listing_error(
        ("Files/", "5", ""), ("Files/Readme.txt", "0", ""), ("Files/README.TXT", "0", "")
    )
    assert err.entry == "Files/README.TXT"
    assert "collides with an earlier file" in err.reason
    assert err.offset == 1024  # third entry: after two 512-byte headers


def test_exact_duplicate_and_dir_vs_file_collide() -> None:
    err = listing_error(("Files/", "5", ""), ("Files/Ä/", "5", ""), ("Files/ä", "0", ""))
    assert err.entry == "Files/ä"
    assert "earlier directory" in err.reason


def test_whiteout_of_a_path_added_in_the_same_layer() -> None:
    err = listing_error(("Files/", "5", ""), ("Files/a", "0", ""), ("Files/.wh.A", "0", ""))
    assert err.entry == "Files/.wh.A"
    assert "earlier file" in err.reason


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("../etc/passwd", "'..' path component"),
        ("Windows/System32/x", "outside the layer's top-level folders"),
        ("/etc/passwd", "absolute path"),
        ("Files/../../x", "'..' path component"),
        ("C:/Windows/x", "drive letter"),
        ("Files/NUL", "reserved Windows device name"),
    ],
)
def test_hard_link_targets_follow_the_rules(target: str, message: str) -> None:
    err = listing_error(("Files/", "5", ""), ("Files/link", "1", target), allow_parent_links=True)
    assert err.entry == "Files/link"
    assert message in err.reason


def test_hard_link_to_a_directory_or_missing_target() -> None:
    err = listing_error(("Files/", "5", ""), ("Files/d/", "5", ""), ("Files/l", "1", "Files/D"))
    assert "hard link to a directory" in err.reason
    err = listing_error(("Files/", "5", ""), ("Files/l", "1", "Files/missing"))
    assert err.entry == "Files/l"
    assert "'Files/missing' is not in this layer" in err.reason


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("root/file", "outside the layer's top-level folders"),
        ("./Files/a", "'.' path component"),
        ("Files/a:b:c", "':'"),
        ("Files/x:", "empty alternate stream name"),
        ("Files/.wh.", "empty path component"),
        (".wh.Files", "whiteout of a top-level folder"),
        ("Files/.wh.CON", "reserved Windows device name"),
        ("Files", "a top-level folder entry must be a directory"),
    ],
)
def test_hostile_names_in_a_tar(name: str, message: str) -> None:
    err = listing_error(("Files/", "5", ""), (name, "0", ""))
    assert err.entry == name
    assert message in err.reason


def test_name_that_is_not_utf8() -> None:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT, errors="surrogateescape"
    ) as t:
        d = tarfile.TarInfo("Files")
        d.type = tarfile.DIRTYPE
        t.addfile(d)
        t.addfile(tarfile.TarInfo("Files/\udcff\udcfe"))  # raw bytes ff fe in the ustar name
    buf.seek(0)
    with pytest.raises(InvalidLayer, match="UTF-8") as info:
        list(list_layer_tar(buf))
    assert info.value.offset == 512
