"""A client of the OCI distribution API (``/v2/``), over urllib3.

One :class:`RegistryClient` per registry host: a connection pool shared by the threads
that use it, a per-request timeout, retries with exponential backoff on connection errors,
429 and 5xx (honouring ``Retry-After``), and authentication as docker has it (see
:mod:`winlayer._registry_auth`): a 401 is answered once per request with the credentials
or a bearer token for the scopes the request needs, and tokens are cached by scope.

HTTPS is the default, verified against the system's CA store or ``ca_file``. Plain HTTP is
used only for a loopback registry (``localhost``, 127.0.0.0/8, ``::1``) or with
``insecure=True``, and then only when HTTPS does not answer, as docker does.

Blob bodies are not held: :meth:`RegistryClient.open_blob` returns a stream that reads
from the socket and, when the connection breaks, asks again from where it stopped with
``Range``. Digests are not checked here: the caller hashes what it reads (the import
pipeline does, before anything is committed).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from ._common import CHUNK
from ._registry_auth import Challenge, Credentials, parse_challenges, parse_token, token_request
from .errors import WinlayerError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 5
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
MANIFEST_LIMIT = 4 << 20  # distribution refuses larger manifests too
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_REDIRECTS = 10
NO_CREDENTIALS = "no credentials were given (log in with docker, or pass --username)"


class RegistryError(WinlayerError):
    """A registry request failed; names the registry, repository, digest or tag, and the
    HTTP status (0 when no answer came)."""

    def __init__(
        self,
        message: str,
        *,
        registry: str,
        repository: str | None = None,
        digest: str | None = None,
        tag: str | None = None,
        status: int = 0,
    ) -> None:
        where = registry + (f"/{repository}" if repository else "") + (f":{tag}" if tag else "")
        what = f" {digest}" if digest else ""
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"{where}{what}: {message}{code}")
        self.registry = registry
        self.repository = repository
        self.digest = digest
        self.tag = tag
        self.status = status


class RegistryNotFound(RegistryError, LookupError):
    """The registry has no such repository, manifest or blob (404)."""


class RegistryAuthError(RegistryError, PermissionError):
    """The registry refused the credentials, or none were given where needed (401/403)."""


@dataclass(frozen=True)
class Manifest:
    media_type: str
    digest: str
    data: bytes


def is_loopback(host: str) -> bool:
    """Whether host[:port] names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    name = urlsplit("//" + host).hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """Requests to one registry (``host[:port]``); thread-safe."""

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        ca_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        max_connections: int = 8,
    ) -> None:
        self.host = host
        self.credentials = credentials
        self.insecure = insecure
        self.plain_http_allowed = insecure or is_loopback(host)
        self.timeout = timeout
        self.retries = retries
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            block=False,
            ca_certs=ca_file,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
        self._lock = threading.Lock()
        self._base: str | None = None  # "https://host" or "http://host", once known
        self._tokens: dict[str, str] = {}  # scope set -> bearer token
        self._challenge: Challenge | None = None

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------

    def base_url(self) -> str:
        """``https://host`` (or ``http://host`` where plain HTTP is allowed and HTTPS does not
        answer), found with a request for ``/v2/``."""
        with self._lock:
            if self._base is not None:
                return self._base
        schemes = ["https", "http"] if self.plain_http_allowed else ["https"]
        failures: list[str] = []
        for scheme in schemes:
            try:
                response = self._pool.request(
                    "GET", f"{scheme}://{self.host}/v2/", preload_content=True, redirect=False
                )
            except Urllib3Error as exc:
                failures.append(f"{scheme}: {_reason(exc)}")
                log.info("%s://%s does not answer: %s", scheme, self.host, exc)
                continue
            if response.status in (200, 401):
                with self._lock:
                    self._base = f"{scheme}://{self.host}"
                    if response.status == 401:
                        self._challenge = _first_challenge(response.headers)
                return self._base
            failures.append(f"{scheme}: /v2/ answered HTTP {response.status}, not a registry")
        hint = "" if self.plain_http_allowed else " (plain HTTP needs --insecure)"
        raise RegistryError(f"cannot connect: {'; '.join(failures)}{hint}", registry=self.host)

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        repository: str | None = None,
        digest: str | None = None,
        tag: str | None = None,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
    ) -> Any:
        """Send a request (a path under the registry, or an absolute URL it gave, such as
        an upload location) with retries and authentication; the urllib3 response, its body
        read unless `stream`. A status outside `ok` raises :class:`RegistryError`."""
        url = path if "://" in path else self.base_url() + path
        attempt = 0
        authenticated = False
        while True:
            sent = dict(headers or {})
            auth = self._authorization(scope)
            if auth:
                sent["Authorization"] = auth
            try:
                response = self._send(method, url, sent, body)
            except Urllib3Error as exc:
                if attempt < self.retries:
                    attempt += 1
                    self._backoff(attempt, None, f"{method} {url}: {exc}")
                    continue
                raise RegistryError(
                    f"{method} failed: {exc}",
                    registry=self.host,
                    repository=repository,
                    digest=digest,
                ) from None
            if response.status == 401 and scope and not authenticated:
                challenge = _first_challenge(response.headers)
                response.drain_conn()
                if challenge is not None:
                    self._authenticate(challenge, scope, repository)
                    authenticated = True
                    continue
            if response.status in _RETRY_STATUS and attempt < self.retries:
                attempt += 1
                retry_after = response.headers.get("Retry-After")
                response.drain_conn()
                self._backoff(attempt, retry_after, f"{method} {url}: HTTP {response.status}")
                continue
            if response.status not in ok:
                raise self._error(response, method, repository, digest, tag)
            if not stream:
                response.read()
            return response

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Any:
        """One request, following redirects by hand: a redirect to another host (a blob
        store) does not carry the registry's credentials."""
        for _ in range(_MAX_REDIRECTS):
            response = self._pool.request(
                method,
                url,
                headers=headers,
                body=body,
                preload_content=False,
                decode_content=False,
                redirect=False,
            )
            if response.status not in (301, 302, 303, 307, 308):
                return response
            location = response.headers.get("Location")
            response.drain_conn()
            if not location:
                return response
            target = urljoin(url, location)
            if urlsplit(target).netloc != urlsplit(url).netloc:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status == 303:
                method, body = "GET", None
            url = target
        raise RegistryError(f"more than {_MAX_REDIRECTS} redirects", registry=self.host)

    def _backoff(self, attempt: int, retry_after: str | None, why: str) -> None:
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2  # jitter: many clients do not retry in step
        if retry_after:
            delay = max(delay, _retry_after_seconds(retry_after))
        log.info("%s; retry %d of %d in %.1f s", why, attempt, self.retries, delay)
        time.sleep(min(delay, BACKOFF_MAX_S))

    def _error(
        self,
        response: Any,
        method: str,
        repository: str | None,
        digest: str | None,
        tag: str | None,
    ) -> RegistryError:
        detail = _error_detail(response)
        kind: type[RegistryError] = RegistryError
        if response.status == 404:
            kind = RegistryNotFound
        elif response.status in (401, 403):
            kind = RegistryAuthError
            if self.credentials is None:
                detail += f"; {NO_CREDENTIALS}"
        return kind(
            f"{method} refused: {detail}",
            registry=self.host,
            repository=repository,
            digest=digest,
            tag=tag,
            status=int(response.status),
        )

    # -- auth ---------------------------------------------------------------------------

    def _authorization(self, scope: str) -> str | None:
        if not scope:  # a URL outside the registry (a foreign layer): never our credentials
            return None
        with self._lock:
            challenge = self._challenge
            token = self._tokens.get(scope)
        if challenge is None:
            return None
        if challenge.scheme == "bearer":
            return f"Bearer {token}" if token else None
        if challenge.scheme == "basic" and self.credentials is not None:
            return self.credentials.basic()
        return None

    def _authenticate(self, challenge: Challenge, scope: str, repository: str | None) -> None:
        with self._lock:
            self._challenge = challenge
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise RegistryAuthError(
                    f"the registry needs credentials; {NO_CREDENTIALS}",
                    registry=self.host,
                    repository=repository,
                    status=401,
                )
            return
        if challenge.scheme != "bearer":
            raise RegistryAuthError(
                f"unsupported authentication scheme {challenge.scheme!r}",
                registry=self.host,
                repository=repository,
                status=401,
            )
        scopes = [challenge.params["scope"]] if "scope" in challenge.params else []
        scopes = sorted(set(scopes + scope.split()))
        req = token_request(challenge, scopes, self.credentials)
        try:
            response = self._pool.request(
                req.method, req.url, headers=req.headers, body=req.body, redirect=True
            )
        except Urllib3Error as exc:
            raise RegistryAuthError(
                f"token service {req.url.split('?')[0]} failed: {exc}",
                registry=self.host,
                repository=repository,
            ) from None
        if response.status != 200:
            raise RegistryAuthError(
                f"token service {challenge.params.get('realm')} refused: {_error_detail(response)}",
                registry=self.host,
                repository=repository,
                status=int(response.status),
            )
        token = parse_token(response.data, challenge.params.get("realm", ""))
        with self._lock:
            self._tokens[scope] = token

    # -- the API ------------------------------------------------------------------------

    def get_manifest(self, repository: str, target: str, accept: list[str]) -> Manifest:
        """The manifest or index named by a tag or digest, at most 4 MiB. A digest target
        is checked here (the bytes are small and the caller trusts them next)."""
        response = self.request(
            "GET",
            f"/v2/{repository}/manifests/{target}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": ", ".join(accept)},
            repository=repository,
            digest=target if target.startswith("sha256:") else None,
            tag=None if target.startswith("sha256:") else target,
            stream=True,
        )
        data = _read_limited(response, MANIFEST_LIMIT, self.host, repository, target)
        media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        digest = "sha256:" + _sha256(data)
        if target.startswith("sha256:") and digest != target:
            raise RegistryError(
                f"manifest content does not match its digest (it is {digest})",
                registry=self.host,
                repository=repository,
                digest=target,
            )
        if not media_type or media_type in ("application/json", "text/plain"):
            media_type = _media_type_of(data)
        return Manifest(media_type, digest, data)

    def blob_exists(self, repository: str, digest: str) -> int | None:
        """The blob's size if the registry has it in `repository`, else None."""
        response = self.request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=f"repository:{repository}:pull",
            repository=repository,
            digest=digest,
            ok=(200, 404),
        )
        if response.status == 404:
            return None
        length = response.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    def get_blob(self, repository: str, digest: str, limit: int = MANIFEST_LIMIT) -> bytes:
        """A small blob (a config), whole, at most `limit` bytes; checked against `digest`."""
        with self.open_blob(repository, digest) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise RegistryError(
                f"blob is larger than {limit} bytes",
                registry=self.host,
                repository=repository,
                digest=digest,
            )
        actual = "sha256:" + _sha256(data)
        if actual != digest:
            raise RegistryError(
                f"blob content does not match its digest (it is {actual})",
                registry=self.host,
                repository=repository,
                digest=digest,
            )
        return data

    def open_blob(
        self, repository: str, digest: str, *, offset: int = 0, url: str | None = None
    ) -> BlobStream:
        """A stream of the blob's bytes from `offset`, resumed with ``Range`` when the
        connection breaks. `url` fetches it from there instead (a foreign layer's URL:
        HTTPS unless the client is insecure; no registry credentials are sent)."""
        if url is not None:
            scheme = urlsplit(url).scheme
            if scheme != "https" and not (scheme == "http" and self.insecure):
                raise RegistryError(
                    f"foreign layer URL {url!r} is not HTTPS (plain HTTP needs --insecure)",
                    registry=self.host,
                    repository=repository,
                    digest=digest,
                )
        return BlobStream(self, repository, digest, offset, url)

    # -- push ---------------------------------------------------------------------------

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Ask the registry to link a blob it holds in `source` into `repository`; True if
        it did. When it does not, the upload session it opens is cancelled."""
        response = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}",
            scope=f"repository:{repository}:pull,push repository:{source}:pull",
            repository=repository,
            digest=digest,
            ok=(201, 202),
        )
        if response.status == 201:
            return True
        location = response.headers.get("Location")
        if location:  # an upload session we will not use
            with contextlib.suppress(RegistryError):
                self.request(
                    "DELETE",
                    self._absolute(location),
                    scope=f"repository:{repository}:pull,push",
                    repository=repository,
                    ok=(204, 404),
                )
        return False

    def upload_blob(
        self,
        repository: str,
        digest: str,
        chunks: Iterator[bytes],
        *,
        monolithic: bool,
    ) -> None:
        """Upload a blob: in one PUT (the chunks joined: for small blobs), or in PATCH
        requests, one per chunk, then a closing PUT with the digest."""
        scope = f"repository:{repository}:pull,push"
        start = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scope=scope,
            repository=repository,
            digest=digest,
            ok=(202,),
        )
        location = self._location(start, repository, digest)
        if monolithic:
            body = b"".join(chunks)
            self.request(
                "PUT",
                _with_query(location, f"digest={digest}"),
                scope=scope,
                headers={"Content-Type": "application/octet-stream"},
                body=body,
                repository=repository,
                digest=digest,
                ok=(201,),
            )
            return
        offset = 0
        for chunk in chunks:
            answer = self.request(
                "PATCH",
                location,
                scope=scope,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                },
                body=chunk,
                repository=repository,
                digest=digest,
                ok=(202,),
            )
            offset += len(chunk)
            location = self._location(answer, repository, digest)
        self.request(
            "PUT",
            _with_query(location, f"digest={digest}"),
            scope=scope,
            repository=repository,
            digest=digest,
            ok=(201,),
        )

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store a manifest under a tag or its digest; the digest the registry reports."""
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull,push",
            headers={"Content-Type": manifest.media_type},
            body=manifest.data,
            repository=repository,
            digest=manifest.digest,
            ok=(201,),
        )
        reported = response.headers.get("Docker-Content-Digest")
        if reported and reported != manifest.digest:
            raise RegistryError(
                f"stored the manifest as {reported}",
                registry=self.host,
                repository=repository,
                digest=manifest.digest,
            )
        return manifest.digest

    def _location(self, response: Any, repository: str, digest: str) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                "upload answer has no Location",
                registry=self.host,
                repository=repository,
                digest=digest,
                status=int(response.status),
            )
        return self._absolute(location)

    def _absolute(self, location: str) -> str:
        return urljoin(self.base_url() + "/", location)


