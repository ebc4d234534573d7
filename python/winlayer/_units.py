"""Human sizes, as Docker's ``--storage-opt size=`` takes them (binary multiples)."""

from __future__ import annotations

import re

from .errors import InvalidArgument

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"20GB"``, ``"512m"``, ``"1.5GiB"``.

    K, M, G, T and P are powers of 1024 whether or not an ``i`` or ``B`` follows, as in
    Docker's ``RAMInBytes``.
    """
    if isinstance(value, bool):
        raise TypeError("size must be an int or a string, not bool")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidArgument(f"size must be positive, got {value}")
        return value
    match = _SIZE.match(value)
    if not match:
        raise InvalidArgument(f"invalid size {value!r}: use bytes or a number with K, M, G, T or P")
    number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise InvalidArgument(f"size must be positive, got {value!r}")
    return size


def format_size(size: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")
