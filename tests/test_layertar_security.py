"""Security descriptors: the bounds-checked binary parser (owner, group, ACLs) and the
legacy SDDL subset, byte for byte against descriptors written out from the layout."""

from __future__ import annotations

import struct

import pytest

from winlayer import InvalidLayer
from winlayer import _hcs as h

from .test_layertar import SD_BA, SD_BU


def sid(authority: int, *subs: int) -> bytes:
    return (
        bytes([1, len(subs)]) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
    )


SY = sid(5, 18)
BU = sid(5, 32, 545)
BA = sid(5, 32, 544)
WD = sid(1, 0)


def ace(kind: int, flags: int, mask: int, who: bytes) -> bytes:
    return struct.pack("<BBHI", kind, flags, 8 + len(who), mask) + who


def acl(*aces: bytes) -> bytes:
    body = b"".join(aces)
    return struct.pack("<BBHHH", 2, 0, 8 + len(body), len(aces), 0) + body


def descriptor(control: int, owner: bytes, group: bytes, dacl: bytes | None) -> bytes:
    at = 20
    o = at if owner else 0
    at += len(owner)
    g = at if group else 0
    at += len(group)
    d = at if dacl is not None else 0
    header = struct.pack("<BBHIIII", 1, 0, control, o, g, 0, d)
    return header + owner + group + (dacl or b"")


def test_reference_descriptors_parse() -> None:
    info = h.describe_security_descriptor(SD_BA)
    assert info["owner"] == ("S-1-5-32-544", "BA", "BUILTIN\\Administrators")
    assert info["group"] == info["owner"]
    assert info["has_dacl"] is False
    assert h.describe_security_descriptor(SD_BU)["owner"] == (
        "S-1-5-32-545",
        "BU",
        "BUILTIN\\Users",
    )


def test_sddl_owner_group_matches_the_reference_bytes() -> None:
    assert h.sddl_to_security_descriptor("O:BAG:BA") == SD_BA
    assert h.sddl_to_security_descriptor("O:BUG:BU") == SD_BU
    assert h.sddl_to_security_descriptor("O:S-1-5-32-544G:S-1-5-32-544") == SD_BA


def test_sddl_with_dacl() -> None:
    got = h.sddl_to_security_descriptor(
        "O:SYG:SYD:PAI(A;OICI;FA;;;SY)(D;;0x1200a9;;;BU)(A;CIIO;GRGX;;;WD)"
    )
    want = descriptor(
        0x8000 | 0x0004 | 0x1000 | 0x0400,
        SY,
        SY,
        acl(
            ace(0, 0x03, 0x001F01FF, SY),
            ace(1, 0x00, 0x001200A9, BU),
            ace(0, 0x0A, 0x80000000 | 0x20000000, WD),
        ),
    )
    assert got == want
    info = h.describe_security_descriptor(got)
    assert info["dacl_aces"] == 3
    assert info["owner"] == ("S-1-5-18", "SY", "NT AUTHORITY\\SYSTEM")


def test_sddl_empty_dacl_and_any_part_order() -> None:
    assert h.sddl_to_security_descriptor("D:G:BAO:BU") == descriptor(0x8004, BU, BA, acl())
    trusted_installer = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
    info = h.describe_security_descriptor(h.sddl_to_security_descriptor(f"O:{trusted_installer}"))
    assert info["owner"] == (trusted_installer, "", "NT SERVICE\\TrustedInstaller")
    assert info["group"] is None


@pytest.mark.parametrize(
    ("sddl", "message"),
    [
        ("", "empty descriptor"),
        ("X:BA", "expected O:, G:, D: or S:"),
        ("O:BAO:BA", "owner given twice"),
        ("O:BAS:(AU;SA;FA;;;WD)", "SACLs (S:) are not supported"),
        ("D:NO_ACCESS_CONTROL", "NO_ACCESS_CONTROL"),
        ("D:(OA;;RP;bf967aba-0de6-11d0-a285-00aa003049e2;;WD)", "ACE type 'OA' is not supported"),
        ("D:(A;;FA;guid;;WD)", "object ACEs (GUIDs) are not supported"),
        ("D:(A;;FA;;;WD;(x))", "6 fields"),
        ("D:(XA;;FA;;;WD;(Member_of {SID(BA)}))", "6 fields"),
        ("D:(A;SA;FA;;;WD)", "ACE flag 'SA' is not supported"),
        ("D:(A;;ZZ;;;WD)", "ACE right 'ZZ' is not supported"),
        ("D:(A;;0x123456789;;;WD)", "out of range"),
        ("D:(A;;FA;;;WD", "without ')'"),
        ("O:DA", "names a domain account"),
        ("O:QQ", "unknown SID alias 'QQ'"),
        ("O:S-2-5", "bad SID"),
        ("O:S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16", "more than 15"),
        ("O:S-1-5-99999999999", "out of range"),
        ("D:X(A;;FA;;;WD)", "unknown DACL flag"),
    ],
)
def test_unsupported_or_malformed_sddl_is_refused(sddl: str, message: str) -> None:
    with pytest.raises(InvalidLayer, match=r"MSWINDOWS\.sd") as info:
        h.sddl_to_security_descriptor(sddl)
    assert message in info.value.reason


def corrupt(sd: bytes, at: int, value: bytes) -> bytes:
    b = bytearray(sd)
    b[at : at + len(value)] = value
    return bytes(b)


DACL_SD = descriptor(0x8004, SY, SY, acl(ace(0, 0, 0x1F01FF, SY)))


@pytest.mark.parametrize(
    ("sd", "message", "offset"),
    [
        (b"\x01\x00", "shorter than its 20-byte header", 0),
        (corrupt(SD_BA, 0, b"\x02"), "revision 2", 0),
        (corrupt(SD_BA, 2, b"\x00\x00"), "not self-relative", 2),
        (corrupt(SD_BA, 4, struct.pack("<I", 999)), "offset outside the descriptor", 4),
        (corrupt(SD_BA, 4, struct.pack("<I", 8)), "offset outside the descriptor", 4),
        (corrupt(SD_BA, 21, b"\x0f"), "SID runs past the end", 20),
        (corrupt(SD_BA, 21, b"\x10"), "16 sub-authorities", 21),
        (corrupt(SD_BA, 20, b"\x02"), "SID revision 2", 20),
        (SD_BA[:-1], "SID runs past the end", 36),
        (corrupt(DACL_SD, 44 + 2, struct.pack("<H", 500)), "DACL size runs past the end", 46),
        (corrupt(DACL_SD, 44 + 4, struct.pack("<H", 2)), "DACL ACE 1 outside the ACL", 72),
        (corrupt(DACL_SD, 44 + 8 + 2, struct.pack("<H", 2)), "DACL ACE 0 size", 54),
        (corrupt(DACL_SD, 44, b"\x07"), "DACL revision 7", 44),
    ],
)
def test_malformed_binary_descriptors(sd: bytes, message: str, offset: int) -> None:
    with pytest.raises(InvalidLayer, match="malformed security descriptor") as info:
        h.describe_security_descriptor(sd)
    assert message in info.value.reason
    assert info.value.offset == offset


def test_unknown_sids_are_shown_without_alias() -> None:
    domain_user = sid(5, 21, 1, 2, 3, 1001)
    sd = descriptor(0x8000, domain_user, sid(0x1_0000_0000_00), None)
    info = h.describe_security_descriptor(sd)
    assert info["owner"] == ("S-1-5-21-1-2-3-1001", "", "")
    assert info["group"] == ("S-1-0x010000000000", "", "")
