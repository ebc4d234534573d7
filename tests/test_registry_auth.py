"""Registry credentials and challenges (winlayer._registry_auth), as docker reads them."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from winlayer._registry_auth import (
    AuthError,
    Challenge,
    Credentials,
    docker_credentials,
    parse_challenges,
    parse_token,
    token_request,
)

from .capabilities import require


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/ubuntu:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/ubuntu:pull",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        ("basic realm=plain", [Challenge("basic", {"realm": "plain"})]),
        (
            'Bearer realm="https://x/token", error="insufficient_scope", scope="a:b:pull,push"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://x/token",
                        "error": "insufficient_scope",
                        "scope": "a:b:pull,push",
                    },
                )
            ],
        ),
        (r'Basic realm="with \"quotes\""', [Challenge("basic", {"realm": 'with "quotes"'})]),
        (
            'Negotiate abc123==, Basic realm="r"',
            [Challenge("negotiate", {}), Challenge("basic", {"realm": "r"})],
        ),
        ("", []),
    ],
)
def test_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected


def write_config(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def test_auths_entry_by_host_and_by_url(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "auths": {
                "https://registry.example.com/v1/": {"auth": b64("alice:s3cr:et")},
                "localhost:5000": {"username": "bob", "password": "pw"},
                "https://index.docker.io/v1/": {"auth": b64("hub:token")},
            }
        },
    )
    assert docker_credentials("registry.example.com", config) == Credentials("alice", "s3cr:et")
    assert docker_credentials("localhost:5000", config) == Credentials("bob", "pw")
    assert docker_credentials("docker.io", config) == Credentials("hub", "token")
    assert docker_credentials("other.example.com", config) is None
    assert docker_credentials("x", tmp_path / "missing.json") is None


def test_identity_token_is_kept_apart_from_a_password(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, {"auths": {"r.example.com": {"auth": b64("u:"), "identitytoken": "refresh"}}}
    )
    found = docker_credentials("r.example.com", config)
    assert found == Credentials(username="u", identity_token="refresh")
    assert "refresh" not in repr(found)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "cannot read docker's config"),
        ([], "not a JSON object"),
        ({"auths": {"r.example.com": {"auth": "!!notbase64"}}}, "is not base64 user:pass"),
        ({"auths": {"r.example.com": {"auth": b64("nocolon")}}}, "is not base64 user:pass"),
    ],
)
def test_broken_configs_are_named(tmp_path: Path, doc: object, message: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(AuthError, match=message) as caught:
        docker_credentials("r.example.com", config)
    if "config" in message:
        assert str(config) in str(caught.value)


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`docker-credential-test` on PATH: knows r.example.com and tok.example.com only, and
    logs each server it is asked about. A #!/bin/sh script: it runs where the OS runs
    scripts by their #! line."""
    require("shebang")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker-credential-test"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        "read server\n"
        f'echo "$server" >> {tmp_path}/asked\n'
        'case "$server" in\n'
        '  r.example.com) echo \'{"ServerURL":"r.example.com","Username":"h","Secret":"p"}\' ;;\n'
        '  tok.example.com) echo \'{"Username":"<token>","Secret":"refresh"}\' ;;\n'
        '  broken.example.com) echo "helper exploded" >&2; exit 3 ;;\n'
        '  *) echo "credentials not found in native keychain"; exit 1 ;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "asked"


def test_credential_helpers(tmp_path: Path, helper: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "credsStore": "test",
            "credHelpers": {"special.example.com": "missing"},
            "auths": {"fallback.example.com": {"auth": b64("f:g")}},
        },
    )
    assert docker_credentials("r.example.com", config) == Credentials("h", "p")
    assert docker_credentials("tok.example.com", config) == Credentials(identity_token="refresh")
    # The store has none: the auths entry is used.
    assert docker_credentials("fallback.example.com", config) == Credentials("f", "g")
    with pytest.raises(AuthError, match="exited 3: helper exploded"):
        docker_credentials("broken.example.com", config)
    with pytest.raises(AuthError, match="docker-credential-missing, not on PATH"):
        docker_credentials("special.example.com", config)
    assert helper.read_text().split() == [
        "r.example.com",
        "tok.example.com",
        "fallback.example.com",
        "broken.example.com",
    ]


def test_token_request_anonymous_and_with_credentials() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.example.com/token", "service": "reg"})
    anonymous = token_request(challenge, ["repository:a/b:pull"], None)
    assert anonymous.method == "GET"
    assert parse_qs(urlsplit(anonymous.url).query) == {
        "service": ["reg"],
        "scope": ["repository:a/b:pull"],
    }
    assert anonymous.headers == {}
    basic = token_request(challenge, ["repository:a/b:pull"], Credentials("u", "p"))
    assert basic.headers == {"Authorization": "Basic " + b64("u:p")}


def test_token_request_with_an_identity_token_is_the_oauth2_refresh() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.example.com/token", "service": "reg"})
    request = token_request(
        challenge, ["repository:a/b:pull", "repository:c:pull"], Credentials(identity_token="rt")
    )
    assert request.method == "POST"
    assert request.body is not None
    form = parse_qs(request.body.decode())
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == ["rt"]
    assert form["scope"] == ["repository:a/b:pull repository:c:pull"]


def test_a_challenge_without_a_realm_is_refused() -> None:
    with pytest.raises(AuthError, match="realm"):
        token_request(Challenge("bearer", {"realm": "file:///etc/passwd"}), [], None)


def test_token_answers() -> None:
    assert parse_token(b'{"token": "t1"}', "r") == "t1"
    assert parse_token(b'{"access_token": "t2", "expires_in": 300}', "r") == "t2"
    with pytest.raises(AuthError, match="the token service r answered without a token"):
        parse_token(b"<html>", "r")
