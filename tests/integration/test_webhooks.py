"""Webhooks on the real Redis: each source's signed push lands as a Celery message in the broker
queue; forged, replayed, oversized and unreadable deliveries do nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import test_sync_e2e as e2e
import yaml
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from gitops_pipeline import counters, events
from gitops_pipeline.api.app import create_app
from gitops_pipeline.celery_app import app as celery_app
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.registry.reference import DOCKER_HUB
from gitops_pipeline.store import Keys, connect_binary
from gitops_pipeline.testbed.gitremote import GitRemote
from gitops_pipeline.testbed.redis_server import RedisServer

SOURCES = ("github", "gitlab", "bitbucket", "gitea", "generic", "distribution", "dockerhub")
SECRETS = {name: f"{name}-secret-7f3a" for name in (*SOURCES, "harbor", "quay")}
MAX_BODY = 16 * 1024
BEFORE, AFTER = "a" * 40, "b" * 40


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    def pipeline(name: str, url: str, branch: str) -> dict[str, Any]:
        return {"name": name, "git": {"url": url, "branch": branch}}

    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "webhooks": {**SECRETS, "max_body_bytes": MAX_BODY},
        "pipelines": [
            pipeline("gh-app", "git@github.com:acme/app.git", "main"),
            pipeline("gh-app-staging", "https://github.com/acme/app", "staging"),
            pipeline("gl-app", "https://gitlab.example.com/platform/deploy/app.git", "production"),
            pipeline("bb-app", "git@bitbucket.org:acme/infra.git", "master"),
            pipeline("gt-app", "ssh://git@gitea.example.com:2222/ops/cluster.git", "main"),
            pipeline("local-app", "file:///srv/git/local.git", "master"),
        ],
    }
    return parse_settings(yaml.safe_dump(config), "test", {})


@pytest.fixture
def api(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


@pytest.fixture
def client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


@pytest.fixture
def cache(settings: Settings) -> TagCache:
    return TagCache(connect_binary(settings.redis_url), settings.key_prefix)


def queued(client: redis.Redis, prefix: str, queue: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting in a broker queue, decoded as kombu wrote it."""
    messages = []
    for raw in client.lrange(f"{prefix}celery:{queue}", 0, -1):
        message = json.loads(raw)
        assert message["properties"]["body_encoding"] == "base64"
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args))
    return messages


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- how each source sends a delivery -----------------------------------------------------

Request = tuple[str, dict[str, str]]  # path, headers


def github(body: bytes, secret: str | None, delivery: str) -> Request:
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery}
    if secret is not None:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac_hex(secret, body)
    return "/hooks/github", headers


def gitlab(body: bytes, secret: str | None, delivery: str) -> Request:
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": delivery}
    if secret is not None:
        headers["X-Gitlab-Token"] = secret
    return "/hooks/gitlab", headers


def bitbucket(body: bytes, secret: str | None, delivery: str) -> Request:
    headers = {"X-Event-Key": "repo:push", "X-Request-UUID": delivery}
    if secret is not None:
        headers["X-Hub-Signature"] = "sha256=" + hmac_hex(secret, body)
    return "/hooks/bitbucket", headers


def gitea(body: bytes, secret: str | None, delivery: str) -> Request:
    headers = {"X-Gitea-Event": "push", "X-Gitea-Delivery": delivery}
    if secret is not None:
        headers["X-Gitea-Signature"] = hmac_hex(secret, body)
    return "/hooks/gitea", headers


def generic(kind: str) -> Callable[[bytes, str | None, str], Request]:
    def send(body: bytes, secret: str | None, delivery: str) -> Request:
        headers = {"X-Delivery-Id": delivery}
        if secret is not None:
            headers["X-Signature-256"] = "sha256=" + hmac_hex(secret, body)
        return f"/hooks/generic-{kind}", headers

    return send


def authorization(path: str) -> Callable[[bytes, str | None, str], Request]:
    def send(body: bytes, secret: str | None, delivery: str) -> Request:
        return path, {} if secret is None else {"Authorization": f"Bearer {secret}"}

    return send


def in_path(path: str) -> Callable[[bytes, str | None, str], Request]:
    def send(body: bytes, secret: str | None, delivery: str) -> Request:
        return (path if secret is None else f"{path}/{secret}"), {}

    return send


# --- real-shaped payloads (trimmed to the fields around the ones read) ----------------------


