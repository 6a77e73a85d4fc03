"""The REST API on the real Redis: auth scopes, pipeline status, sync trigger, metrics."""

from __future__ import annotations

import json

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from gitops_pipeline.api.app import create_app
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.store import Keys

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
