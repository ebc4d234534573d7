"""The native error path: every C++ failure becomes a meaningful Python exception."""

from __future__ import annotations

import errno

import pytest

from winlayer import _hcs, errors


def test_errno_becomes_matching_oserror_subclass() -> None:
    with pytest.raises(FileNotFoundError) as info:
        _hcs._raise_error("os", errno.ENOENT, "open", "/store/x/Files")
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == "/store/x/Files"
    assert "open" in str(info.value)


def test_permission_errno() -> None:
    with pytest.raises(PermissionError) as info:
        _hcs._raise_error("os", errno.EACCES, "rename", "/a")
    assert info.value.errno == errno.EACCES


@pytest.mark.parametrize(
    ("winerror", "exc_type"),
    [
        (2, FileNotFoundError),
        (3, FileNotFoundError),
        (5, PermissionError),
        (183, FileExistsError),
        (112, OSError),
    ],
)
def test_win32_code_maps_to_same_subclass_everywhere(winerror: int, exc_type: type) -> None:
    with pytest.raises(exc_type) as info:
        _hcs._raise_error("win32", winerror, "ImportLayer", "C:\\layers\\x")
    assert info.value.winerror == winerror
    assert info.value.filename == "C:\\layers\\x"
    assert "ImportLayer" in str(info.value)


def test_unknown_win32_code_is_plain_oserror_with_winerror() -> None:
    with pytest.raises(OSError, match="Win32 error 4390") as info:
        _hcs._raise_error("win32", 4390, "PrepareLayer", "x")
    assert type(info.value) is OSError
    assert info.value.winerror == 4390


def test_hresult_becomes_hcs_error() -> None:
    with pytest.raises(errors.HcsError) as info:
        _hcs._raise_error("hresult", 0x80370112, "ActivateLayer", "layer1")
    assert info.value.hresult == 0x80370112
    assert info.value.operation == "ActivateLayer"
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, errors.WinlayerError)
    assert "0x80370112" in str(info.value)


def test_invalid_layer_carries_entry_and_offset() -> None:
    with pytest.raises(errors.InvalidLayer) as info:
        _hcs._raise_error("invalid_layer", 1536, "", "Files/../evil")
    assert info.value.entry == "Files/../evil"
    assert info.value.offset == 1536
    assert "offset 1536" in str(info.value)


def test_digest_mismatch_fields() -> None:
    with pytest.raises(errors.DigestMismatch) as info:
        _hcs._raise_error("digest_mismatch", 0, "", "")
    assert (info.value.expected, info.value.actual) == ("sha256:aa", "sha256:bb")


def test_digest_mismatch_names_its_subject_once() -> None:
    native = errors.DigestMismatch("sha256:aa", "sha256:bb")
    assert str(native) == "digest mismatch: expected sha256:aa, got sha256:bb"
    named = native.about("layer 'x'")
    assert str(named) == "digest mismatch of layer 'x': expected sha256:aa, got sha256:bb"
    assert (named.subject, named.expected, named.actual) == ("layer 'x'", "sha256:aa", "sha256:bb")
    assert named.about("blob 'y'") is named  # the code nearest the content named it first


def test_layer_not_found() -> None:
    with pytest.raises(errors.LayerNotFound) as info:
        _hcs._raise_error("layer_not_found", 0, "", "abc")
    assert info.value.layer_id == "abc"
    assert isinstance(info.value, LookupError)


def test_backend_unavailable_from_native() -> None:
    with pytest.raises(errors.BackendUnavailable, match="enable the Containers feature"):
        _hcs._raise_error("backend_unavailable", 0, "enable the Containers feature", "")


def test_std_exception_is_never_a_bare_runtime_error() -> None:
    with pytest.raises(errors.WinlayerError, match="broken invariant") as info:
        _hcs._raise_error("std", 0, "", "")
    assert not isinstance(info.value, RuntimeError)


def test_pybind_own_exceptions_pass_through() -> None:
    with pytest.raises(ValueError, match="unknown error kind"):
        _hcs._raise_error("bogus", 0, "", "")


def test_every_error_is_a_winlayer_error() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.WinlayerError)
