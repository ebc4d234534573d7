"""Every public function, class and method has a docstring that ``help()`` shows.

The public API is what ``winlayer.__all__`` names and what the public modules offer:
their ``__all__`` where they have one, else the names they define themselves (not the
ones they import). A dataclass's generated signature does not count as a docstring.
"""

from __future__ import annotations

import importlib
import inspect
import pydoc
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import winlayer

PUBLIC_MODULES = (
    "driver",
    "images",
    "archive",
    "registry",
    "layertar",
    "pack",
    "chain",
    "errors",
    "backend",
)


def _api(module: ModuleType) -> Iterator[tuple[str, Any]]:
    names = getattr(module, "__all__", None)
    if names is not None:
        for name in names:
            yield name, getattr(module, name)
        return
    for name, value in vars(module).items():
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__:
            yield name, value


def _own_doc(obj: Any) -> str:
    """The docstring written for `obj` itself (a method's is not inherited)."""
    doc = obj.__doc__ or ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # what @dataclass writes when there is none
    return inspect.cleandoc(doc) if doc.strip() else ""


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods and properties `cls` defines."""
    for name, attribute in vars(cls).items():
        if name.startswith("_"):
            continue
        value = attribute
        if isinstance(attribute, (staticmethod, classmethod)):
            value = attribute.__func__
        elif isinstance(attribute, property):
            value = attribute.fget
        if inspect.isroutine(value):
            yield name, value


def _modules() -> list[ModuleType]:
    return [winlayer] + [importlib.import_module(f"winlayer.{m}") for m in PUBLIC_MODULES]


def _documented(module: ModuleType) -> Iterator[tuple[str, Any]]:
    """The public functions and classes of `module`."""
    for name, value in _api(module):
        if inspect.isclass(value) or inspect.isroutine(value):
            yield f"{module.__name__}.{name}", value


def public_api() -> dict[str, Any]:
    """Qualified name -> object, for every public function, class and method."""
    found: dict[str, Any] = {}
    for module in _modules():
        for qualified, value in _documented(module):
            found[qualified] = value
            if inspect.isclass(value):
                for member, method in _members(value):
                    found[f"{qualified}.{member}"] = method
    return found


def test_the_walk_finds_the_api() -> None:
    api = public_api()
    for name in (
        "winlayer.Driver",
        "winlayer.Driver.apply_diff",
        "winlayer.Driver.close",
        "winlayer.driver.default_home",
        "winlayer.images.load",
        "winlayer.backend.Backend.import_layer",
        "winlayer.chain.read_chain",
        "winlayer.errors.DriverClosed",
        "winlayer.layertar.LayerTarEntry.creation_time",
    ):
        assert name in api
    assert "winlayer.driver.StateStore" not in api  # imported there, not its API


def test_every_public_name_has_a_docstring() -> None:
    missing = sorted(name for name, obj in public_api().items() if not _own_doc(obj))
    assert missing == [], f"no docstring: {', '.join(missing)}"


def test_a_missing_docstring_is_found() -> None:
    @dataclass
    class Bare:
        field: int

        def method(self) -> None:
            pass

    def function() -> None:
        pass

    assert _own_doc(Bare) == ""
    assert _own_doc(function) == ""
    assert dict(_members(Bare)) == {"method": Bare.method}
    assert _own_doc(Bare.method) == ""


def _squashed(text: str) -> str:
    return " ".join(text.split())


def test_help_shows_the_docstrings() -> None:
    for module in _modules():
        for name, value in _documented(module):
            shown = _squashed(pydoc.render_doc(value, renderer=pydoc.plaintext))
            members = [m for _, m in _members(value)] if inspect.isclass(value) else []
            for obj in (value, *members):
                first = _own_doc(obj).splitlines()[0]
                assert _squashed(first) in shown, f"{name}: {first!r}"