def github_push(ref: str = "refs/heads/main", repo: str = "acme/app", **extra: Any) -> bytes:
    payload = {
        "ref": ref,
        "before": BEFORE,
        "after": AFTER,
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": {
            "id": 1296269,
            "name": repo.split("/")[1],
            "full_name": repo,
            "private": True,
            "html_url": f"https://github.com/{repo}",
            "url": f"https://github.com/{repo}",
            "git_url": f"git://github.com/{repo}.git",
            "ssh_url": f"git@github.com:{repo}.git",
            "clone_url": f"https://github.com/{repo}.git",
            "default_branch": "main",
        },
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "head_commit": {"id": AFTER, "message": "Bump app to 1.2.3"},
        **extra,
    }
    return json.dumps(payload).encode()


def gitlab_push() -> bytes:
    base = "gitlab.example.com/platform/deploy/app"
    payload = {
        "object_kind": "push",
        "event_name": "push",
        "before": BEFORE,
        "after": AFTER,
        "ref": "refs/heads/production",
        "checkout_sha": AFTER,
        "user_username": "jsmith",
        "project_id": 15,
        "project": {
            "id": 15,
            "name": "app",
            "web_url": f"https://{base}",
            "git_ssh_url": f"git@{base.replace('/', ':', 1)}.git",
            "git_http_url": f"https://{base}.git",
            "path_with_namespace": "platform/deploy/app",
            "default_branch": "production",
        },
        "commits": [{"id": AFTER, "message": "Bump app"}],
        "total_commits_count": 1,
        "repository": {
            "name": "app",
            "url": f"git@{base.replace('/', ':', 1)}.git",
            "homepage": f"https://{base}",
            "git_http_url": f"https://{base}.git",
            "git_ssh_url": f"git@{base.replace('/', ':', 1)}.git",
        },
    }
    return json.dumps(payload).encode()


def bitbucket_push() -> bytes:
    links = {"html": {"href": "https://bitbucket.org/acme/infra"}}
    payload = {
        "actor": {"display_name": "Jane", "type": "user"},
        "repository": {
            "type": "repository",
            "full_name": "acme/infra",
            "name": "infra",
            "links": links,
            "is_private": True,
        },
        "push": {
            "changes": [
                {  # a tag in the same push is skipped
                    "new": {"type": "tag", "name": "v1.0.0", "target": {"hash": AFTER}},
                    "old": None,
                    "created": True,
                },
                {
                    "new": {"type": "branch", "name": "master", "target": {"hash": AFTER}},
                    "old": {"type": "branch", "name": "master", "target": {"hash": BEFORE}},
                    "created": False,
                    "forced": False,
                    "closed": False,
                },
            ]
        },
    }
    return json.dumps(payload).encode()


def gitea_push() -> bytes:
    payload = {
        "ref": "refs/heads/main",
        "before": BEFORE,
        "after": AFTER,
        "compare_url": "https://gitea.example.com/ops/cluster/compare/a...b",
        "commits": [{"id": AFTER, "message": "Bump"}],
        "repository": {
            "id": 140,
            "name": "cluster",
            "full_name": "ops/cluster",
            "html_url": "https://gitea.example.com/ops/cluster",
            "ssh_url": "ssh://git@gitea.example.com:2222/ops/cluster.git",
            "clone_url": "https://gitea.example.com/ops/cluster.git",
            "default_branch": "main",
        },
        "pusher": {"login": "gitea"},
    }
    return json.dumps(payload).encode()


def generic_git_push() -> bytes:
    return json.dumps({"url": "/srv/git/local.git", "branch": "master"}).encode()


def distribution_push(repository: str = "acme/web") -> bytes:
    request = {"id": "r1", "addr": "10.0.0.7:51234", "host": "registry.example.com:5000"}
    target = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "c" * 64,
        "repository": repository,
        "tag": "1.2.3",
    }
    events = [
        {  # a layer upload: a push without a tag, skipped
            "id": "e0",
            "timestamp": "2024-05-01T10:00:00Z",
            "action": "push",
            "target": {"mediaType": "application/octet-stream", "repository": repository},
            "request": request,
        },
        {
            "id": "e1",
            "timestamp": "2024-05-01T10:00:01Z",
            "action": "push",
            "target": target,
            "request": request,
            "actor": {"name": "ci"},
            "source": {"addr": "registry-0:5000", "instanceID": "i-1"},
        },
        {"id": "e2", "action": "pull", "target": target, "request": request},
    ]
    return json.dumps({"events": events}).encode()


