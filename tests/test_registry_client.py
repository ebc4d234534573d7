"""The distribution API client (winlayer._registry) against the real registry."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from winlayer._registry import (
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    is_loopback,
)
from winlayer.archive import MT_OCI_MANIFEST

from .imagebuild import push_image, sha
from .realtools import Registry


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture
def client(registry: Registry) -> Iterator[RegistryClient]:
    with RegistryClient(registry.host, retries=2) as c:
        yield c


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost:5000", True),
        ("127.0.0.1", True),
        ("127.8.9.10:443", True),
        ("[::1]:5000", True),
        ("registry.example.com", False),
        ("10.0.0.1:5000", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_plain_http_is_used_for_loopback_only(registry: Registry, client: RegistryClient) -> None:
    assert client.base_url() == registry.url  # HTTPS did not answer; loopback may use HTTP
    # The same server under a name that is not loopback: HTTPS only, and it fails clearly.
    port = registry.host.split(":")[1]
    with (
        RegistryClient(f"registry.invalid:{port}", retries=0) as other,
        pytest.raises(RegistryError, match="plain HTTP needs --insecure"),
    ):
        other.base_url()


def test_blobs_upload_monolithic_and_chunked(client: RegistryClient) -> None:
    small, large = b"config bytes", os.urandom(3 << 20)
    client.upload_blob("app/one", sha(small), iter([small]), monolithic=True)
    client.upload_blob("app/one", sha(large), chunks_of(large, 1 << 20), monolithic=False)
    assert client.blob_exists("app/one", sha(small)) == len(small)
    assert client.blob_exists("app/one", sha(large)) == len(large)
    assert client.get_blob("app/one", sha(small)) == small
    with client.open_blob("app/one", sha(large)) as stream:
        assert stream.read() == large
    with client.open_blob("app/one", sha(large), offset=1000) as stream:
        assert stream.read() == large[1000:]


def test_a_blob_another_repository_has_is_mounted(client: RegistryClient) -> None:
    data = os.urandom(1000)
    client.upload_blob("app/one", sha(data), iter([data]), monolithic=True)
    assert client.blob_exists("app/two", sha(data)) is None
    assert client.mount_blob("app/two", sha(data), "app/one") is True
    assert client.blob_exists("app/two", sha(data)) == len(data)
    missing = sha(b"never uploaded")
    assert client.mount_blob("app/two", missing, "app/one") is False


def test_missing_blob_names_registry_repository_digest_and_status(
    registry: Registry, client: RegistryClient
) -> None:
    missing = sha(b"not there")
    with pytest.raises(RegistryNotFound) as caught:
        client.get_blob("app/one", missing)
    message = str(caught.value)
    assert f"{registry.host}/app/one {missing}" in message
    assert "HTTP 404" in message
    assert caught.value.status == 404


def test_upload_with_a_wrong_digest_is_refused(client: RegistryClient) -> None:
    data = b"some bytes"
    with pytest.raises(RegistryError, match="HTTP 400") as caught:
        client.upload_blob("app/one", sha(b"other"), iter([data]), monolithic=True)
    assert "DIGEST_INVALID" in str(caught.value)
    assert client.blob_exists("app/one", sha(b"other")) is None


def test_manifest_round_trip_by_tag_and_digest(client: RegistryClient) -> None:
    manifest = push_image(client, "app/one", b"layer", "v1")
    by_tag = client.get_manifest("app/one", "v1", [MT_OCI_MANIFEST])
    assert by_tag == manifest
    assert client.get_manifest("app/one", manifest.digest, [MT_OCI_MANIFEST]) == manifest
    with pytest.raises(RegistryNotFound, match="HTTP 404"):
        client.get_manifest("app/one", "v2", [MT_OCI_MANIFEST])


class CuttingProxy:
    """A TCP relay to the registry that closes the first connection whose answer grows
    past `cut_after` bytes: a download interrupted mid-blob."""

    def __init__(self, upstream: str, cut_after: int) -> None:
        self.upstream = upstream.split(":")
        self.cut_after = cut_after
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.upstream[0], int(self.upstream[1])))
            threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, True), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answer: bool = False) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                sent += len(data)
                if answer and sent > self.cut_after:
                    with self._lock:
                        cut = self.cuts == 0
                        self.cuts += cut
                    if cut:
                        break
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_an_interrupted_download_resumes_with_range(registry: Registry) -> None:
    data = os.urandom(4 << 20)
    with RegistryClient(registry.host) as direct:
        direct.upload_blob("app/one", sha(data), chunks_of(data, 1 << 20), monolithic=False)
    proxy = CuttingProxy(registry.host, cut_after=1 << 20)
    try:
        with (
            RegistryClient(proxy.host, retries=3) as client,
            client.open_blob("app/one", sha(data)) as stream,
        ):
            received = stream.read()
            resumed: Any = stream
        assert proxy.cuts == 1
        assert sha(received) == sha(data)
        assert resumed.length == len(data)
    finally:
        proxy.close()
