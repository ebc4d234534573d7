"""The registry client against the real registry with TLS, basic auth (htpasswd) and
bearer tokens (a token service run by the test), and with docker's credentials."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bcrypt
import jwt
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from winlayer import Driver
from winlayer._registry import RegistryAuthError, RegistryClient, RegistryError
from winlayer._registry_auth import Credentials
from winlayer.archive import MT_OCI_MANIFEST
from winlayer.images import ImageStore, load
from winlayer.registry import push

from .imagebuild import docker_save, push_image, sha
from .layerbuild import base_layer
from .realtools import Registry, start_registry

USER, PASSWORD = "alice", "correct horse"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(certificate, key, CA bundle) for 127.0.0.1 and localhost."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths


@pytest.fixture
def tls_registry(tmp_path: Path, tls_files: tuple[Path, Path, Path]) -> Iterator[Registry]:
    server = start_registry(tmp_path / "registry", tls=tls_files[:2])
    yield server
    server.stop()


def test_https_is_verified_with_the_ca_file(
    tls_registry: Registry, tls_files: tuple[Path, Path, Path]
) -> None:
    with RegistryClient(tls_registry.host, ca_file=str(tls_files[2])) as client:
        assert client.base_url() == f"https://{tls_registry.host}"
        push_image(client, "secure/app", b"layer", "1")
        assert client.get_manifest("secure/app", "1", [MT_OCI_MANIFEST]).data
    # Without the CA the certificate is not trusted; plain HTTP gets no answer either.
    with RegistryClient(tls_registry.host, retries=0) as client:
        with pytest.raises(RegistryError, match="certificate verify failed") as caught:
            client.base_url()
        assert "http: /v2/ answered HTTP 400, not a registry" in str(caught.value)


@pytest.fixture
def htpasswd_registry(tmp_path: Path, tls_files: tuple[Path, Path, Path]) -> Iterator[Registry]:
    users = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    users.write_text(f"{USER}:{hashed}\n")
    server = start_registry(
        tmp_path / "registry",
        tls=tls_files[:2],
        auth={"htpasswd": {"realm": "winlayer-test", "path": str(users)}},
    )
    yield server
    server.stop()


def test_basic_auth(htpasswd_registry: Registry, tls_files: tuple[Path, Path, Path]) -> None:
    ca_file = str(tls_files[2])
    good = Credentials(USER, PASSWORD)
    with RegistryClient(htpasswd_registry.host, ca_file=ca_file, credentials=good) as client:
        manifest = push_image(client, "team/app", b"layer", "1")
        assert client.get_manifest("team/app", "1", [MT_OCI_MANIFEST]) == manifest
    with RegistryClient(htpasswd_registry.host, ca_file=ca_file) as client:
        with pytest.raises(RegistryAuthError, match="needs credentials") as caught:
            client.get_manifest("team/app", "1", [MT_OCI_MANIFEST])
        assert caught.value.status == 401
    bad = Credentials(USER, "wrong")
    with RegistryClient(htpasswd_registry.host, ca_file=ca_file, credentials=bad) as client:
        with pytest.raises(RegistryAuthError, match="HTTP 401") as caught:
            client.get_manifest("team/app", "1", [MT_OCI_MANIFEST])
        assert f"{htpasswd_registry.host}/team/app" in str(caught.value)


class TokenService:
    """A token service as Docker Hub's: GET /token?service=..&scope=.. with optional Basic
    credentials; answers a JWT the registry trusts. Alice gets every action she asks for;
    anonymous callers get pull on ``public/*`` only."""

    SERVICE, ISSUER = "winlayer-registry", "winlayer-test-issuer"

    def __init__(self, folder: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "winlayer test tokens")])
        now = time.time()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - 3600))
            .not_valid_after(_utc(now + 3600))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = folder / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[tuple[str | None, list[str]]] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, request: http.server.BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(request.path).query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ")]
        user = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if (name, password) != (USER, PASSWORD):
                request.send_response(401)
                request.end_headers()
                return
            user = name
        self.requests.append((user, scopes))
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            granted = actions.split(",") if user else ["pull"] * name.startswith("public/")
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": user or "",
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        x5c = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": x5c})
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


@pytest.fixture
def tokens(tmp_path: Path) -> Iterator[TokenService]:
    service = TokenService(tmp_path)
    yield service
    service.close()


@pytest.fixture
def token_registry(tmp_path: Path, tokens: TokenService) -> Iterator[Registry]:
    auth = {
        "token": {
            "realm": tokens.realm,
            "service": tokens.SERVICE,
            "issuer": tokens.ISSUER,
            "rootcertbundle": str(tokens.bundle),
        }
    }
    server = start_registry(tmp_path / "registry", auth=auth)
    yield server
    server.stop()


def test_bearer_tokens_for_the_scopes_each_request_needs(
    token_registry: Registry, tokens: TokenService
) -> None:
    with RegistryClient(token_registry.host, credentials=Credentials(USER, PASSWORD)) as client:
        manifest = push_image(client, "team/app", b"layer bytes", "1")
        assert client.get_manifest("team/app", "1", [MT_OCI_MANIFEST]) == manifest
        assert client.get_blob("team/app", sha(b"layer bytes")) == b"layer bytes"
    assert {user for user, _ in tokens.requests} == {USER}
    asked = {scope for _, scopes in tokens.requests for scope in scopes}
    assert "repository:team/app:pull,push" in asked
    assert "repository:team/app:pull" in asked
    # A token is fetched once per scope, not once per request.
    assert len(tokens.requests) <= 3


def test_anonymous_bearer_access_is_refused_where_the_service_grants_nothing(
    token_registry: Registry, tokens: TokenService
) -> None:
    with RegistryClient(token_registry.host, credentials=Credentials(USER, PASSWORD)) as client:
        push_image(client, "team/app", b"layer", "1")
    with RegistryClient(token_registry.host) as client:
        with pytest.raises(RegistryAuthError, match="no credentials were given") as caught:
            client.get_manifest("team/app", "1", [MT_OCI_MANIFEST])
        assert caught.value.status == 401
    assert tokens.requests[-1] == (None, ["repository:team/app:pull"])


def test_push_uses_dockers_credentials(
    htpasswd_registry: Registry,
    tls_files: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive, config = docker_save([base_layer()], tags=["app:1"])
    (tmp_path / "in.tar").write_bytes(archive)
    driver = Driver(tmp_path / "home", backend="portable", base_images=tmp_path / "base")
    with ImageStore(driver.home) as store:
        load(driver, store, tmp_path / "in.tar")
        dest = f"{htpasswd_registry.host}/team/app:1"
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        with pytest.raises(RegistryAuthError, match="no credentials were given"):
            push(driver, store, "app:1", dest, ca_file=str(tls_files[2]))
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (tmp_path / "docker").mkdir()
        (tmp_path / "docker" / "config.json").write_text(
            json.dumps({"auths": {htpasswd_registry.host: {"auth": auth}}})
        )
        pushed = push(driver, store, "app:1", dest, ca_file=str(tls_files[2]))
    assert pushed.image_id == sha(config)
