"""The Registry v2 client against a real docker-registry (2.8) on loopback.

Auth variants run their own registries (htpasswd; token auth with a real JWT-issuing token
server). Failures a healthy registry never shows on demand (429, 500, garbage, redirects,
paginated tag lists, which 2.8 does not do) come from `RegistryFront`, a real HTTP server that
forwards to the real registry except for the faults a test scripts.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from gitops_pipeline.registry.client import (
    MANIFEST_LIST_V2,
    MANIFEST_V2,
    RateLimited,
    RegistryClient,
    RegistryError,
    RegistryRefused,
    TooManyTags,
)
from gitops_pipeline.testbed.process import free_port
from gitops_pipeline.testbed.registry import RegistryServer, push_image, start_registry
from gitops_pipeline.testbed.registry_front import RegistryFront
from gitops_pipeline.testbed.token_server import SERVICE, TokenServer, start_token_registry

pytestmark = pytest.mark.timeout(120)

CREATED = datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
LABELS = {"org.opencontainers.image.revision": "abc123", "team": "shop"}


def unique(name: str) -> str:
    """A repository name no other test (in this session's shared registry) uses."""
    return f"{name}-{secrets.token_hex(4)}"


@pytest.fixture
def client(registry: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(registry.host, insecure=True, timeout=5.0) as client:
        yield client


@pytest.fixture
def front(registry: RegistryServer) -> Iterator[RegistryFront]:
    front = RegistryFront(registry.host).start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture
def front_client(front: RegistryFront) -> Iterator[RegistryClient]:
    with RegistryClient(front.host, insecure=True, timeout=5.0) as client:
        yield client


def config_blob(registry: RegistryServer, repository: str, digest: str) -> dict[str, object]:
    data: dict[str, object] = httpx.get(f"{registry.url}/v2/{repository}/blobs/{digest}").json()
    return data


# --- tags ---------------------------------------------------------------------------------------


def test_lists_tags(registry: RegistryServer) -> None:
    repo = unique("team/tags")
    for tag in ("v1.0.0", "v1.1.0", "latest"):
        push_image(registry.url, repo, tag, CREATED)
    hosts: list[str] = []
    with RegistryClient(registry.host, insecure=True, before_request=hosts.append) as client:
        assert sorted(client.list_tags(repo)) == ["latest", "v1.0.0", "v1.1.0"]
        assert client.requests == 1
    assert hosts == [registry.host]


def test_follows_link_pagination(registry: RegistryServer) -> None:
    repo = unique("team/pages")
    tags = ["a1", "b2", "c3", "d4", "e5"]
    for tag in tags:
        push_image(registry.url, repo, tag, CREATED)
    # docker-registry 2.8 ignores ?n= on tag lists: everything comes in one answer.
    with RegistryClient(registry.host, insecure=True) as direct:
        assert sorted(direct.list_tags(repo, page_size=2)) == tags
        assert direct.requests == 1
    front = RegistryFront(registry.host, paginate_tags=True).start()
    try:
        with RegistryClient(front.host, insecure=True) as client:
            assert client.list_tags(repo, page_size=2) == tags
            assert client.requests == 3
        assert front.seen == [
            f"GET /v2/{repo}/tags/list?n=2",
            f"GET /v2/{repo}/tags/list?last=b2&n=2",
            f"GET /v2/{repo}/tags/list?last=d4&n=2",
        ]
    finally:
        front.stop()


def test_refuses_too_many_tags(registry: RegistryServer, client: RegistryClient) -> None:
    repo = unique("team/many")
    for tag in ("t1", "t2", "t3", "t4"):
        push_image(registry.url, repo, tag, CREATED)
    with pytest.raises(TooManyTags, match=f"repository {registry.host}/{repo} lists more than 3"):
        client.list_tags(repo, max_tags=3)


def test_skips_invalid_tag_names(
    front: RegistryFront, front_client: RegistryClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"name": "team/odd", "tags": ["v1", "bad tag!", 5, "v2", "v1"]})
    front.inject(200, headers={"Content-Type": "application/json"}, body=body.encode())
    with caplog.at_level(logging.WARNING, logger="gitops_pipeline.registry.client"):
        assert front_client.list_tags("team/odd") == ["v1", "v2"]
    assert "skipped 2 invalid tag name(s), e.g. 'bad tag!'" in caplog.text


# --- manifests and configs ----------------------------------------------------------------------


def test_resolves_an_image_and_reads_its_config(
    registry: RegistryServer, client: RegistryClient
) -> None:
    repo = unique("team/app")
    pushed = push_image(registry.url, repo, "v1", CREATED, labels=LABELS)
    resolved = client.resolve(repo, "v1")
    assert resolved.digest == pushed
    assert resolved.media_type == MANIFEST_V2
    assert resolved.config_digest is not None
    config = client.image_config(repo, resolved.config_digest)
    assert config.created == CREATED
    assert config.labels == LABELS
    assert client.requests == 2
    assert client.resolve(repo, pushed) == resolved
    before = client.requests
    assert client.digest(repo, "v1") == pushed
    assert client.requests == before + 1  # one HEAD


def test_manifest_list_resolves_to_the_configured_platform(registry: RegistryServer) -> None:
    repo = unique("team/multi")
    pushed = push_image(
        registry.url,
        repo,
        "v2",
        CREATED,
        labels=LABELS,
        platforms=["linux/amd64", "linux/arm64/v8"],
    )
    architectures = {}
    for platform in ("linux/amd64", "linux/arm64", "linux/arm64/v8"):
        with RegistryClient(registry.host, insecure=True, platform=platform) as client:
            resolved = client.resolve(repo, "v2")
            assert resolved.digest == pushed  # the tag's digest: the list's, for every platform
            assert resolved.media_type == MANIFEST_LIST_V2
            assert resolved.config_digest is not None
            assert client.requests == 2  # the list, then the platform's manifest
            assert client.image_config(repo, resolved.config_digest).labels == LABELS
            blob = config_blob(registry, repo, resolved.config_digest)
            architectures[platform] = blob["architecture"]
    assert architectures == {
        "linux/amd64": "amd64",
        "linux/arm64": "arm64",
        "linux/arm64/v8": "arm64",
    }
    with RegistryClient(registry.host, insecure=True, platform="linux/s390x") as client:
        resolved = client.resolve(repo, "v2")
        assert (resolved.digest, resolved.config_digest) == (pushed, None)


def test_unknown_repository_and_tag_are_refused(
    registry: RegistryServer, client: RegistryClient
) -> None:
    repo = unique("team/nothing")
    with pytest.raises(RegistryRefused, match=rf"{repo}: not found .*NAME_UNKNOWN"):
        client.list_tags(repo)
    push_image(registry.url, repo, "v1", CREATED)
    with pytest.raises(RegistryRefused, match=rf"{repo}:v9: not found .*MANIFEST_UNKNOWN"):
        client.resolve(repo, "v9")
    with pytest.raises(RegistryRefused, match="not found"):
        client.image_config(repo, "sha256:" + "0" * 64)


def test_head_without_digest_header_falls_back_to_get(
    registry: RegistryServer, front: RegistryFront, front_client: RegistryClient
) -> None:
    repo = unique("team/head")
    pushed = push_image(registry.url, repo, "v1", CREATED)
    front.inject(200, path_contains="/manifests/")  # a HEAD answer without Docker-Content-Digest
    assert front_client.digest(repo, "v1") == pushed
    assert [line.split()[0] for line in front.seen] == ["HEAD", "GET"]


def test_follows_blob_redirects(
    registry: RegistryServer, front: RegistryFront, front_client: RegistryClient
) -> None:
    repo = unique("team/redirect")
    push_image(registry.url, repo, "v1", CREATED, labels=LABELS)
    config_digest = front_client.resolve(repo, "v1").config_digest
    assert config_digest is not None
    blob_url = f"{registry.url}/v2/{repo}/blobs/{config_digest}"
    front.inject(307, headers={"Location": blob_url}, path_contains="/blobs/")
    before = front_client.requests
    assert front_client.image_config(repo, config_digest).labels == LABELS
    assert front_client.requests == before + 2


def test_blob_that_does_not_match_its_digest_is_garbage(
    registry: RegistryServer, front: RegistryFront, front_client: RegistryClient
) -> None:
    repo = unique("team/tampered")
    push_image(registry.url, repo, "v1", CREATED)
    config_digest = front_client.resolve(repo, "v1").config_digest
    assert config_digest is not None
    front.inject(200, body=b'{"created": "2030-01-01T00:00:00Z"}', path_contains="/blobs/")
    with pytest.raises(RegistryError, match=r"garbage response .*does not match its digest"):
        front_client.image_config(repo, config_digest)


# --- authentication -----------------------------------------------------------------------------


def test_basic_auth(tmp_path: Path) -> None:
    server = start_registry(tmp_path / "basic", htpasswd_users={"bot": "pw"})
    try:
        pushed = push_image(server.url, "team/private", "v1", CREATED, auth=("bot", "pw"))
        with (
            RegistryClient(server.host, insecure=True) as anonymous,
            pytest.raises(RegistryRefused, match=f"authentication required for {server.host}"),
        ):
            anonymous.list_tags("team/private")
        with (
            RegistryClient(server.host, insecure=True, credentials=("bot", "wrong")) as wrong,
            pytest.raises(RegistryRefused, match="rejected the credentials of user 'bot'"),
        ):
            wrong.list_tags("team/private")
        with RegistryClient(server.host, insecure=True, credentials=("bot", "pw")) as client:
            assert client.list_tags("team/private") == ["v1"]
            assert client.requests == 2  # the 401 that says "Basic", then the real request
            assert client.resolve("team/private", "v1").digest == pushed
            assert client.requests == 3  # credentials now go with the first request
    finally:
        server.stop()


def test_token_auth(tmp_path: Path) -> None:
    seed = start_registry(tmp_path / "seed")
    tokens = TokenServer(users={"bot": "pw"}, allow_anonymous=False).start()
    server: RegistryServer | None = None
    try:
        pushed = push_image(seed.url, "team/app", "v1", CREATED, labels=LABELS)
        push_image(seed.url, "team/app", "v2", CREATED)
        push_image(seed.url, "team/other", "v1", CREATED)
        server = start_token_registry(tmp_path / "token", tokens, storage_dir=seed.storage_dir)
        assert httpx.get(f"{server.url}/v2/team/app/tags/list").status_code == 401

        hosts: list[str] = []
        with RegistryClient(
            server.host, insecure=True, credentials=("bot", "pw"), before_request=hosts.append
        ) as client:
            assert sorted(client.list_tags("team/app")) == ["v1", "v2"]
            assert hosts == [server.host, urlsplit(tokens.realm).netloc, server.host]
            assert client.requests == 3  # 401 with the challenge, the token, the retry
            assert [(r.service, r.scopes, r.user, r.granted) for r in tokens.requests] == [
                (SERVICE, ("repository:team/app:pull",), "bot", True)
            ]
            resolved = client.resolve("team/app", "v1")
            assert resolved.digest == pushed
            assert resolved.config_digest is not None
            assert client.image_config("team/app", resolved.config_digest).labels == LABELS
            assert client.requests == 5  # the cached token went along at once
            assert len(tokens.requests) == 1
            assert client.list_tags("team/other") == ["v1"]  # a new scope: a new token first
            assert client.requests == 7
            assert tokens.requests[-1].scopes == ("repository:team/other:pull",)

        with (
            RegistryClient(server.host, insecure=True) as anonymous,
            pytest.raises(RegistryRefused, match="token server refused anonymous access"),
        ):
            anonymous.list_tags("team/app")

        tokens.answer_fields = ("access_token",)  # the OAuth2 spelling some servers use
        with RegistryClient(server.host, insecure=True, credentials=("bot", "pw")) as client:
            assert client.digest("team/app", "v1") == pushed
    finally:
        if server is not None:
            server.stop()
        tokens.stop()
        seed.stop()


# --- failures -----------------------------------------------------------------------------------


def test_rate_limited_with_retry_after(
    registry: RegistryServer, front: RegistryFront, front_client: RegistryClient
) -> None:
    repo = unique("team/busy")
    push_image(registry.url, repo, "v1", CREATED)
    front.inject(
        429, headers={"Retry-After": "3"}, body=b'{"errors": [{"code": "TOOMANYREQUESTS"}]}'
    )
    with pytest.raises(RateLimited, match=f"listing tags of {front.host}/{repo}") as info:
        front_client.list_tags(repo)
    assert info.value.retry_after == 3.0
    assert info.value.delay == 3.0  # what a generic TransientError retry waits
    assert front_client.list_tags(repo) == ["v1"]  # the next request goes through


def test_server_error_and_garbage(
    registry: RegistryServer, front: RegistryFront, front_client: RegistryClient
) -> None:
    repo = unique("team/flaky")
    push_image(registry.url, repo, "v1", CREATED)
    front.inject(500, body=b'{"errors": [{"code": "UNKNOWN", "message": "disk on fire"}]}')
    with pytest.raises(
        RegistryError, match=rf"{repo}: .* failed with HTTP 500: UNKNOWN: disk on fire"
    ):
        front_client.list_tags(repo)

    front.inject(200, headers={"Content-Type": "text/html"}, body=b"<html>maintenance</html>")
    with pytest.raises(RegistryError, match=r"garbage response .*not JSON \(text/html"):
        front_client.list_tags(repo)

    front.inject(200, body=b'{"name": "x", "tags": "v1"}')
    with pytest.raises(RegistryError, match=r"garbage response .*'tags' is str, not a list"):
        front_client.list_tags(repo)

    front.inject(200, body=b'{"hello": "world"}', path_contains="/manifests/")
    with pytest.raises(RegistryError, match=r"garbage response .*not a manifest"):
        front_client.resolve(repo, "v1")

    front.inject(200, body=b"[" * 100_000, path_contains="/manifests/")
    with pytest.raises(RegistryError, match=r"garbage response .*not JSON"):
        front_client.resolve(repo, "v1")

    assert front_client.list_tags(repo) == ["v1"]


def test_registry_down_fails_fast() -> None:
    port = free_port()
    started = time.monotonic()
    with (
        RegistryClient(f"127.0.0.1:{port}", insecure=True, timeout=1.0) as client,
        pytest.raises(RegistryError, match=f"cannot reach 127.0.0.1:{port}"),
    ):
        client.list_tags("team/app")
    assert time.monotonic() - started < 2


def test_registry_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with (
            RegistryClient(host, insecure=True, timeout=0.5) as client,
            pytest.raises(RegistryError, match=rf"{host} did not answer within 0\.5s"),
        ):
            client.resolve("team/app", "v1")
        assert time.monotonic() - started < 3
