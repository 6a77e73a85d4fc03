"""The REST API on the real Redis: auth scopes, status, events, sync, identity, readiness,
metrics."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import test_sync_e2e as e2e
import yaml
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from gitops_pipeline import artifacts, events, jobs
from gitops_pipeline.api.app import create_app
from gitops_pipeline.api.records import UNREADABLE_ERRORS
from gitops_pipeline.celery_app import app
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.manifests.load import Manifest
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
    settings = e2e.worker_settings(redis_server.url, tmp_path_factory.mktemp("work"))
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


# --- Redis or the broker down -------------------------------------------------------------------


@pytest.fixture
def redis_down(key_prefix: str) -> TestClient:
    """The app with its Redis (and so its broker) on a port nothing listens on."""
    config = {
        "redis_url": f"redis://127.0.0.1:{free_port()}/0",
        "key_prefix": key_prefix,
        "api": {"tokens": [{"token": ADMIN, "scope": "admin"}]},
        "pipelines": [{"name": "sample-app", "git": {"url": "file:///srv/sample-app.git"}}],
    }
    return TestClient(create_app(parse_settings(yaml.safe_dump(config), "test", {})))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/pipelines"),
        ("GET", "/api/v1/pipelines/sample-app"),
        ("GET", "/api/v1/pipelines/sample-app/events"),
        ("GET", "/api/v1/pipelines/sample-app/workloads"),
        ("GET", "/api/v1/pipelines/sample-app/images"),
        ("GET", "/api/v1/jobs/x"),
        ("POST", "/api/v1/pipelines/sample-app/sync"),
        ("GET", "/metrics"),
    ],
)
def test_redis_down_is_503_with_why(redis_down: TestClient, method: str, path: str) -> None:
    response = redis_down.request(method, path, headers=_auth(ADMIN))
    assert response.status_code == 503, response.text
    assert response.json()["detail"].startswith("Redis is unreachable: ")


def test_redis_down_still_answers_401_and_404_first(redis_down: TestClient) -> None:
    assert redis_down.get("/api/v1/pipelines").status_code == 401
    assert redis_down.get("/api/v1/pipelines/nope", headers=_auth(ADMIN)).status_code == 404


def test_a_write_the_broker_refuses_is_503_and_its_job_failed(settings: Settings) -> None:
    # Redis (the job store) answers; the broker the app sends to does not.
    app = create_app(settings)
    app.state.celery.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    api = TestClient(app)
    body = {"workloads": ["default:Deployment/web"], "automate": True}
    response = api.post("/api/v1/pipelines/sample-app/policy", json=body, headers=_auth(ADMIN))
    assert response.status_code == 503, response.text
    assert response.json()["detail"].startswith("could not queue the policy job: ")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    (key,) = client.keys(f"{settings.key_prefix}job:*")
    job_id = key.removeprefix(f"{settings.key_prefix}job:")
    stored = jobs.get(client, settings.key_prefix, job_id)
    assert stored is not None
    assert stored["status"] == "failed"
    assert stored["error"].startswith("could not queue: ")
    shown = api.get(f"/api/v1/jobs/{job_id}", headers=_auth(READ)).json()
    assert (shown["status"], shown["error"]) == ("failed", stored["error"])

    refused = api.post("/api/v1/pipelines/sample-app/sync", headers=_auth(ADMIN))
    assert refused.status_code == 503
    assert refused.json()["detail"].startswith("could not queue the sync: ")


# --- jobs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "failed", "error": "the job expired before it ran"},
        {"id": "partial", "status": "queued"},
        {"id": "partial", "pipeline": "sample-app", "kind": "policy", "request": "not json"},
    ],
    ids=["no-id", "no-request", "request-not-json"],
)
def test_a_partial_job_hash_is_an_unknown_job(
    api: TestClient, settings: Settings, fields: dict[str, str]
) -> None:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.hset(f"{settings.key_prefix}job:partial", mapping=fields)
    response = api.get("/api/v1/jobs/partial", headers=_auth(READ))
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown job 'partial' (jobs are kept for 7 days)"


def test_a_job_as_written(api: TestClient, settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    job_id = jobs.create(client, settings.key_prefix, "sample-app", "policy", {"workloads": []})
    shown = api.get(f"/api/v1/jobs/{job_id}", headers=_auth(READ)).json()
    assert (shown["id"], shown["status"], shown["request"]) == (job_id, "queued", {"workloads": []})


# --- workloads and images from the applied revision ---------------------------------------------

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _deployment(name: str, namespace: str | None, containers: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": {"fluxcd.io/automated": "true"}}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "template": {
                "spec": {"containers": [{"name": c, "image": i} for c, i in containers.items()]}
            }
        },
    }


def _seed_applied(settings: Settings, **record: str) -> None:
    """A synced revision as `sync.generate` and `sync.apply` leave it: the rendered artifact
    and the sync record naming it (with `record` overriding fields)."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.key_prefix)
    objects = [
        _deployment("web", None, {"web": "registry.example/team/web:1.0.0"}),
        _deployment(
            "api",
            "team",
            {"api": "registry.example/team/api:2.0.0", "proxy": "registry.example/proxy:1.1"},
        ),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
    ]
    artifact = keys.artifact(hashlib.sha256(f"sample-app@{REVISION}".encode()).hexdigest())
    manifests = [Manifest(obj, "deploy/app.yaml") for obj in objects]
    artifacts.store(client, artifact, "sample-app", REVISION, manifests, ttl=3600)
    now = time.time()
    fields = {
        "status": "synced-with-errors",
        "run": "run-1",
        "head": REVISION,
        "revision": REVISION,
        "artifact": artifact,
        "git_ready": "1",
        "applied": "2",
        "unchanged": "0",
        "ignored": "0",
        "failed": "1",
        "deleted": "0",
        "errors": json.dumps({"team:Deployment/api": "admission webhook denied it"}),
        "error": "",
        "started_at": f"{now - 2:.3f}",
        "finished_at": f"{now:.3f}",
        "duration_seconds": "2.000",
        "apply_seconds": "0.500",
    }
    client.hset(keys.sync("sample-app"), mapping={**fields, **record})


