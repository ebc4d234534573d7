"""The winlayer exception hierarchy.

Domain failures derive from :class:`WinlayerError` and say what and where. Failures of
the operating system stay :class:`OSError` subclasses (``FileNotFoundError``,
``PermissionError``, ...) with ``errno``, ``winerror`` and ``filename`` set, so that code
written against the standard library keeps working. :func:`from_native` is the one place
that turns a native error into a Python exception.
"""

from __future__ import annotations

import errno as _errno
import os
import re

__all__ = [
    "BackendUnavailable",
    "DigestMismatch",
    "DriverClosed",
    "HcsError",
    "ImageConflict",
    "InvalidArgument",
    "InvalidLayer",
    "InvalidPlatform",
    "LayerExists",
    "LayerInUse",
    "LayerNotFound",
    "PlatformNotFound",
    "StoreCorrupt",
    "WinlayerError",
    "from_native",
]


class WinlayerError(Exception):
    """Base class of every error winlayer raises on its own account."""


class LayerNotFound(WinlayerError, LookupError):
    """No layer with this id (or alternate id) exists in the store."""

    def __init__(self, layer_id: str, message: str = "layer not found") -> None:
        super().__init__(f"{message}: {layer_id!r}")
        self.layer_id = layer_id


class LayerExists(WinlayerError):
    """A layer with this id already exists."""

    def __init__(self, layer_id: str, message: str = "layer already exists") -> None:
        super().__init__(f"{message}: {layer_id!r}")
        self.layer_id = layer_id


class LayerInUse(WinlayerError):
    """The layer is mounted, prepared or a parent of another layer."""

    def __init__(self, layer_id: str, message: str = "layer is in use") -> None:
        super().__init__(f"{message}: {layer_id!r}")
        self.layer_id = layer_id


#: A byte that was not UTF-8, as ``repr`` shows its surrogate escape (``\\udce6``),
#: after an even number of backslashes (so not a name's own ``\\`` followed by ``udc``).
_ESCAPED_BYTE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def quoted_name(name: str) -> str:
    """A name as a message shows it: quoted as ``repr`` does, with the bytes that were not
    UTF-8 (decoded with ``surrogateescape``, as tar names and paths are) as ``\\xNN``
    rather than ``\\udcNN``: ``'PK\\x03\\x04\\xe6'``."""
    return _ESCAPED_BYTE.sub(r"\1\\x\2", repr(name))


class InvalidArgument(WinlayerError, ValueError):
    """An argument that is not valid input: a malformed digest, size, id, reference, tag,
    flavour or option value (also a ``ValueError``)."""


class DriverClosed(WinlayerError, ValueError):
    """A :class:`~winlayer.Driver` was used after :meth:`~winlayer.Driver.close` (also a
    ``ValueError``, as for a closed file). ``home`` is the driver's layer store."""

    def __init__(self, home: str) -> None:
        super().__init__(f"this Driver of {home!r} is closed; open a new one")
        self.home = home


class InvalidLayer(WinlayerError, ValueError):
    """A layer tar (or stored layer) is malformed or hostile.

    ``entry`` is the tar entry name and ``offset`` the byte offset in the uncompressed
    tar where the problem was found (``-1`` when unknown).
    """

    def __init__(self, message: str, entry: str = "", offset: int = -1) -> None:
        where = []
        if entry:
            where.append(f"entry {quoted_name(entry)}")
        if offset >= 0:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.reason = message
        self.entry = entry
        self.offset = offset