def dockerhub_push() -> bytes:
    payload = {
        "callback_url": "https://hub.example.invalid/u/acme/web/hook/2141b5bi5i5b02/",
        "push_data": {"pushed_at": 1714557600, "pusher": "acme-ci", "tag": "1.2.3"},
        "repository": {
            "name": "web",
            "namespace": "acme",
            "owner": "acme",
            "repo_name": "acme/web",
            "is_private": True,
            "status": "Active",
        },
    }
    return json.dumps(payload).encode()


def harbor_push() -> bytes:
    payload = {
        "type": "PUSH_ARTIFACT",
        "occur_at": 1714557600,
        "operator": "robot$ci",
        "event_data": {
            "resources": [
                {
                    "digest": "sha256:" + "d" * 64,
                    "tag": "1.2.3",
                    "resource_url": "harbor.example.com/library/web:1.2.3",
                }
            ],
            "repository": {
                "name": "web",
                "namespace": "library",
                "repo_full_name": "library/web",
                "repo_type": "private",
            },
        },
    }
    return json.dumps(payload).encode()


def quay_push() -> bytes:
    payload = {
        "name": "web",
        "repository": "acme/web",
        "namespace": "acme",
        "docker_url": "quay.example.com/acme/web",
        "homepage": "https://quay.example.com/repository/acme/web",
        "updated_tags": ["1.2.3"],
    }
    return json.dumps(payload).encode()


def generic_image_push(image: str = "registry.example.com/team/api") -> bytes:
    return json.dumps({"image": image, "tag": "2.0.0"}).encode()


@dataclass(frozen=True)
class Case:
    secret: str
    send: Callable[[bytes, str | None, str], Request]
    body: Callable[[], bytes]
    expect: str
    """The pipeline a git push syncs, or the image repository a registry push makes due."""


GIT = {
    "github": Case("github", github, github_push, "gh-app"),
    "gitlab": Case("gitlab", gitlab, gitlab_push, "gl-app"),
    "bitbucket": Case("bitbucket", bitbucket, bitbucket_push, "bb-app"),
    "gitea": Case("gitea", gitea, gitea_push, "gt-app"),
    "generic-git": Case("generic", generic("git"), generic_git_push, "local-app"),
}
REGISTRY = {
    "distribution": Case(
        "distribution",
        authorization("/hooks/distribution"),
        distribution_push,
        "registry.example.com:5000/acme/web",
    ),
    "dockerhub": Case(
        "dockerhub", in_path("/hooks/dockerhub"), dockerhub_push, f"{DOCKER_HUB}/acme/web"
    ),
    "harbor": Case(
        "harbor", authorization("/hooks/harbor"), harbor_push, "harbor.example.com/library/web"
    ),
    "quay": Case("quay", in_path("/hooks/quay"), quay_push, "quay.example.com/acme/web"),
    "generic-image": Case(
        "generic", generic("image"), generic_image_push, "registry.example.com/team/api"
    ),
}
ALL = {**GIT, **REGISTRY}


def post(api: TestClient, case: Case, secret: str | None = "", body: bytes | None = None) -> Any:
    """Send `case`'s delivery signed with its secret (`secret=None`: unsigned; else that one)."""
    body = case.body() if body is None else body
    key = SECRETS[case.secret] if secret == "" else secret
    path, headers = case.send(body, key, str(uuid.uuid4()))
    return api.post(path, content=body, headers={"Content-Type": "application/json", **headers})


def seed_scanned(cache: TagCache, repo: str) -> None:
    """The state a repository some pipeline scans is in: scanned, next scan in the future."""
    cache.record_scan(repo, changed=False, now=time.time())
    meta = cache.meta(repo)
    assert meta is not None and meta.next_due is not None and meta.next_due > time.time()


# --- accepted pushes --------------------------------------------------------------------------


@pytest.mark.parametrize("source", list(GIT))
def test_a_signed_git_push_triggers_the_pipeline_on_that_branch(
    api: TestClient, settings: Settings, client: redis.Redis, source: str
) -> None:
    case = GIT[source]
    response = post(api, case)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted", "pipelines": [case.expect]}
    assert queued(client, settings.key_prefix, "sync") == [("sync.trigger", [case.expect])]