WORKLOADS = "/api/v1/pipelines/sample-app/workloads"
IMAGES = "/api/v1/pipelines/sample-app/images"


def test_workloads_and_their_filters(api: TestClient, settings: Settings) -> None:
    _seed_applied(settings)
    listed = api.get(WORKLOADS, headers=_auth(READ)).json()
    assert {w["id"]: w["sync"] for w in listed} == {
        "default:Deployment/web": "applied",
        "team:Deployment/api": "admission webhook denied it",
    }
    api_workload = next(w for w in listed if w["id"] == "team:Deployment/api")
    assert [c["name"] for c in api_workload["containers"]] == ["api", "proxy"]
    assert api_workload["automated"] is True

    def ids(**params: str) -> list[str]:
        response = api.get(WORKLOADS, params=params, headers=_auth(READ))
        assert response.status_code == 200
        return [w["id"] for w in response.json()]

    assert ids(namespace="team") == ["team:Deployment/api"]
    assert ids(namespace="default") == ["default:Deployment/web"]
    assert ids(namespace="nowhere") == []
    assert ids(container="proxy") == ["team:Deployment/api"]
    assert ids(container="web") == ["default:Deployment/web"]
    assert ids(namespace="team", container="proxy") == ["team:Deployment/api"]
    assert ids(namespace="team", container="web") == []
    assert ids(namespace="default", container="proxy") == []


def test_images_of_one_workload_and_refusals(api: TestClient, settings: Settings) -> None:
    _seed_applied(settings)
    everything = api.get(IMAGES, headers=_auth(READ)).json()
    assert [(i["workload"], i["container"]) for i in everything] == [
        ("default:Deployment/web", "web"),
        ("team:Deployment/api", "api"),
        ("team:Deployment/api", "proxy"),
    ]
    # Kinds compare case-insensitively, as fluxctl's do.
    one = api.get(IMAGES, params={"workload": "team:deployment/api"}, headers=_auth(READ))
    assert one.status_code == 200
    assert [i["container"] for i in one.json()] == ["api", "proxy"]
    assert one.json()[0]["image"] == "registry.example/team/api:2.0.0"
    in_team = api.get(IMAGES, params={"namespace": "team"}, headers=_auth(READ)).json()
    assert {i["workload"] for i in in_team} == {"team:Deployment/api"}

    malformed = api.get(IMAGES, params={"workload": "just-a-name"}, headers=_auth(READ))
    assert malformed.status_code == 400
    assert "is not of the form namespace:Kind/name" in malformed.json()["detail"]
    unknown = api.get(IMAGES, params={"workload": "team:Deployment/nope"}, headers=_auth(READ))
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == (
        "workload team:Deployment/nope not found in pipeline 'sample-app'"
    )
    assert api.get(IMAGES, params={"limit": 0}, headers=_auth(READ)).status_code == 422
    assert api.get(IMAGES, params={"limit": 1}, headers=_auth(READ)).status_code == 200