class DigestMismatch(WinlayerError):
    """The content's digest is not the one that was expected.

    ``subject`` says whose digest it is (``"layer 'x'"``, ``"blob 'blobs/sha256/...'"``),
    or is empty where the code that found the mismatch does not know (the native layer).
    """

    def __init__(self, expected: str, actual: str, subject: str = "") -> None:
        about = f" of {subject}" if subject else ""
        super().__init__(f"digest mismatch{about}: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual
        self.subject = subject

    def about(self, subject: str) -> DigestMismatch:
        """This mismatch naming `subject`, unless it names one already."""
        return self if self.subject else DigestMismatch(self.expected, self.actual, subject)


class StoreCorrupt(WinlayerError):
    """On-disk metadata is damaged or of an unknown version."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{message}: {path!r}" if path else message)
        self.path = path


class BackendUnavailable(WinlayerError, ImportError):
    """The requested backend cannot run on this machine; the message says how to fix it."""


class HcsError(WinlayerError, OSError):
    """The Host Compute Service failed with an HRESULT outside FACILITY_WIN32.

    ``operation`` names the vmcompute call, ``hresult`` is the unsigned 32-bit code.
    """

    def __init__(self, operation: str, hresult: int, path: str = "") -> None:
        message = f"{operation} failed with HRESULT 0x{hresult:08X}"
        OSError.__init__(self, _errno.EIO, message, path or None)
        self.operation = operation
        self.hresult = hresult
        self.winerror = hresult

    def __str__(self) -> str:
        return f"{self.strerror}: {self.filename!r}" if self.filename else str(self.strerror)


class ImageConflict(WinlayerError):
    """An image cannot be removed: a tag, a child image or a sandbox still needs it.

    ``image_id`` is the image's id (64 hex digits); ``forceable`` says whether ``force``
    (``images rm -f``) would override it (tags, sandboxes not mounted) or not (child
    images, mounted sandboxes), as Docker's "must be forced" / "cannot be forced".
    """

    def __init__(self, image_id: str, reason: str, *, forceable: bool) -> None:
        how = "must be forced" if forceable else "cannot be forced"
        super().__init__(f"conflict: unable to delete {image_id[:12]} ({how}) - {reason}")
        self.image_id = image_id
        self.reason = reason
        self.forceable = forceable


# Win32 error codes -> errno, so that a Win32 failure picks the same OSError subclass
# on every platform (Windows does this itself for OSError(…, winerror)).
_WIN32_TO_ERRNO = {
    2: _errno.ENOENT,  # ERROR_FILE_NOT_FOUND
    3: _errno.ENOENT,  # ERROR_PATH_NOT_FOUND
    5: _errno.EACCES,  # ERROR_ACCESS_DENIED
    17: _errno.EXDEV,  # ERROR_NOT_SAME_DEVICE
    21: _errno.EAGAIN,  # ERROR_NOT_READY
    32: _errno.EACCES,  # ERROR_SHARING_VIOLATION
    50: _errno.EOPNOTSUPP,  # ERROR_NOT_SUPPORTED
    80: _errno.EEXIST,  # ERROR_FILE_EXISTS
    87: _errno.EINVAL,  # ERROR_INVALID_PARAMETER
    112: _errno.ENOSPC,  # ERROR_DISK_FULL
    123: _errno.EINVAL,  # ERROR_INVALID_NAME
    145: _errno.ENOTEMPTY,  # ERROR_DIR_NOT_EMPTY
    183: _errno.EEXIST,  # ERROR_ALREADY_EXISTS
    206: _errno.ENAMETOOLONG,  # ERROR_FILENAME_EXCED_RANGE
    1167: _errno.ENODEV,  # ERROR_DEVICE_NOT_CONNECTED
    1314: _errno.EPERM,  # ERROR_PRIVILEGE_NOT_HELD
}


def _os_error(code: int, message: str, operation: str, path: str, winerror: int | None) -> OSError:
    text = f"{operation}: {message}" if operation else message
    exc = OSError(code, text, path) if path else OSError(code, text)
    if winerror is not None:
        exc.winerror = winerror  # type: ignore[attr-defined,unused-ignore]  # set off Windows too
    return exc


def from_native(
    kind: str,
    code: int,
    message: str,
    operation: str,
    path: str,
    entry: str = "",
    offset: int = -1,
    expected: str = "",
    actual: str = "",
) -> BaseException:
    """Build the exception for a native error (called by the native module)."""
    if kind == "os":
        return _os_error(code, message or os.strerror(code), operation, path, None)
    if kind == "win32":
        mapped = _WIN32_TO_ERRNO.get(code, 0)
        text = os.strerror(mapped) if mapped else message
        return _os_error(mapped, text, operation, path, code)
    if kind == "hresult":
        return HcsError(operation, code, path)
    if kind == "invalid_layer":
        return InvalidLayer(message, entry, offset)
    if kind == "digest_mismatch":
        return DigestMismatch(expected, actual)
    if kind == "layer_not_found":
        return LayerNotFound(path, message)
    if kind == "layer_exists":
        return LayerExists(path, message)
    if kind == "layer_in_use":
        return LayerInUse(path, message)
    if kind == "store_corrupt":
        return StoreCorrupt(message, path)
    if kind == "backend_unavailable":
        return BackendUnavailable(message)
    if kind == "invalid_argument":
        return ValueError(f"{message}: {path!r}" if path else message)
    return WinlayerError(f"internal error in winlayer's native code: {message}")


class InvalidPlatform(InvalidArgument):
    """A platform specifier (``os[/arch[/variant]][:os.version]``) that does not parse;
    ``spec`` is the specifier, ``reason`` what is wrong with it."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f"invalid platform {spec!r}: {reason}")
        self.spec = spec
        self.reason = reason


class PlatformNotFound(WinlayerError, LookupError):
    """An image archive (or a registry's index, `source`) holds no image for the platform
    wanted; ``wanted`` is that platform, ``offered`` the platforms the archive (or
    ``member``, its index) holds."""

    def __init__(
        self, wanted: str, offered: list[str], member: str = "", *, source: str = "the archive"
    ) -> None:
        where = f" (member {member!r})" if member else ""
        holds = ", ".join(offered) if offered else "none"
        super().__init__(f"no image for {wanted} in {source}{where}; it holds: {holds}")
        self.wanted = wanted
        self.offered = offered
        self.member = member


class BuildError(WinlayerError, ValueError):
    """An image cannot be made as asked (``commit``, ``append``, ``create --image``): the
    base is a host base image, the image a sandbox was made from is unknown or ambiguous,
    an input is neither a layer tar nor a folder. The message says what to do instead."""