def test_triggers_expire_like_poll_ticks_and_store_no_result(
    api: TestClient, settings: Settings, client: redis.Redis
) -> None:
    post(api, GIT["github"])
    (raw,) = client.lrange(f"{settings.key_prefix}celery:sync", 0, -1)
    headers = json.loads(raw)["headers"]
    assert headers["ignore_result"] is True
    assert headers["expires"] is not None


@pytest.mark.parametrize("source", list(REGISTRY))
def test_a_signed_image_push_makes_the_repository_due_and_asks_for_a_dispatch(
    api: TestClient, settings: Settings, client: redis.Redis, cache: TagCache, source: str
) -> None:
    case = REGISTRY[source]
    seed_scanned(cache, case.expect)
    response = post(api, case)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted", "repositories": [case.expect]}
    meta = cache.meta(case.expect)
    assert meta is not None and meta.next_due is None
    assert cache.due([case.expect], time.time()) == [case.expect]
    assert queued(client, settings.key_prefix, "scan") == [("scan.dispatch", [])]


def test_image_names_are_made_canonical_like_the_tag_cache_keys(
    api: TestClient, cache: TagCache
) -> None:
    seed_scanned(cache, f"{DOCKER_HUB}/library/nginx")
    case = REGISTRY["generic-image"]
    response = post(api, case, body=generic_image_push("nginx"))
    assert response.json() == {
        "status": "accepted",
        "repositories": [f"{DOCKER_HUB}/library/nginx"],
    }


def test_an_image_no_pipeline_scans_is_ignored_and_leaves_no_key(
    api: TestClient, settings: Settings, client: redis.Redis
) -> None:
    response = post(api, REGISTRY["harbor"])
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert client.keys(f"{settings.key_prefix}reg:*") == []
    assert queued(client, settings.key_prefix, "scan") == []


# --- pushes that start nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        github_push(ref="refs/heads/feature/login"),
        github_push(ref="refs/tags/v1.2.3"),
        github_push(deleted=True, after="0" * 40),
        github_push(repo="acme/other-app"),
    ],
    ids=["other-branch", "tag", "deleted-branch", "unrelated-repo"],
)
def test_pushes_no_pipeline_follows_are_ignored(
    api: TestClient, settings: Settings, client: redis.Redis, body: bytes
) -> None:
    response = post(api, GIT["github"], body=body)
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert queued(client, settings.key_prefix, "sync") == []


def test_a_push_to_another_followed_branch_triggers_only_that_pipeline(
    api: TestClient, settings: Settings, client: redis.Redis
) -> None:
    response = post(api, GIT["github"], body=github_push(ref="refs/heads/staging"))
    assert response.json() == {"status": "accepted", "pipelines": ["gh-app-staging"]}
    assert queued(client, settings.key_prefix, "sync") == [("sync.trigger", ["gh-app-staging"])]


def test_github_ping_is_answered_without_work(
    api: TestClient, settings: Settings, client: redis.Redis
) -> None:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    path, headers = github(body, SECRETS["github"], str(uuid.uuid4()))
    response = api.post(path, content=body, headers={**headers, "X-GitHub-Event": "ping"})
    assert response.status_code == 202
    assert response.json() == {"status": "ignored", "reason": "ping"}
    assert queued(client, settings.key_prefix, "sync") == []


# --- replays ----------------------------------------------------------------------------------


