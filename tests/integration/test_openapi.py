"""The published OpenAPI, fuzzed by schemathesis against the app on the real Redis: no endpoint
answers any generated request, with either token, with a server error.

Each operation is its own test, driven by Hypothesis directly: schemathesis's pytest plugin
(`from_fixture(...).parametrize()`) does not run on this pytest.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import schemathesis
import yaml
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from gitops_pipeline import presence
from gitops_pipeline.api.app import create_app
from gitops_pipeline.config import parse_settings

TOKENS = {"read": "openapi-read-token", "admin": "openapi-admin-token"}
PIPELINES = ["sample-app", "over-ssh"]
EXAMPLES = 15  # per operation, each sent with both tokens; the module stays well under a minute
METHODS = {"get", "put", "post", "delete", "patch"}

# Real pipeline names most of the time, so handlers get past their 404s.
FUZZ = {
    "dictionaries": {"pipelines": {"values": PIPELINES}},
    "parameters": {"path.name": {"dictionary": "pipelines", "probability": 0.8}},
}


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
    config = schemathesis.Config.from_dict(FUZZ)
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
