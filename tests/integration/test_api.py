"""The REST API on the real Redis: auth scopes, status, events, sync, identity, readiness,
metrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis
import yaml
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from gitops_pipeline import events
from gitops_pipeline.api.app import create_app
from gitops_pipeline.celery_app import app, configure
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.store import Keys
from gitops_pipeline.testbed.process import free_port
from gitops_pipeline.testbed.redis_server import RedisServer

READ, ADMIN = "read-token-123", "admin-token-456"


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "api": {"tokens": [{"token": READ, "scope": "read"}, {"token": ADMIN, "scope": "admin"}]},
        "pipelines": [{"name": "sample-app", "git": {"url": "file:///srv/sample-app.git"}}],
    }
    return parse_settings(yaml.safe_dump(config), "test", {})


@pytest.fixture
def api(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"redis": "ok"}


@pytest.mark.parametrize("headers", [{}, _auth("wrong")], ids=["no-token", "bad-token"])
def test_api_needs_a_valid_token(api: TestClient, headers: dict[str, str]) -> None:
    response = api.get("/api/v1/pipelines", headers=headers)
    assert response.status_code == 401


def test_read_scope_reads_but_cannot_sync(api: TestClient) -> None:
    assert api.get("/api/v1/pipelines", headers=_auth(READ)).json() == [{"name": "sample-app"}]
    response = api.post("/api/v1/pipelines/sample-app/sync", headers=_auth(READ))
    assert response.status_code == 403


def test_sync_enqueues_one_trigger(api: TestClient, settings: Settings) -> None:
    response = api.post("/api/v1/pipelines/sample-app/sync", headers=_auth(ADMIN))
    assert response.status_code == 202
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    queued = client.lrange(f"{settings.key_prefix}celery:sync", 0, -1)
    assert len(queued) == 1
    message = json.loads(queued[0])
    assert message["headers"]["task"] == "sync.trigger"
    assert message["headers"]["id"] == response.json()["job"]


def test_unknown_pipeline_is_404(api: TestClient) -> None:
    response = api.get("/api/v1/pipelines/nope", headers=_auth(READ))
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown pipeline 'nope'"


def test_metrics_export_the_sync_record(api: TestClient, settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.hset(
        Keys(settings.key_prefix).sync("sample-app"),
        mapping={
            "status": "synced",
            "applied": 2,
            "failed": 0,
            "apply_seconds": "0.25",
            "duration_seconds": "1.5",
            "last_success_at": "1700000000.0",
        },
    )
    text = api.get("/metrics").text
    assert 'gitops_sync_duration_seconds{pipeline="sample-app",stage="apply"} 0.25' in text
    assert 'gitops_sync_duration_seconds{pipeline="sample-app",stage="total"} 1.5' in text
    assert 'gitops_sync_objects{pipeline="sample-app",result="applied"} 2.0' in text
    assert 'gitops_sync_last_success_timestamp_seconds{pipeline="sample-app"} 1.7e+09' in text
    assert 'gitops_sync_status{pipeline="sample-app",status="synced"} 1.0' in text


# --- events -------------------------------------------------------------------------------------


def _record_events(settings: Settings, count: int) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.key_prefix)
    for n in range(count):
        events.record(client, keys, "sample-app", "note", f"event {n}")
    return [e.id for e in events.recent(client, keys, "sample-app", count=count)]


def test_events_newest_first_then_after_a_cursor(api: TestClient, settings: Settings) -> None:
    ids = _record_events(settings, 5)
    path = "/api/v1/pipelines/sample-app/events"

    newest = api.get(path, params={"count": 3}, headers=_auth(READ)).json()
    assert [e["message"] for e in newest] == ["event 2", "event 3", "event 4"]
    assert [e["id"] for e in newest] == ids[2:]

    later = api.get(path, params={"after": ids[1], "count": 2}, headers=_auth(READ)).json()
    assert [e["message"] for e in later] == ["event 2", "event 3"]
    everything = api.get(path, params={"after": "0-0"}, headers=_auth(READ)).json()
    assert [e["id"] for e in everything] == ids
    assert api.get(path, params={"after": ids[-1]}, headers=_auth(READ)).json() == []
    top = "18446744073709551615-18446744073709551615"
    assert api.get(path, params={"after": top}, headers=_auth(READ)).json() == []


@pytest.mark.parametrize(
    "params", [{"after": "yesterday"}, {"after": "99999999999999999999-0"}, {"count": 0}]
)
def test_events_refuses_bad_cursors(api: TestClient, params: dict[str, str | int]) -> None:
    response = api.get("/api/v1/pipelines/sample-app/events", params=params, headers=_auth(READ))
    assert response.status_code == 422


def test_events_of_an_unknown_pipeline_is_404(api: TestClient) -> None:
    response = api.get("/api/v1/pipelines/nope/events", headers=_auth(READ))
    assert response.status_code == 404


def test_sync_answer_names_the_previous_run_and_the_newest_event(
    api: TestClient, settings: Settings
) -> None:
    ids = _record_events(settings, 2)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.hset(Keys(settings.key_prefix).sync("sample-app"), mapping={"run": "run-1"})
    answer = api.post("/api/v1/pipelines/sample-app/sync", headers=_auth(ADMIN)).json()
    assert answer["previous_run"] == "run-1"
    assert answer["events_after"] == ids[-1]


# --- identity -----------------------------------------------------------------------------------

IDENTITY = "/api/v1/pipelines/sample-app/identity"


def _ssh_keygen_fingerprint(public_key: str, tmp_path: Path) -> str:
    path = tmp_path / "key.pub"
    path.write_text(public_key + "\n")
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return listed.stdout.split()[1]


def test_identity_is_generated_once_and_stable(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    first = api.get(IDENTITY, headers=_auth(READ)).json()
    second = api.get(IDENTITY, headers=_auth(ADMIN)).json()
    assert first == second
    assert first["public_key"].startswith("ssh-ed25519 ")
    assert first["source"] == "generated"
    assert first["in_use"] is False  # file:// URL: git needs no key
    assert first["fingerprint"] == _ssh_keygen_fingerprint(first["public_key"], tmp_path)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    stored = client.get(f"{settings.key_prefix}identity:sample-app")
    assert stored is not None and stored.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert "PRIVATE" not in json.dumps(first)
    messages = [e.message for e in events.recent(client, Keys(settings.key_prefix), "sample-app")]
    assert messages == [f"deploy key generated ({first['fingerprint']})"]


def test_regenerate_changes_the_key_and_needs_admin(api: TestClient, settings: Settings) -> None:
    before = api.get(IDENTITY, headers=_auth(READ)).json()
    refused = api.post(f"{IDENTITY}/regenerate", headers=_auth(READ))
    assert refused.status_code == 403
    assert api.get(IDENTITY, headers=_auth(READ)).json() == before

    regenerated = api.post(f"{IDENTITY}/regenerate", headers=_auth(ADMIN)).json()
    assert regenerated["public_key"] != before["public_key"]
    assert regenerated["fingerprint"] != before["fingerprint"]
    assert api.get(IDENTITY, headers=_auth(READ)).json() == regenerated
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    messages = [e.message for e in events.recent(client, Keys(settings.key_prefix), "sample-app")]
    assert messages[-1] == f"deploy key regenerated ({regenerated['fingerprint']})"


def test_identity_of_a_configured_key_file(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f", str(key)],
        check=True,
        timeout=30,
    )
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "api": {"tokens": [{"token": ADMIN, "scope": "admin"}]},
        "pipelines": [
            {
                "name": "sample-app",
                "git": {"url": "git@example.invalid:o/r", "ssh_key_file": str(key)},
            },
            {"name": "lost", "git": {"url": "git@example.invalid:o/r", "ssh_key_file": "/nope"}},
        ],
    }
    api = TestClient(create_app(parse_settings(yaml.safe_dump(config), "test", {})))
    found = api.get(IDENTITY, headers=_auth(ADMIN)).json()
    assert found["public_key"].split()[:2] == key.with_suffix(".pub").read_text().split()[:2]
    assert (found["source"], found["in_use"]) == ("ssh_key_file", True)
    refused = api.post(f"{IDENTITY}/regenerate", headers=_auth(ADMIN))
    assert refused.status_code == 409
    assert "replace that file" in refused.json()["detail"]
    broken = api.get("/api/v1/pipelines/lost/identity", headers=_auth(ADMIN))
    assert broken.status_code == 500
    assert (
        broken.json()["detail"]
        == "git.ssh_key_file /nope: cannot read it (No such file or directory)"
    )


# --- readiness ----------------------------------------------------------------------------------


def test_readyz_is_503_without_workers(api: TestClient) -> None:
    response = api.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert (body["ready"], body["redis"], body["workers"]) == (False, "ok", [])
    assert body["reason"] == "no worker announced itself in the last 30 s"


def test_readyz_is_503_when_redis_is_unreachable(key_prefix: str) -> None:
    config = {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "key_prefix": key_prefix}
    api = TestClient(create_app(parse_settings(yaml.safe_dump(config), "test", {})))
    response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["redis"].startswith("unreachable: ")
    assert response.json()["reason"] == "Redis is unreachable"


def test_readyz_follows_a_real_worker(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Celery binds a process to one broker: the same Redis and prefix as the e2e workers.
    settings = parse_settings(
        yaml.safe_dump(
            {
                "redis_url": redis_server.url,
                "key_prefix": "e2e:",
                "work_dir": str(tmp_path_factory.mktemp("work")),
            }
        ),
        "test-config",
        {},
    )
    configure(settings)
    api = TestClient(create_app(settings))
    with start_worker(
        app, pool="solo", queues=["sync", "default"], perform_ping_check=False, shutdown_timeout=30
    ) as worker:
        response = api.get("/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["ready"] is True
        mine = [w for w in body["workers"] if w["hostname"] == worker.hostname]
        assert len(mine) == 1
        assert mine[0]["queues"] == ["default", "sync"]
    # A worker that stops cleanly withdraws at once rather than after its TTL.
    hostnames = [w["hostname"] for w in api.get("/readyz").json()["workers"]]
    assert worker.hostname not in hostnames
