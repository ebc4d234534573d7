"""A Driver's lifetime: a context manager, closed once, refusing every use after that."""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from winlayer import Driver, WinlayerError
from winlayer.driver import Diff
from winlayer.errors import DriverClosed

from .layerbuild import base_layer

# Each public method of Driver with arguments that would work on an open driver holding
# the layer "base" (the test below checks that it names every public method).
CALLS: dict[str, Callable[[Driver, Path], Any]] = {
    "status": lambda d, tmp: d.status(),
    "metadata": lambda d, tmp: d.metadata("base"),
    "exists": lambda d, tmp: d.exists("base"),
    "parents": lambda d, tmp: d.parents("base"),
    "layers": lambda d, tmp: d.layers(),
    "info": lambda d, tmp: d.info("base"),
    "create": lambda d, tmp: d.create("new", "base"),
    "remove": lambda d, tmp: d.remove("base"),
    "cleanup": lambda d, tmp: d.cleanup(),
    "restore_custom_images": lambda d, tmp: d.restore_custom_images(None, None),  # type: ignore[arg-type]
    "install_base_image": lambda d, tmp: d.install_base_image(
        "base", "1", io.BytesIO(base_layer()), base_images=tmp / "more"
    ),
    "new_staging_dir": lambda d, tmp: d.new_staging_dir(),
    "get": lambda d, tmp: d.get("base"),
    "put": lambda d, tmp: d.put("base"),
    "view": lambda d, tmp: d.view("base"),
    "unview": lambda d, tmp: d.unview("base"),
    "mounted": lambda d, tmp: d.mounted("base").__enter__(),
    "mount_count": lambda d, tmp: d.mount_count("base"),
    "apply_diff": lambda d, tmp: d.apply_diff("other", None, io.BytesIO(base_layer())),
    "apply_diffs": lambda d, tmp: d.apply_diffs([Diff("other", None, io.BytesIO(base_layer()))]),
    "diff": lambda d, tmp: d.diff("base"),
    "merged": lambda d, tmp: d.merged("base"),
    "verify": lambda d, tmp: d.verify("base"),
    "changes": lambda d, tmp: d.changes("base"),
    "diff_size": lambda d, tmp: d.diff_size("base"),
    "__enter__": lambda d, tmp: d.__enter__(),
}


def _public_methods() -> set[str]:
    names = {
        name
        for name, value in vars(Driver).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
    return (names | {"__enter__"}) - {"close"}


def test_every_public_method_is_checked() -> None:
    assert set(CALLS) == _public_methods()


@pytest.fixture
def home_with_base(tmp_path: Path) -> Path:
    with Driver(tmp_path / "home", backend="portable", base_images=tmp_path / "base") as d:
        d.apply_diff("base", None, io.BytesIO(base_layer()))
    return tmp_path / "home"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_closed_driver_refuses_every_call(home_with_base: Path, name: str) -> None:
    tmp = home_with_base.parent
    driver = Driver(home_with_base, backend="portable", base_images=tmp / "base")
    driver.close()
    with pytest.raises(DriverClosed, match="is closed") as info:
        CALLS[name](driver, tmp)
    assert isinstance(info.value, WinlayerError)
    assert isinstance(info.value, ValueError)
    assert info.value.home == str(home_with_base)
    assert str(home_with_base) in str(info.value)
    # Nothing was done: the layer is still there, nothing new appeared.
    reopened = Driver(home_with_base, backend="portable", base_images=tmp / "base")
    assert [layer.id for layer in reopened.layers()] == ["base"]
    assert reopened.mount_count("base") == 0
    assert not (tmp / "more").exists()


def test_with_closes_the_driver_even_on_error(tmp_path: Path) -> None:
    driver = Driver(tmp_path / "home", backend="portable")
    seen: list[bool] = []

    def use() -> None:
        with driver as entered:
            seen.append(entered is driver and not driver.closed)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use()
    assert seen == [True]
    assert driver.closed is True
    with pytest.raises(DriverClosed):
        driver.layers()


def test_close_is_idempotent_and_keeps_the_identity(tmp_path: Path) -> None:
    driver = Driver(tmp_path / "home", backend="portable")
    driver.close()
    driver.close()
    assert driver.closed
    assert driver.backend == "portable"
    assert driver.home == (tmp_path / "home").absolute()
    assert "Driver(home=" in repr(driver)
    with pytest.raises(DriverClosed), driver:
        pass


def test_a_diff_stream_outlives_its_driver(home_with_base: Path) -> None:
    """A stream given out before close reads to its end, and its close still ends the
    export: the layer can be removed afterwards."""
    tmp = home_with_base.parent
    with Driver(home_with_base, backend="portable", base_images=tmp / "base") as driver:
        with driver.diff("base") as first:
            expected = first.read()
        stream = driver.diff("base")
    assert stream.read() == expected
    stream.close()
    with Driver(home_with_base, backend="portable", base_images=tmp / "base") as other:
        other.remove("base")
        assert other.layers() == []
