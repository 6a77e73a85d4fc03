"""The published OpenAPI, fuzzed by schemathesis against the app on the real Redis: no endpoint
answers any generated request, with either token, with a server error.

Each operation is its own test, driven by Hypothesis directly: schemathesis's pytest plugin
(`from_fixture(...).parametrize()`) does not run on this pytest.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import schemathesis
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from gitops_pipeline import artifacts, events, jobs, presence
from gitops_pipeline.api.app import create_app
from gitops_pipeline.config import parse_settings
from gitops_pipeline.manifests.load import Manifest
from gitops_pipeline.registry.cache import ImageInfo, TagCache
from gitops_pipeline.store import Keys, connect_binary

TOKENS = {"read": "openapi-read-token", "admin": "openapi-admin-token"}
PIPELINES = ["sample-app", "over-ssh"]
EXAMPLES = 15  # per operation, each sent with both tokens; the module stays well under a minute
METHODS = {"get", "put", "post", "delete", "patch"}

REVISION = "89abcdef0123456789abcdef0123456789abcdef"
IMAGE = "registry.example:5000/team/app"
WORKLOADS = ["default:Deployment/sample-app", "team:StatefulSet/db"]
PARTIAL_JOB = "expired-job"


def _fuzz(job_ids: list[str]) -> dict[str, Any]:
    """Real pipeline names, workloads and job ids most of the time, so handlers get past their
    404s and 400s to the code that reads what a sync and a job left in Redis."""
    return {
        "dictionaries": {
            "pipelines": {"values": PIPELINES},
            "workloads": {"values": WORKLOADS},
            "namespaces": {"values": ["default", "team"]},
            "containers": {"values": ["app", "sidecar", "migrate"]},
            "jobs": {"values": [*job_ids, PARTIAL_JOB]},
        },
        "parameters": {
            "path.name": {"dictionary": "pipelines", "probability": 0.8},
            "path.job_id": {"dictionary": "jobs", "probability": 0.8},
            "query.workload": {"dictionary": "workloads", "probability": 0.5},
            "query.namespace": {"dictionary": "namespaces", "probability": 0.5},
            "query.container": {"dictionary": "containers", "probability": 0.5},
        },
    }


def _workload(kind: str, meta: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {"template": {"spec": pod}},
    }


def _seed(redis_url: str, key_prefix: str) -> list[str]:
    """What a synced-with-errors pipeline, a failed one, a few jobs and the image scanner leave
    in Redis, in the shapes `tasks/sync.py`, `jobs` and `registry.cache` write; the job ids."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(key_prefix)
    objects = [
        _workload(
            "Deployment",
            {
                "name": "sample-app",
                "annotations": {
                    "fluxcd.io/automated": "true",
                    "fluxcd.io/tag.app": "semver:^1.0",
                    "fluxcd.io/tag.sidecar": "glob:v1.*",
                },
            },
            {
                "initContainers": [{"name": "migrate", "image": f"{IMAGE}:v1.0.0"}],
                "containers": [
                    {"name": "app", "image": f"{IMAGE}:v1.0.0"},
                    {"name": "sidecar", "image": f"{IMAGE}:v1.1.0"},
                ],
            },
        ),
        _workload(
            "StatefulSet",
            {
                "name": "db",
                "namespace": "team",
                "annotations": {
                    "fluxcd.io/locked": "true",
                    "fluxcd.io/locked_user": "alice",
                    "fluxcd.io/locked_msg": "frozen",
                    "fluxcd.io/tag.db": "regexp:^(",  # a broken filter: a policy error
                },
            },
            {"containers": [{"name": "db", "image": "postgres"}]},
        ),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
    ]
    artifact = keys.artifact(hashlib.sha256(f"sample-app@{REVISION}".encode()).hexdigest())
    manifests = [Manifest(obj, "deploy/app.yaml") for obj in objects]
    artifacts.store(client, artifact, "sample-app", REVISION, manifests, ttl=3600)
    now = time.time()
    client.hset(
        keys.sync("sample-app"),
        mapping={
            "status": "synced-with-errors",
            "run": "run-1",
            "head": REVISION,
            "revision": REVISION,
            "artifact": artifact,
            "git_ready": "1",
            "applied": "2",
            "unchanged": "1",
            "ignored": "0",
            "failed": "1",
            "deleted": "0",
            "errors": json.dumps({"team:StatefulSet/db": "field is immutable"}),
            "error": "",
            "verify_error": "",
            "started_at": f"{now - 3:.3f}",
            "finished_at": f"{now:.3f}",
            "duration_seconds": "3.000",
            "fetch_seconds": "1.000",
            "generate_seconds": "1.000",
            "apply_seconds": "1.000",
        },
    )
    client.hset(
        keys.sync("over-ssh"),
        mapping={"status": "failed", "run": "run-2", "git_ready": "0", "error": "fetch failed"},
    )
    for name in PIPELINES:
        events.record(client, keys, name, "start", "sync started (full)")
        events.record(client, keys, name, "fetched", "fetched it", revision=REVISION)
        events.record(client, keys, name, "error", "team:StatefulSet/db: field is immutable")

    queued = jobs.create(client, key_prefix, "sample-app", "policy", {"workloads": WORKLOADS})
    done = jobs.create(client, key_prefix, "sample-app", "release", {"all": True})
    jobs.update(client, key_prefix, done, status="running")
    result = {"results": [{"workload": WORKLOADS[0], "status": "success", "updates": []}]}
    jobs.succeed(client, key_prefix, done, "sample-app", REVISION, result)
    failed = jobs.create(client, key_prefix, "over-ssh", "policy", {"workloads": []})
    jobs.fail(client, key_prefix, failed, "workload not found")
    # What a late write to an expired job could leave: no id, no request.
    client.hset(jobs.job_key(key_prefix, PARTIAL_JOB), mapping={"status": "failed", "error": "x"})

    cache = TagCache(connect_binary(redis_url), key_prefix)
    tags = {f"v1.{minor}.0": f"sha256:{minor:064x}" for minor in range(4)}
    cache.put_tags(IMAGE, {**tags, "latest": tags["v1.3.0"]})
    for minor, digest in enumerate(tags.values()):
        cache.put_image(digest, ImageInfo(created=datetime(2024, 1, 1 + minor, tzinfo=UTC)))
    return [queued, done, failed]


