"""gitopsctl against a running API server (uvicorn on loopback) backed by the real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
import uvicorn
import yaml
from click.testing import CliRunner

from gitops_pipeline.api.app import create_app
from gitops_pipeline.cli.main import cli
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.events import record
from gitops_pipeline.store import Keys
from gitops_pipeline.testbed.process import free_port

TOKEN = "cli-admin-token"


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "api": {"tokens": [{"token": TOKEN, "scope": "admin"}]},
        "pipelines": [{"name": "sample-app", "git": {"url": "file:///srv/sample-app.git"}}],
    }
    return parse_settings(yaml.safe_dump(config), "test", {})


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _run(url: str, *args: str, token: str = TOKEN) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--url", url, "--token", token, *args])
    return result.exit_code, result.output


def test_pipelines_status_and_sync(api_url: str, settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.key_prefix)
    client.hset(
        keys.sync("sample-app"),
        mapping={
            "status": "synced",
            "revision": "0123456789abcdef",
            "applied": 2,
            "failed": 0,
            "verify_error": "commit 89ab has no valid signature from a trusted key",
        },
    )
    record(client, keys, "sample-app", "applied", "applied 2 objects at 0123456789ab")

    code, out = _run(api_url, "pipelines")
    assert code == 0
    assert "sample-app" in out and "synced" in out and "0123456" in out

    code, out = _run(api_url, "status", "-p", "sample-app")
    assert code == 0
    assert "verify_error: commit 89ab has no valid signature from a trusted key" in out
    assert "applied 2 objects at 0123456789ab" in out

    code, out = _run(api_url, "sync", "-p", "sample-app")
    assert code == 0
    assert out.startswith("Sync queued: job ")
    assert client.llen(f"{settings.key_prefix}celery:sync") == 1


def test_clear_one_line_errors(api_url: str) -> None:
    code, out = _run(api_url, "pipelines", token="wrong")
    assert (code, out.strip()) == (
        1,
        "Error: the API refused the token (set --token or GITOPS_TOKEN)",
    )
    code, out = _run(api_url, "status", "-p", "nope")
    assert (code, out.strip()) == (1, "Error: unknown pipeline 'nope'")
    unreachable = f"http://127.0.0.1:{free_port()}"
    code, out = _run(unreachable, "pipelines")
    assert code == 1
    assert out.startswith(f"Error: cannot reach the API at {unreachable}")
    assert len(out.strip().splitlines()) == 1


def test_usage_errors_exit_2(api_url: str) -> None:
    code, out = _run(api_url, "status")
    assert code == 2
    assert "Missing option '--pipeline'" in out
