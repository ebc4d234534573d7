"""The registry commands: ``pull`` and ``push``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._cli_common import (
    Arg,
    UsageError,
    command,
    emit,
    image_store,
    jobs,
    jobs_arg,
    layer_progress,
    short_id,
)
from ._common import LayerEvent, lazy_module

if TYPE_CHECKING:
    from . import registry
else:
    registry = lazy_module("winlayer.registry")

#: What a layer's last state says in the summary, as docker's push and pull print it.
_PUSHED = {
    "done": "Pushed",
    "exists": "Layer already exists",
    "mounted": "Mounted from another repository",
}
_PULLED = {"done": "Pull complete", "exists": "Already exists"}

REGISTRY_ARGS = (
    Arg("--username", "-u", metavar="NAME", help="log in as NAME (password on stdin)"),
    Arg(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (the default with --username)",
    ),
    Arg("--insecure", action="store_true", help="allow plain HTTP and unverified HTTPS"),
    Arg("--ca-file", metavar="FILE", help="CA certificates to verify the registry with"),
    jobs_arg(
        "blobs at a time, and layers imported at a time up to the number of cores (default 4)", 4
    ),
)


def password_from_stdin(args: argparse.Namespace) -> str | None:
    """The password for --username, read from stdin (never from a flag: it would show in
    the process list), as ``docker login --password-stdin``."""
    if args.username is None:
        if args.password_stdin:
            raise UsageError("--password-stdin needs --username")
        return None
    if sys.stdin.isatty():
        raise UsageError("--username reads the password from stdin; pipe it in")
    return sys.stdin.readline().rstrip("\r\n")


def registry_options(args: argparse.Namespace) -> dict[str, Any]:
    n = jobs(args)
    return {
        "username": args.username,
        "password": password_from_stdin(args),
        "insecure": args.insecure,
        "ca_file": args.ca_file,
        "jobs": n,
    }


@contextlib.contextmanager
def _tracked(
    args: argparse.Namespace, last: dict[str, str]
) -> Iterator[Callable[[LayerEvent], None]]:
    """The layer events callback of a pull or push: drawn (see ``layer_progress``), and
    each layer's last state kept in `last` (digest -> state, in order of first event)."""
    with layer_progress(args.json) as draw:

        def on_layer(event: LayerEvent) -> None:
            last[event.digest] = event.state
            draw(event)

        yield on_layer


@command(
    "pull",
    "pull an image from a registry (download, verify and import overlapped)",
    Arg("ref", metavar="REF", help="REGISTRY/NAME[:TAG][@sha256:DIGEST]"),
    Arg("--platform", metavar="OS/ARCH[:VERSION]", help="the image of a multi-platform index"),
    Arg(
        "--foreign-layers",
        action="store_true",
        help="fetch foreign (non-distributable) layers from the URLs their descriptors name",
    ),
    *REGISTRY_ARGS,
)
def _pull(args: argparse.Namespace) -> None:
    options = registry_options(args)
    last: dict[str, str] = {}
    with image_store(args) as (driver, store), _tracked(args, last) as on_layer:
        pulled = registry.pull(
            driver,
            store,
            args.ref,
            platform=args.platform,
            foreign_layers=args.foreign_layers,
            on_layer=on_layer,
            **options,
        )
    image = pulled.image
    lines = [f"{short_id(d)}: {_PULLED.get(s, s)}" for d, s in last.items()]
    lines.append(f"Digest: {pulled.digest}")
    lines.append(f"Platform: {pulled.platform}")
    named = ", ".join(image.tags) or f"sha256:{image.id}"
    state = "Downloaded newer image" if pulled.downloaded else "Image is up to date"
    lines.append(f"Status: {state} for {named}")
    result = {
        "reference": pulled.reference,
        "digest": pulled.digest,
        "image_id": f"sha256:{image.id}",
        "tags": list(image.tags),
        "platform": pulled.platform.as_dict(),
        "downloaded": pulled.downloaded,
        "layers": [{"digest": d, "state": s} for d, s in last.items()],
    }
    emit(args, result, "\n".join(lines))


@command(
    "push",
    "push an image to a registry (its layers as the original tars: digests unchanged)",
    Arg("image", help="a tag or id in the store"),
    Arg("dest", nargs="?", help="where to push (default: IMAGE, a full reference)"),
    *REGISTRY_ARGS,
)
def _push(args: argparse.Namespace) -> None:
    options = registry_options(args)
    last: dict[str, str] = {}
    with image_store(args) as (driver, store), _tracked(args, last) as on_layer:
        pushed = registry.push(driver, store, args.image, args.dest, on_layer=on_layer, **options)
    layers = [{"digest": d, "state": s} for d, s in last.items()]
    lines = [f"{short_id(d)}: {_PUSHED.get(s, s)}" for d, s in last.items()]
    tag = pushed.reference.rpartition(":")[2] if "@" not in pushed.reference else pushed.digest
    lines.append(f"{tag}: digest: {pushed.digest} size: {pushed.size}")
    result = {
        "reference": pushed.reference,
        "digest": pushed.digest,
        "size": pushed.size,
        "image_id": pushed.image_id,
        "layers": layers,
    }
    emit(args, result, "\n".join(lines))
