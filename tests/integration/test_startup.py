"""Every process refuses a wrong config with exit code 2 and one line that names the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from gitops_pipeline.testbed.process import free_port
from gitops_pipeline.testbed.redis_server import RedisServer

REPO = Path(__file__).parents[2]
ENTRY_POINTS = {
    "web": [sys.executable, "-m", "gitops_pipeline.api"],
    "worker": [sys.executable, "-m", "workers.sync"],
    "beat": [sys.executable, "-m", "beat_schedule"],
}
PIPELINE = "pipelines:\n  - name: app\n    git:\n      url: file:///srv/app.git\n"


def _start(entry: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENTRY_POINTS[entry], "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (PIPELINE + "    colour: blue\n", ":5: pipelines[0].colour: unknown key 'colour'"),
        (
            PIPELINE + "    sync:\n      interval: 5x\n",
            ":6: pipelines[0].sync.interval: invalid duration '5x'",
        ),
        (
            "pipelines:\n  - name: app\n    git:\n      branch: main\n",
            ":3: pipelines[0].git.url: missing required key 'url'",
        ),
    ],
    ids=["unknown-key", "bad-duration", "missing-url"],
)
def test_bad_config_stops_with_one_line(
    entry: str, body: str, expected: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "gitops.yaml"
    config.write_text(f"redis_url: {redis_server.url}\n" + body)
    result = _start(entry, config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gitops-pipeline: error: {config}")
    assert expected.split(":", 2)[-1] in lines[0]
    # the line number is reported one line later, because redis_url is prepended
    line_number = int(expected.split(":")[1]) + 1
    assert f"{config}:{line_number}:" in lines[0]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_unreachable_redis_stops_with_one_line(entry: str, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    config = tmp_path / "gitops.yaml"
    config.write_text(f"redis_url: {url}\n{PIPELINE}")
    result = _start(entry, config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gitops-pipeline: error: redis_url {url}: Redis is unreachable")


def test_evicting_redis_is_refused(redis_server: RedisServer, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        config = tmp_path / "gitops.yaml"
        config.write_text(f"redis_url: {redis_server.url}\n{PIPELINE}")
        result = _start("worker", config)
    finally:
        client.config_set("maxmemory-policy", "noeviction")
    assert result.returncode == 2
    assert "maxmemory-policy is allkeys-lru" in result.stderr
    assert "need noeviction" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = _start("worker", tmp_path / "absent.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"gitops-pipeline: error: config file {tmp_path / 'absent.yaml'} not found "
        "(pass --config or set GITOPS_CONFIG)"
    )