# --- corrupt sync records -----------------------------------------------------------------------


@pytest.mark.parametrize("errors", ["not json", "[1, 2]", '"a string"', "[" * 100_000])
def test_unreadable_per_object_errors_are_no_500(
    api: TestClient, settings: Settings, errors: str
) -> None:
    _seed_applied(settings, errors=errors)
    detail = api.get("/api/v1/pipelines/sample-app", headers=_auth(READ))
    assert detail.status_code == 200, detail.text
    assert detail.json()["errors"] == UNREADABLE_ERRORS  # as the status page shows it
    assert detail.json()["revision"] == REVISION
    (listed,) = api.get("/api/v1/pipelines", headers=_auth(READ)).json()
    assert listed["errors"] == UNREADABLE_ERRORS
    workloads = api.get(WORKLOADS, headers=_auth(READ))
    assert workloads.status_code == 200, workloads.text
    assert {w["sync"] for w in workloads.json()} == {"applied"}


def test_corrupt_numbers_in_the_sync_record_read_as_absent(
    api: TestClient, settings: Settings
) -> None:
    _seed_applied(settings, applied="abc", failed="1.5", duration_seconds="nan", git_ready="maybe")
    response = api.get("/api/v1/pipelines/sample-app", headers=_auth(READ))
    assert response.status_code == 200, response.text
    body = response.json()
    for field in ("applied", "failed", "duration_seconds", "git_ready"):
        assert field not in body, field
    assert (body["unchanged"], body["apply_seconds"], body["status"]) == (
        0,
        0.5,
        "synced-with-errors",
    )


def test_metrics_skip_a_corrupt_sample_not_the_scrape(api: TestClient, settings: Settings) -> None:
    _seed_applied(settings, duration_seconds="abc", applied="", failed="inf")
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    text = response.text
    assert 'gitops_sync_duration_seconds{pipeline="sample-app",stage="apply"} 0.5' in text
    assert 'stage="total"' not in text
    assert 'result="applied"' not in text and 'result="failed"' not in text
    assert 'gitops_sync_objects{pipeline="sample-app",result="unchanged"} 0.0' in text
    assert 'gitops_git_ready{pipeline="sample-app"} 1.0' in text
    assert 'gitops_sync_status{pipeline="sample-app",status="synced-with-errors"} 1.0' in text


def test_damaged_artifact_and_counters_are_read_around(api: TestClient, settings: Settings) -> None:
    """A damaged rendered artifact reads as nothing rendered, and a damaged counter field or
    value is left out of the scrape: no 500, and the readable rest is still there."""
    _seed_applied(settings)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.key_prefix)
    client.set(str(client.hget(keys.sync("sample-app"), "artifact")), "{not json")
    for path in ("workloads", "images"):
        response = api.get(f"/api/v1/pipelines/sample-app/{path}", headers=_auth(READ))
        assert response.status_code == 200 and response.json() == [], (path, response.text)
    assert api.get("/").status_code == 200

    metric = f"{settings.key_prefix}metrics:syncs"
    client.hset(metric, json.dumps({"pipeline": "sample-app", "result": "success"}), "3")
    client.hset(metric, "{not json", "1")
    client.hset(metric, json.dumps({"pipeline": "sample-app", "result": "failed"}), "many")
    scrape = api.get("/metrics")
    assert scrape.status_code == 200
    lines = [line for line in scrape.text.splitlines() if line.startswith("gitops_syncs_total")]
    assert lines == ['gitops_syncs_total{pipeline="sample-app",result="success"} 3.0']