class BlobStream(io.RawIOBase):
    """A blob body read from the socket; a broken connection is resumed from the byte it
    stopped at (``Range: bytes=N-``), up to the client's retry count in a row."""

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        digest: str,
        offset: int,
        url: str | None = None,
    ) -> None:
        super().__init__()
        self._url = url
        self._client = client
        self._repository = repository
        self._digest = digest
        self.position = offset
        self.length: int | None = None  # the whole blob's size, once an answer says it
        self._response: Any = None
        self._failures = 0
        self._open()

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        headers = {"Range": f"bytes={self.position}-"} if self.position else {}
        response = self._client.request(
            "GET",
            self._url or f"/v2/{self._repository}/blobs/{self._digest}",
            scope="" if self._url else f"repository:{self._repository}:pull",
            headers=headers,
            repository=self._repository,
            digest=self._digest,
            ok=(200, 206),
            stream=True,
        )
        if self.position and response.status == 200:
            # No range support: the whole body again; skip what was read already.
            self._skip(response, self.position)
        elif response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != self.position:
                response.drain_conn()
                raise RegistryError(
                    f"asked for bytes from {self.position}, got a range from {start}",
                    registry=self._client.host,
                    repository=self._repository,
                    digest=self._digest,
                    status=206,
                )
            self.length = total
        else:
            length = response.headers.get("Content-Length")
            self.length = int(length) if length and length.isdigit() else None
        self._response = response

    def _skip(self, response: Any, count: int) -> None:
        left = count
        while left:
            data = response.read(min(left, CHUNK))
            if not data:
                raise RegistryError(
                    "the blob ended before the bytes already read",
                    registry=self._client.host,
                    repository=self._repository,
                    digest=self._digest,
                )
            left -= len(data)
        length = response.headers.get("Content-Length")
        self.length = int(length) if length and length.isdigit() else None

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            try:
                data = self._response.read(len(view))
            except (Urllib3Error, OSError) as exc:
                data = None
                reason: object = exc
            else:
                if data or self.length is None or self.position >= self.length:
                    break
                reason = f"connection closed at byte {self.position} of {self.length}"
            self._failures += 1
            if self._failures > self._client.retries:
                raise RegistryError(
                    f"download failed at byte {self.position}: {reason}",
                    registry=self._client.host,
                    repository=self._repository,
                    digest=self._digest,
                )
            log.info("blob %s: %s; resuming at byte %d", self._digest[:19], reason, self.position)
            self._response.release_conn()
            self._client._backoff(self._failures, None, f"blob {self._digest}")
            self._open()
        n = len(data)
        view[:n] = data
        self.position += n
        if n:
            self._failures = 0
        return n

    def close(self) -> None:
        if self._response is not None and not self.closed:
            self._response.release_conn()
        super().close()


