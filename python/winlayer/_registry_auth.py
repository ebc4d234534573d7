"""Registry credentials and authentication challenges, as docker has them.

Credentials come from the caller (``--username`` with the password on stdin) or from
docker's config file (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
``credHelpers[<registry>]``, else ``credsStore``, run as ``docker-credential-<name> get``
(the server on stdin, JSON on stdout), else the ``auths`` entry (``auth`` base64
``user:password``, or ``identitytoken``). A registry answers 401 with a
``WWW-Authenticate`` challenge: ``Basic`` (send the credentials) or ``Bearer`` (ask its
token service for a token with the scopes the request needs). This module holds no HTTP:
the client (:mod:`winlayer._registry`) sends what it describes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from ._reference import DOCKER_HUB
from .errors import WinlayerError

#: The key docker's config uses for Docker Hub.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
HELPER_TIMEOUT_S = 60.0
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*(?=\s*(?:,|$))")


class AuthError(WinlayerError):
    """Credentials could not be found, read or used (the message says where)."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password for a registry, or an OAuth2 refresh token."""

    username: str = ""
    password: str = field(default="", repr=False)
    #: An OAuth2 refresh token (docker's ``identitytoken``), exchanged at the token service.
    identity_token: str = field(default="", repr=False)

    def basic(self) -> str:
        """The value of a Basic ``Authorization`` header."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "basic", "bearer"
    params: dict[str, str]


# -- docker's config ----------------------------------------------------------------------


def docker_config_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG")
    return (Path(folder) if folder else Path.home() / ".docker") / "config.json"


def _config_keys(registry: str) -> list[str]:
    """The `auths` keys that can name `registry`."""
    if registry == DOCKER_HUB:
        return [DOCKER_HUB_CONFIG_KEY, "docker.io", "index.docker.io", "registry-1.docker.io"]
    return [registry]


def _key_host(key: str) -> str:
    """An `auths` key as the host[:port] it names (keys may be URLs)."""
    return urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]


def docker_credentials(registry: str, config: Path | None = None) -> Credentials | None:
    """The credentials docker would use for `registry` (host[:port]); None if none."""
    path = config or docker_config_path()
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot read docker's config {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise AuthError(f"docker's config {path} is not a JSON object")
    keys = _config_keys(registry)
    helpers = doc.get("credHelpers")
    helper = None
    if isinstance(helpers, dict):
        helper = next((helpers[k] for k in keys if isinstance(helpers.get(k), str)), None)
    if helper is None and isinstance(doc.get("credsStore"), str):
        helper = doc["credsStore"]
    if helper:
        found = helper_credentials(helper, keys[0])
        if found is not None:
            return found
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return None
    wanted = {_key_host(k) for k in keys}
    for key, entry in auths.items():
        if _key_host(key) in wanted and isinstance(entry, dict):
            return _auths_entry(entry, path, key)
    return None


def _auths_entry(entry: dict[str, Any], path: Path, key: str) -> Credentials | None:
    token = entry.get("identitytoken")
    encoded = entry.get("auth")
    username, password = entry.get("username", ""), entry.get("password", "")
    if isinstance(encoded, str) and encoded:
        try:
            username, sep, password = (
                base64.b64decode(encoded, validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise AuthError(f"docker's config {path}: auths[{key!r}].auth is not base64 user:pass")
    if isinstance(token, str) and token:
        return Credentials(username=str(username), identity_token=token)
    if username or password:
        return Credentials(str(username), str(password))
    return None


def helper_credentials(helper: str, server: str) -> Credentials | None:
    """Ask ``docker-credential-<helper>`` for `server`'s credentials (None: it has none)."""
    program = f"docker-credential-{helper}"
    if shutil.which(program) is None:
        raise AuthError(f"docker's config names the credential helper {program}, not on PATH")
    try:
        done = subprocess.run(
            [program, "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"{program} get failed: {exc}") from None
    if done.returncode != 0:
        message = (done.stdout or done.stderr).strip()
        if "credentials not found" in message.lower():
            return None
        raise AuthError(f"{program} get exited {done.returncode}: {message}")
    try:
        doc = json.loads(done.stdout)
        username, secret = str(doc.get("Username", "")), str(doc.get("Secret", ""))
    except (ValueError, AttributeError):
        raise AuthError(f"{program} get printed no credentials JSON") from None
    if username == "<token>":  # docker's marker for an identity token
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


# -- challenges ---------------------------------------------------------------------------

_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(,|$)')


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` value (RFC 7235: a scheme, then a token68
    or comma-separated ``name=value`` parameters, values plain or quoted)."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        match = re.match(r"([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s*", rest)
        if not match:
            break
        scheme = match.group(1).lower()
        rest = rest[match.end() :]
        params: dict[str, str] = {}
        token = _TOKEN68.match(rest)
        if token:  # the token68 form: no parameters
            rest = rest[token.end() :]
        while rest and not token:
            param = _PARAM.match(rest)
            if not param:
                break
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            rest = rest[param.end() :]
        challenges.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return challenges


@dataclass(frozen=True)
class TokenRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def token_request(
    challenge: Challenge, scopes: list[str], credentials: Credentials | None
) -> TokenRequest:
    """The request for a bearer token: a GET with Basic credentials (or anonymous), or,
    with an identity token, the OAuth2 refresh-token POST docker makes."""
    realm = challenge.params.get("realm")
    if not realm or urlsplit(realm).scheme not in ("http", "https"):
        raise AuthError(f"bearer challenge without a usable realm: {challenge.params!r}")
    service = challenge.params.get("service")
    if credentials is not None and credentials.identity_token:
        form: list[tuple[str, str]] = [
            ("grant_type", "refresh_token"),
            ("refresh_token", credentials.identity_token),
            ("client_id", "winlayer"),
        ]
        if service:
            form.append(("service", service))
        form.append(("scope", " ".join(scopes)))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return TokenRequest("POST", realm, headers, urlencode(form).encode())
    query = [("service", service)] if service else []
    query += [("scope", s) for s in scopes]
    separator = "&" if "?" in realm else "?"
    url = realm + (separator + urlencode(query) if query else "")
    headers = {}
    if credentials is not None and (credentials.username or credentials.password):
        headers["Authorization"] = credentials.basic()
    return TokenRequest("GET", url, headers, None)


def parse_token(body: bytes, realm: str) -> str:
    """The bearer token of a token service's answer (``token`` or ``access_token``)."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    token = None
    if isinstance(doc, dict):
        token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise AuthError(f"the token service {realm} answered without a token")
    return token
