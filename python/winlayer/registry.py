"""Registries: ``pull`` and ``push`` of Windows images over the OCI distribution API.

A reference names the registry (``127.0.0.1:5000/app:1``, ``mcr.microsoft.com/...``;
none is Docker Hub). Credentials, in this order: the ones given (``username`` and
``password``), then docker's (``~/.docker/config.json``: credential helpers, then
``auths``), else none (anonymous, or a bearer token without credentials). HTTPS is
verified with the system's CA store or `ca_file`; plain HTTP is tried only for a loopback
registry or with `insecure`, as docker does.
"""

from __future__ import annotations

from ._common import LayerEvents
from ._platform import Platform, parse_platform
from ._pull import Pulled
from ._pull import pull as _pull
from ._push import DEFAULT_JOBS, Pushed
from ._push import push as _push
from ._reference import Reference, parse
from ._registry import RegistryAuthError, RegistryClient, RegistryError, RegistryNotFound
from ._registry_auth import AuthError, Credentials, docker_credentials
from .driver import Driver
from .imagestore import ImageStore


def credentials_for(
    registry: str, username: str | None = None, password: str | None = None
) -> Credentials | None:
    """The credentials to use for `registry`: the given ones, else docker's, else None."""
    if username is not None or password is not None:
        return Credentials(username or "", password or "")
    return docker_credentials(registry)


def client_for(
    ref: Reference,
    *,
    username: str | None = None,
    password: str | None = None,
    insecure: bool = False,
    ca_file: str | None = None,
) -> RegistryClient:
    """A client of the registry `ref` names, with the credentials for it."""
    return RegistryClient(
        ref.api_host,
        credentials=credentials_for(ref.registry, username, password),
        insecure=insecure,
        ca_file=ca_file,
    )


def pull(
    driver: Driver,
    store: ImageStore,
    ref: str,
    *,
    platform: str | Platform | None = None,
    username: str | None = None,
    password: str | None = None,
    insecure: bool = False,
    ca_file: str | None = None,
    jobs: int = DEFAULT_JOBS,
    foreign_layers: bool = False,
    on_layer: LayerEvents | None = None,
) -> Pulled:
    """Pull `ref` (``REGISTRY/NAME[:TAG][@DIGEST]``; a digest is verified) into `driver`
    and `store` and tag it ``NAME:TAG`` (not when pulled by digest). From a multi-platform
    index, the image for `platform` (``os/arch[:os.version]``), by default the host's as
    containerd's Windows matcher chooses it. Layers the store has are not downloaded.
    Foreign layers are fetched from their URLs only with `foreign_layers`."""
    target = parse(ref)
    wanted = parse_platform(platform) if isinstance(platform, str) else platform
    with client_for(
        target, username=username, password=password, insecure=insecure, ca_file=ca_file
    ) as client:
        return _pull(
            driver,
            store,
            target,
            client,
            platform=wanted,
            jobs=jobs,
            allow_foreign=foreign_layers,
            on_layer=on_layer,
        )


def push(
    driver: Driver,
    store: ImageStore,
    image: str,
    dest: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    insecure: bool = False,
    ca_file: str | None = None,
    jobs: int = DEFAULT_JOBS,
    on_layer: LayerEvents | None = None,
) -> Pushed:
    """Push `image` (a tag or id in `store`) to `dest` (default: `image` itself, which
    must then be a full reference). Blobs the repository has are not sent again; one this
    store pushed to another repository of the registry is mounted from there."""
    target = parse(dest if dest is not None else image)
    with client_for(
        target, username=username, password=password, insecure=insecure, ca_file=ca_file
    ) as client:
        return _push(driver, store, image, target, client, jobs=jobs, on_layer=on_layer)


__all__ = [
    "AuthError",
    "Credentials",
    "Pulled",
    "Pushed",
    "Reference",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFound",
    "client_for",
    "credentials_for",
    "parse",
    "pull",
    "push",
]