def test_a_replayed_delivery_id_is_not_enqueued_twice(
    api: TestClient, settings: Settings, client: redis.Redis
) -> None:
    body = github_push()
    path, headers = github(body, SECRETS["github"], "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    first = api.post(path, content=body, headers=headers)
    again = api.post(path, content=body, headers=headers)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    assert len(queued(client, settings.key_prefix, "sync")) == 1
    key = f"{settings.key_prefix}hook:github:72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert 0 < client.ttl(key) <= settings.webhooks.replay_ttl
    # The same push under a new delivery id is a new delivery.
    path, headers = github(body, SECRETS["github"], str(uuid.uuid4()))
    assert api.post(path, content=body, headers=headers).status_code == 202
    assert len(queued(client, settings.key_prefix, "sync")) == 2


def test_a_resent_registry_envelope_is_a_replay(
    api: TestClient, settings: Settings, client: redis.Redis, cache: TagCache
) -> None:
    seed_scanned(cache, "registry.example.com:5000/acme/web")
    body = distribution_push()
    path, headers = authorization("/hooks/distribution")(body, SECRETS["distribution"], "")
    assert api.post(path, content=body, headers=headers).status_code == 202
    again = api.post(path, content=body, headers=headers)
    assert again.json() == {"status": "duplicate"}
    assert len(queued(client, settings.key_prefix, "scan")) == 1


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", list(ALL))
def test_a_wrong_secret_is_401_and_does_nothing(
    api: TestClient, settings: Settings, client: redis.Redis, cache: TagCache, source: str
) -> None:
    case = ALL[source]
    if source in REGISTRY:
        seed_scanned(cache, case.expect)
    response = post(api, case, secret="not-the-secret")
    assert response.status_code == 401
    assert response.json()["status"] == "unauthorized"
    assert queued(client, settings.key_prefix, "sync") == []
    assert queued(client, settings.key_prefix, "scan") == []
    if source in REGISTRY:
        meta = cache.meta(case.expect)
        assert meta is not None and meta.next_due is not None


@pytest.mark.parametrize("source", list(ALL))
def test_a_missing_secret_is_401(
    api: TestClient, settings: Settings, client: redis.Redis, source: str
) -> None:
    response = post(api, ALL[source], secret=None)
    assert response.status_code == 401
    assert queued(client, settings.key_prefix, "sync") == []


def test_a_body_changed_after_signing_is_401(api: TestClient) -> None:
    body = github_push()
    path, headers = github(body, SECRETS["github"], str(uuid.uuid4()))
    tampered = body.replace(b"acme/app", b"acme/ap2")
    assert api.post(path, content=tampered, headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("source", "body"),
    [
        ("github", b'{"ref": "refs/heads/main", '),
        ("github", b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D"),  # form-encoded
        ("github", json.dumps({"ref": "refs/heads/main"}).encode()),  # no repository
        ("gitlab", json.dumps(["not", "an", "object"]).encode()),
        ("bitbucket", json.dumps({"repository": {}, "push": {"changes": "x"}}).encode()),
        ("generic-git", json.dumps({"url": 5, "branch": ["main"]}).encode()),
        ("generic-git", b"\xff\xfe\x00not utf-8"),
        ("distribution", json.dumps({"events": {"action": "push"}}).encode()),
        ("harbor", json.dumps({"type": "PUSH_ARTIFACT", "event_data": None}).encode()),
        ("generic-image", json.dumps({"image": "Not/A Valid/Ref", "tag": "1"}).encode()),
    ],
    ids=[
        "truncated-json",
        "form-encoded",
        "no-repository",
        "not-an-object",
        "changes-not-a-list",
        "wrong-types",
        "not-utf8",
        "events-not-a-list",
        "no-event-data",
        "invalid-image",
    ],
)
def test_an_authentic_but_unreadable_body_is_400(
    api: TestClient, settings: Settings, client: redis.Redis, source: str, body: bytes
) -> None:
    response = post(api, ALL[source], body=body)
    assert response.status_code == 400, response.text
    assert response.json()["status"] == "malformed"
    assert queued(client, settings.key_prefix, "sync") == []
    assert queued(client, settings.key_prefix, "scan") == []


def test_a_generic_delivery_without_an_id_is_400(api: TestClient) -> None:
    body = generic_git_push()
    headers = {"X-Signature-256": "sha256=" + hmac_hex(SECRETS["generic"], body)}
    response = api.post("/hooks/generic-git", content=body, headers=headers)
    assert response.status_code == 400
    assert "X-Delivery-Id" in response.json()["detail"]


def test_an_oversized_body_is_413(api: TestClient, settings: Settings, client: redis.Redis) -> None:
    padding = "x" * MAX_BODY
    body = github_push(padding=padding)
    response = post(api, GIT["github"], body=body)
    assert response.status_code == 413
    assert response.json()["status"] == "too-large"
    assert queued(client, settings.key_prefix, "sync") == []


def test_an_oversized_body_without_content_length_is_413(api: TestClient) -> None:
    body = github_push(padding="x" * MAX_BODY)
    path, headers = github(body, SECRETS["github"], str(uuid.uuid4()))
    chunks = (body[i : i + 1024] for i in range(0, len(body), 1024))
    response = api.post(path, content=chunks, headers=headers)
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413


def test_a_body_just_under_the_cap_is_read(api: TestClient) -> None:
    body = github_push(padding="")
    body = github_push(padding="x" * (MAX_BODY - len(body) - 1))
    assert len(body) <= MAX_BODY
    assert post(api, GIT["github"], body=body).status_code == 202


@pytest.mark.parametrize("path", ["/hooks/nope", "/hooks/github/extra-segment", "/hooks/generic"])
def test_an_unknown_source_is_404(api: TestClient, path: str) -> None:
    response = api.post(path, content=b"{}")
    assert response.status_code == 404
    assert response.json()["status"] == "unknown"


def test_a_source_without_a_secret_is_404(settings: Settings, client: redis.Redis) -> None:
    webhooks = settings.webhooks.model_copy(update={"gitea": None, "quay": None})
    api = TestClient(create_app(settings.model_copy(update={"webhooks": webhooks})))
    assert post(api, GIT["gitea"]).status_code == 404
    assert post(api, REGISTRY["quay"]).status_code == 404
    assert post(api, GIT["github"]).status_code == 202  # the others still work
    assert queued(client, settings.key_prefix, "sync") == [("sync.trigger", ["gh-app"])]


def test_every_delivery_is_counted_by_source_and_result(
    api: TestClient, settings: Settings, client: redis.Redis
) -> None:
    post(api, GIT["github"])
    post(api, GIT["github"], secret="wrong")
    post(api, GIT["gitlab"], body=b"[")
    post(api, GIT["gitea"], body=github_push(padding="x" * MAX_BODY))
    post(api, REGISTRY["quay"])  # quay.example.com/acme/web is not in the tag cache
    api.post("/hooks/nope", content=b"{}")
    counted = {
        (labels["source"], labels["result"]): value
        for labels, value in counters.read(client, settings.key_prefix, "webhook_deliveries")
    }
    assert counted == {
        ("github", "accepted"): 1.0,
        ("github", "unauthorized"): 1.0,
        ("gitlab", "malformed"): 1.0,
        ("gitea", "too-large"): 1.0,
        ("quay", "ignored"): 1.0,
        ("other", "unknown"): 1.0,
    }


def test_path_secrets_never_reach_the_access_log(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        for source in ("dockerhub", "quay"):
            path = f"/hooks/{source}/{SECRETS[source]}"
            access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.9:41234", "POST", path, "1.1", 202)
        access.info(
            '%s - "%s %s HTTP/%s" %d', "10.0.0.9:41234", "POST", "/hooks/github", "1.1", 202
        )
    assert SECRETS["dockerhub"] not in caplog.text
    assert SECRETS["quay"] not in caplog.text
    assert "/hooks/dockerhub/<redacted>" in caplog.text
    assert "/hooks/quay/<redacted>" in caplog.text
    assert "/hooks/github HTTP/1.1" in caplog.text


# --- a burst through a real worker --------------------------------------------------------------


def test_a_burst_of_pushes_ends_in_at_most_two_sync_runs(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    """Five pushes land before a worker takes the first: they coalesce into one run plus one
    rerun. The repository holds no manifests path, so each run fails at `generate`, which ends a
    run as success does; what is counted is how many runs start."""
    remote = GitRemote(tmp_path / "git")
    remote.commit({"README.md": "no manifests here\n"}, "initial")
    name = f"burst-{key_prefix.strip(':')}"
    settings = e2e.worker_settings(
        redis_server.url,
        tmp_path / "work",
        webhooks={"generic": SECRETS["generic"]},
        pipelines=[{"name": name, "git": {"url": remote.url, "paths": ["deploy"]}}],
    )
    api = TestClient(create_app(settings))
    body = json.dumps({"url": remote.url, "branch": "master"}).encode()
    for _ in range(5):
        path, headers = generic("git")(body, SECRETS["generic"], str(uuid.uuid4()))
        assert api.post(path, content=body, headers=headers).status_code == 202

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    keys = Keys("e2e:")

    def starts() -> list[str]:
        found = events.recent(client, keys, name, count=100)
        return [e.message for e in found if e.message.startswith("sync started")]

    with start_worker(
        celery_app, pool="solo", queues=["sync"], perform_ping_check=False, shutdown_timeout=30
    ):
        deadline = time.monotonic() + 60
        idle_since = None
        while time.monotonic() < deadline:
            busy = client.exists(keys.sync_run(name), keys.sync_pending(name))
            if busy or not starts():
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 1.0:
                break
            time.sleep(0.1)
        assert queued(client, "e2e:", "sync") == []
    assert 1 <= len(starts()) <= 2, starts()
