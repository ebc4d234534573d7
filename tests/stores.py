"""Fixtures of a store: `driver` (one per backend available here, through `backend_name`),
`portable_driver` (the portable backend only) and `store` (the image store on `driver`).

A test module names the ones it uses at its top (``driver = stores.driver``: pytest
finds a fixture by the name a module gives it); a module of portable-only tests sets
``driver = stores.portable_driver``, and its `store` is then on the portable driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from winlayer import Driver
from winlayer.images import ImageStore


@pytest.fixture
def driver(tmp_path: Path, backend_name: str) -> Driver:
    return Driver(tmp_path / "home", backend=backend_name, base_images=tmp_path / "base")


@pytest.fixture
def portable_driver(tmp_path: Path) -> Driver:
    return Driver(tmp_path / "home", backend="portable", base_images=tmp_path / "base")


@pytest.fixture
def store(driver: Driver) -> Iterator[ImageStore]:
    with ImageStore(driver.home) as s:
        yield s
