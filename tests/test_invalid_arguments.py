"""Bad input raises InvalidArgument: a WinlayerError, and a ValueError as before."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from winlayer import Driver, InvalidArgument, WinlayerError
from winlayer._reference import parse
from winlayer._units import parse_size
from winlayer.imagestore import normalize_id, parse_reference

from .layerbuild import base_layer


@pytest.fixture
def driver(tmp_path: Path) -> Driver:
    return Driver(tmp_path / "home", backend="portable", base_images=tmp_path / "base")


CASES: list[tuple[str, Callable[[Driver], object], str]] = [
    ("digest", lambda d: d.apply_diff("x", None, io.BytesIO(base_layer()), digest="sha256:zz"),
     "invalid digest 'sha256:zz'"),
    ("layer id", lambda d: d.create("a/b", None), "invalid layer id 'a/b'"),
    ("size", lambda d: parse_size("12 parsecs"), "invalid size '12 parsecs'"),
    ("negative size", lambda d: parse_size(-1), "size must be positive"),
    ("flavour", lambda d: Driver(d.home, flavour="overlay"), "unknown flavour 'overlay'"),
    ("image id", lambda d: normalize_id("sha256:abc"), "invalid image id"),
    ("tag", lambda d: parse_reference("app:-bad"), "invalid tag '-bad'"),
    ("repository", lambda d: parse("Upper/Case"), "invalid repository name"),
    ("reference digest", lambda d: parse("app@sha256:12"), "invalid digest 'sha256:12'"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "call", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_invalid_argument(
    driver: Driver, what: str, call: Callable[[Driver], object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        call(driver)
    assert isinstance(caught.value, WinlayerError)
    assert isinstance(caught.value, ValueError)
    assert driver.layers() == []  # nothing was made
