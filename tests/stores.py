"""Stores for tests and checks of what they hold. Fixtures: `driver` (one per backend
available here, through `backend_name`), `portable_driver` (the portable backend only) and
`store` (the image store on `driver`).

A test module names the ones it uses at its top (``driver = stores.driver``: pytest
finds a fixture by the name a module gives it); a module of portable-only tests sets
``driver = stores.portable_driver``, and its `store` is then on the portable driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from winlayer import Driver
from winlayer.images import ImageStore, chain_ids, layer_id_for

from .imagebuild import sha


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


def staging_empty(driver: Driver) -> bool:
    """No staging file or folder is left in the store of `driver`."""
    staging = driver.home / ".winlayer" / "staging"
    return not staging.exists() or list(staging.iterdir()) == []


def assert_pristine(driver: Driver, store: ImageStore) -> None:
    """Nothing of a failed load is left: no layer, image, tag or staging file."""
    assert driver.layers() == []
    assert store.images() == []
    assert store.layers() == []
    assert staging_empty(driver)


def check_loaded(driver: Driver, store: ImageStore, layers: list[bytes], config: bytes) -> None:
    """The image is recorded under sha256(config) with its layers stacked by chain ID."""
    image = store.get(sha(config))
    assert image.id == sha(config)[7:]
    assert image.config == config
    chains = chain_ids([sha(layer) for layer in layers])
    assert list(image.layers) == chains
    parent = None
    for layer, chain in zip(layers, chains, strict=True):
        info = driver.info(layer_id_for(chain))
        assert info.diff_id == sha(layer)
        assert info.parent == parent
        parent = info.id
        assert store.layer(chain) is not None
    assert image.size == sum(driver.info(layer_id_for(c)).size or 0 for c in chains)