def _app(redis_url: str, key_prefix: str) -> FastAPI:
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "api": {"tokens": [{"token": t, "scope": s} for s, t in TOKENS.items()]},
        "pipelines": [
            {"name": "sample-app", "git": {"url": "file:///srv/sample-app.git"}},
            {"name": "over-ssh", "git": {"url": "git@git.example.invalid:team/config.git"}},
        ],
    }
    return create_app(parse_settings(yaml.safe_dump(config), "test", {}))


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every published operation; building the schema touches no Redis."""
    paths: dict[str, dict[str, Any]] = _app("redis://127.0.0.1:1/0", "-").openapi()["paths"]
    return [(m.upper(), path) for path, item in paths.items() for m in item if m in METHODS]


OPERATIONS = _operations()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(redis_url: str, key_prefix: str, method: str, path: str) -> None:
    app = _app(redis_url, key_prefix)
    # A live worker, so /readyz may answer 200: its 503 means "no worker", which is no bug.
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    presence.announce(client, key_prefix, "schemathesis@test", ["sync", "default"], ttl=600)
    config = schemathesis.Config.from_dict(_fuzz(_seed(redis_url, key_prefix)))
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app, config=config)
    operation = schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def answers_without_server_error(case: schemathesis.Case) -> None:
        for token in TOKENS.values():
            case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error]
            )

    answers_without_server_error()


def test_the_seed_is_what_the_api_reads(redis_url: str, key_prefix: str) -> None:
    """The fuzzing above is only as deep as its seed: check the API reads every part of it."""
    queued, done, failed = _seed(redis_url, key_prefix)
    client = TestClient(_app(redis_url, key_prefix))
    headers = {"Authorization": f"Bearer {TOKENS['read']}"}

    def get(path: str, **params: str) -> Any:
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    workloads = get("/api/v1/pipelines/sample-app/workloads")
    assert [w["id"] for w in workloads] == WORKLOADS
    assert workloads[1]["sync"] == "field is immutable" and workloads[1]["policy_errors"]
    images = get("/api/v1/pipelines/sample-app/images", workload=WORKLOADS[0])
    # migrate (glob:*, with latest), app (semver:^1.0), sidecar (glob:v1.*)
    assert [len(i["tags"]) for i in images] == [5, 4, 4]
    detail = get("/api/v1/pipelines/sample-app")
    assert (detail["revision"], len(detail["events"])) == (REVISION, 3)
    assert [get(f"/api/v1/jobs/{j}")["status"] for j in (queued, done, failed)] == [
        "queued",
        "succeeded",
        "failed",
    ]
    assert client.get(f"/api/v1/jobs/{PARTIAL_JOB}", headers=headers).status_code == 404
    assert 'gitops_sync_objects{pipeline="sample-app",result="applied"} 2.0' in (
        client.get("/metrics").text
    )