# -- helpers ------------------------------------------------------------------------------


def _first_challenge(headers: Any) -> Challenge | None:
    values = headers.getlist("WWW-Authenticate") if hasattr(headers, "getlist") else []
    for value in values:
        for challenge in parse_challenges(value):
            if challenge.scheme in ("bearer", "basic"):
                return challenge
    return None


def _reason(exc: Exception) -> str:
    """What went wrong with a connection, without urllib3's pool and retry wrapping."""
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc)


def _with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


def _retry_after_seconds(value: str) -> float:
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


def _content_range(value: str) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    try:
        unit, _, spec = value.partition(" ")
        span, _, total = spec.partition("/")
        start = int(span.split("-")[0])
        if unit != "bytes":
            raise ValueError(value)
        return start, int(total) if total.isdigit() else None
    except ValueError:
        return -1, None


def _error_detail(response: Any) -> str:
    """The registry's error message (distribution's ``errors`` JSON), else the reason."""
    try:
        body = response.data[:65536] if response.data is not None else b""
    except Urllib3Error:
        body = b""
    try:
        doc = json.loads(body)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            return "; ".join(
                f"{e.get('code', '?')}: {e.get('message', '')}".strip()
                for e in errors
                if isinstance(e, dict)
            )
    except ValueError:
        pass
    return str(response.reason or f"HTTP {response.status}")


def _read_limited(response: Any, limit: int, host: str, repository: str, target: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in _chunks(response):
        size += len(chunk)
        if size > limit:
            response.drain_conn()
            raise RegistryError(
                f"manifest is larger than {limit} bytes",
                registry=host,
                repository=repository,
                digest=target,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _chunks(response: Any) -> Iterator[bytes]:
    while chunk := response.read(CHUNK):
        yield chunk


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _media_type_of(data: bytes) -> str:
    """A manifest's own ``mediaType`` field, for registries that answer with a generic
    Content-Type."""
    try:
        doc = json.loads(data)
    except ValueError:
        return ""
    value = doc.get("mediaType") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else ""
