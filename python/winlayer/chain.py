"""The files the driver keeps in a layer folder, beside the backend's data.

The seed's two are kept exactly, so that a home written by Docker's Windows driver, by
another winlayer version or by the other backend is read back:

- ``layerchain.json``: a compact JSON array of absolute parent folder paths, nearest
  parent first, encoded the way Go's ``encoding/json`` does (``<``, ``>``, ``&``,
  U+2028 and U+2029 escaped); ``null`` for a layer without parents; file mode 0600.
- the alternate-ID file: the name of the folder that holds the layer's data. The seed
  wrote it as ``layerId`` and read it as ``layerID``; it is read here whatever its case
  and written as ``layerId``.

A chain is at most :data:`MAX_DEPTH` read-only layers deep.

winlayer adds ``winlayer.json``, the layer's record: ``diff_id`` and ``size`` (of an
imported layer) and ``read_write``. It is the authority for those facts, whatever the
backend (see docs/ARCHITECTURE.md, "One owner per layer fact").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._common import atomic_write, go_json
from .errors import StoreCorrupt

CHAIN_FILE = "layerchain.json"
ALT_ID_FILE = "layerId"
RECORD_FILE = "winlayer.json"
#: The driver's files in a layer folder, lower case (an alias folder holds only these).
DRIVER_FILES = {CHAIN_FILE.lower(), ALT_ID_FILE.lower(), RECORD_FILE}
#: Most read-only layers one chain may stack, a layer and its parents (Docker's
#: maxLayerDepth); a read/write layer may sit on a full stack. Every layer stores its whole
#: chain, so a store of n stacked layers holds n * (n - 1) / 2 parent paths.
MAX_DEPTH = 125


def encode_chain(chain: list[str] | None) -> bytes:
    """``json.Marshal`` of a Go ``[]string``: compact, HTML-safe escapes, nil -> null."""
    return go_json(chain) if chain else b"null"


def decode_chain(data: bytes, path: Path) -> list[str]:
    """The parent folders in a ``layerchain.json``'s bytes read from `path` ([] for
    ``null``); :class:`~winlayer.StoreCorrupt` naming `path` if they are not a JSON list
    of strings."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreCorrupt(f"unreadable layer chain ({exc})", str(path)) from None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise StoreCorrupt("layer chain is not a list of folder paths", str(path))
    return value


def read_chain(layer_dir: Path) -> list[str]:
    """Parent folders of the layer in `layer_dir`, nearest first ([] for a base layer)."""
    path = layer_dir / CHAIN_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return decode_chain(data, path)


def write_chain(layer_dir: Path, chain: list[str]) -> None:
    """Write ``layerchain.json`` atomically (a reader never sees half a file)."""
    atomic_write(layer_dir / CHAIN_FILE, encode_chain(chain))


def read_alt_id(layer_dir: Path) -> str | None:
    """The folder name this layer id stands for, or None (any spelling of layerId)."""
    for name in (ALT_ID_FILE, "layerID"):
        try:
            return _decode_alt_id((layer_dir / name).read_bytes(), layer_dir / name)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            return None
    try:
        names = os.listdir(layer_dir)
    except (FileNotFoundError, NotADirectoryError):
        return None
    for name in names:
        if name.lower() == ALT_ID_FILE.lower():
            return _decode_alt_id((layer_dir / name).read_bytes(), layer_dir / name)
    return None


def _decode_alt_id(data: bytes, path: Path) -> str:
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise StoreCorrupt("alternate-ID file is not UTF-8", str(path)) from None
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise StoreCorrupt(f"alternate-ID file names no layer folder ({value!r})", str(path))
    return value


def write_alt_id(layer_dir: Path, folder_name: str) -> None:
    """Make `layer_dir` an alias of the layer folder `folder_name` (its alternate-ID
    file, written durably)."""
    atomic_write(layer_dir / ALT_ID_FILE, folder_name.encode("utf-8"))


def read_record(layer_dir: Path) -> dict[str, Any]:
    """The layer's record (``{}`` for a layer without one)."""
    path = layer_dir / RECORD_FILE
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise StoreCorrupt(f"unreadable layer record ({exc})", str(path)) from None
    if not isinstance(value, dict):
        raise StoreCorrupt("layer record is not a JSON object", str(path))
    return value


def record_bytes(layer_dir: Path, fields: dict[str, Any]) -> bytes:
    """The layer's record with `fields` set and the others kept, as the file holds it."""
    merged = {**read_record(layer_dir), **fields}
    return json.dumps(merged, sort_keys=True).encode()


def update_record(layer_dir: Path, fields: dict[str, Any]) -> None:
    """Set `fields` in the layer's record, keeping the others (durably, see atomic_write)."""
    atomic_write(layer_dir / RECORD_FILE, record_bytes(layer_dir, fields))


def is_imported(layer_dir: Path) -> bool:
    """Whether the layer's record says an import completed (it holds a diffID: the record
    is the last thing an import writes, or is published with the layer)."""
    try:
        return "diff_id" in read_record(layer_dir)
    except StoreCorrupt:
        return False
