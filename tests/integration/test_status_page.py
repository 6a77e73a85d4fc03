"""The status page at `/` on the real Redis: its HTML, its access modes, and headless Chromium.

The browser test serves the app over real HTTP (uvicorn on a loopback port), seeds the sync
record, rendered artifact and events in the shape the sync chain writes them, fills the tag
cache by scanning the real registry, and looks at the page in Debian's Chromium through
chromedriver. It writes `artifacts/status-page.png` at the repository root on every run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gitops_pipeline import artifacts, events
from gitops_pipeline.api.app import create_app
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.manifests.load import Manifest
from gitops_pipeline.registry.cache import ImageInfo, TagCache
from gitops_pipeline.registry.client import RegistryClient
from gitops_pipeline.registry.scan import scan_repository
from gitops_pipeline.store import Keys, connect, connect_binary
from gitops_pipeline.testbed.registry import RegistryServer, push_image

READ, ADMIN = "read-token-123", "admin-token-456"
PIPELINE, BROKEN = "sample-app", "broken-app"
NAMESPACE = "web"
REVISION = "3f2c1e9a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e"
OBJECT_ERROR = "admission webhook denied the request: replicas must be at most 10"
SYNC_ERROR = "fetch: repository file:///srv/broken-app.git not found"
HOSTILE = "<script>alert('xss');console.error('xss-executed')</script>"
HOSTILE_IMG = "<img src=x onerror=\"console.error('xss-executed')\">"
# Tag -> day of January 2024 the image was created; v2.0.0 is outside the semver filter.
CREATED = {"v1.0.0": 1, "v1.1.0": 2, "v1.2.0": 3, "v2.0.0": 4, "latest": 5}

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "artifacts" / "status-page.png"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]


def _settings(redis_url: str, key_prefix: str, **api: Any) -> Settings:
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "api": {
            "tokens": [{"token": READ, "scope": "read"}, {"token": ADMIN, "scope": "admin"}],
            **api,
        },
        "pipelines": [
            {
                "name": PIPELINE,
                "git": {"url": "file:///srv/sample-app.git"},
                "cluster": {"default_namespace": NAMESPACE},
            },
            {"name": BROKEN, "git": {"url": "file:///srv/broken-app.git"}},
        ],
    }
    return parse_settings(yaml.safe_dump(config), "test", {})


def _deployment(name: str, containers: dict[str, str], annotations: dict[str, str]) -> Any:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": c, "image": i} for c, i in containers.items()]}
            }
        },
    }


def _seed(settings: Settings, image_repo: str) -> None:
    """A synced-with-errors pipeline and a failed one, as `sync.generate` / `sync.apply` and
    the failure handler leave them in Redis."""
    client = connect(settings.redis_url)
    keys = Keys(settings.key_prefix)
    objects = [
        _deployment(
            "sample-app",
            {"app": f"{image_repo}:v1.0.0", "sidecar": f"{image_repo}:v1.1.0"},
            {"fluxcd.io/automated": "true", "fluxcd.io/tag.app": "semver:^1.0"},
        ),
        _deployment(
            "worker",
            {"worker": f"{image_repo}:v1.2.0"},
            {
                "fluxcd.io/locked": "true",
                "fluxcd.io/locked_user": "alice",
                "fluxcd.io/locked_msg": f"frozen for the release {HOSTILE_IMG}",
                "fluxcd.io/tag.worker": "semver:^1.0",
            },
        ),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
    ]
    artifact = keys.artifact(hashlib.sha256(f"{PIPELINE}@{REVISION}".encode()).hexdigest())
    manifests = [Manifest(obj, "deploy/app.yaml") for obj in objects]
    artifacts.store(client, artifact, PIPELINE, REVISION, manifests, ttl=3600)
    now = time.time()
    client.hset(
        keys.sync(PIPELINE),
        mapping={
            "status": "synced-with-errors",
            "head": REVISION,
            "revision": REVISION,
            "artifact": artifact,
            "applied": 2,
            "unchanged": 0,
            "ignored": 0,
            "failed": 1,
            "deleted": 0,
            "errors": json.dumps({f"{NAMESPACE}:Deployment/worker": f"{OBJECT_ERROR} {HOSTILE}"}),
            "error": "",
            "started_at": f"{now - 90:.3f}",
            "finished_at": f"{now - 60:.3f}",
            "duration_seconds": "30.000",
        },
    )
    events.record(client, keys, PIPELINE, "start", "sync started (full)")
    events.record(client, keys, PIPELINE, "applied", f"applied 2 objects at {REVISION[:12]}")
    events.record(client, keys, PIPELINE, "error", f"{NAMESPACE}:Deployment/worker: {HOSTILE}")
    client.hset(keys.sync(BROKEN), mapping={"status": "failed", "error": SYNC_ERROR})
    events.record(client, keys, BROKEN, "error", SYNC_ERROR, stage="fetch")
    client.close()


def _put_tags(settings: Settings, repo: str) -> None:
    """Tags straight into the cache, for the tests that need no registry."""
    cache = TagCache(connect_binary(settings.redis_url), settings.key_prefix)
    digests = {tag: "sha256:" + hashlib.sha256(tag.encode()).hexdigest() for tag in CREATED}
    cache.put_tags(repo, digests)
    for tag, day in CREATED.items():
        cache.put_image(digests[tag], ImageInfo(created=datetime(2024, 1, day, tzinfo=UTC)))


# --- the HTML and the access modes (TestClient) ------------------------------------------------


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return _settings(redis_url, key_prefix)


def test_page_shows_pipelines_workloads_tags_and_events(settings: Settings) -> None:
    repo = "registry.example:5000/team/app"
    _seed(settings, repo)
    _put_tags(settings, repo)
    response = TestClient(create_app(settings)).get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert '<meta http-equiv="refresh" content="15">' in html
    assert f'<code title="{REVISION}">{REVISION[:12]}</code>' in html
    for text in (PIPELINE, BROKEN, "synced-with-errors", "failed", SYNC_ERROR, OBJECT_ERROR,
                 f"{NAMESPACE}:Deployment/sample-app", f"{repo}:v1.0.0", "semver:^1.0",
                 "sync started (full)", "alice"):  # fmt: skip
        assert text in html, text
    # Semver: newer by version within the filter (v2.0.0 is not allowed); glob: by created time.
    assert '<li class="tag tag-newer"><code>v1.2.0</code>' in html
    assert '<li class="tag tag-running"><code>v1.0.0</code>' in html
    assert '<li class="tag tag-newer"><code>latest</code>' in html
    assert '<li class="tag"><code>v1.0.0</code>' in html  # the sidecar runs v1.1.0
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#39;xss&#39;)" in html
    assert "&lt;img src=x onerror=" in html


def test_page_before_the_first_sync(settings: Settings) -> None:
    html = TestClient(create_app(settings)).get("/").text
    assert "never synced" in html
    assert "Nothing applied yet." in html
    assert "No events yet." in html


def test_page_when_the_rendered_manifests_expired(settings: Settings) -> None:
    _seed(settings, "registry.example:5000/team/app")
    client = connect(settings.redis_url)
    keys = Keys(settings.key_prefix)
    client.delete(str(client.hget(keys.sync(PIPELINE), "artifact")))
    client.hset(keys.sync(PIPELINE), "errors", "not json")
    client.close()
    html = TestClient(create_app(settings)).get("/").text
    assert f"The rendered manifests of {REVISION[:12]} are not in Redis" in html
    assert "the per-object errors are unreadable" in html


@pytest.mark.parametrize(
    ("mode", "headers", "status"),
    [
        ("public", {}, 200),
        ("off", {}, 404),
        ("off", {"Authorization": f"Bearer {ADMIN}"}, 404),
        ("token", {}, 401),
        ("token", {"Authorization": "Bearer wrong"}, 401),
        ("token", {"Authorization": f"Bearer {READ}"}, 200),
        ("token", {"Authorization": f"Bearer {ADMIN}"}, 200),
    ],
)
def test_status_page_setting(
    redis_url: str, key_prefix: str, mode: str, headers: dict[str, str], status: int
) -> None:
    api = TestClient(create_app(_settings(redis_url, key_prefix, status_page=mode)))
    response = api.get("/", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    assert api.get("/healthz").status_code == 200  # the rest of the app is unaffected


def test_public_page_on_a_non_loopback_listen_is_warned_about(
    redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "gitops_pipeline.api.page"]

    with caplog.at_level(logging.WARNING, logger="gitops_pipeline.api.page"):
        create_app(_settings(redis_url, key_prefix, listen="127.0.0.1:8080"))
        create_app(_settings(redis_url, key_prefix, listen="0.0.0.0:8080", status_page="token"))
        assert warnings() == []
        create_app(_settings(redis_url, key_prefix, listen="0.0.0.0:8080"))
    assert len(warnings()) == 1
    assert "status page at / is public" in warnings()[0]


# --- headless Chromium over real HTTP ----------------------------------------------------------


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the status page test needs Debian's chromium "
            "and chromium-driver; run `bash scripts/install-system-deps.sh` as root",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM  # with the driver's path given, Selenium Manager never runs
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _full_page_png(driver: Any) -> bytes:
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    return base64.b64decode(shot["data"])


def test_status_page_in_chromium(
    registry: RegistryServer, redis_url: str, key_prefix: str, chromium: Any
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    settings = _settings(redis_url, key_prefix)
    repository = f"status/{key_prefix.strip(':')}-app"
    for tag, day in CREATED.items():
        push_image(registry.url, repository, tag, datetime(2024, 1, day, tzinfo=UTC))
    image_repo = f"{registry.host}/{repository}"
    cache = TagCache(redis.Redis.from_url(redis_url), key_prefix)
    with RegistryClient(registry.host, insecure=True) as client:
        scan_repository(client, cache, image_repo, repository, lambda tags: tags, time.time())
    _seed(settings, image_repo)

    with _serve(create_app(settings)) as url:
        chromium.get(f"{url}/")
        # First, so that a failing run leaves a picture of what it saw.
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.unlink(missing_ok=True)
        SCREENSHOT.write_bytes(_full_page_png(chromium))
        with pytest.raises(NoAlertPresentException):
            chromium.switch_to.alert  # noqa: B018 - reading it is the check
        assert chromium.title == "gitops-pipeline status"
        body = chromium.find_element(By.TAG_NAME, "body").text
        row = chromium.find_element(By.CSS_SELECTOR, f'tr.pipeline[data-pipeline="{PIPELINE}"]')
        assert PIPELINE in row.text
        assert REVISION[:12] in row.text
        assert "synced-with-errors" in row.text
        broken = chromium.find_element(By.CSS_SELECTOR, f'tr.pipeline[data-pipeline="{BROKEN}"]')
        assert "failed" in broken.text
        assert SYNC_ERROR in body
        assert OBJECT_ERROR in body
        workload = chromium.find_element(
            By.CSS_SELECTOR, f'tr.workload[data-workload="{NAMESPACE}:Deployment/sample-app"]'
        )
        assert f"{image_repo}:v1.0.0" in workload.text
        newer = [e.text for e in workload.find_elements(By.CSS_SELECTOR, "li.tag-newer code")]
        assert newer == ["v1.2.0", "v1.1.0"]
        assert "sync started (full)" in body
        # Hostile values are shown as text and never run.
        assert HOSTILE in body
        assert HOSTILE_IMG in body
        assert chromium.find_elements(By.TAG_NAME, "script") == []
        assert chromium.find_elements(By.CSS_SELECTOR, "main img") == []
        logs = [entry["message"] for entry in chromium.get_log("browser")]
        assert not [m for m in logs if "xss-executed" in m or "Content Security Policy" in m], logs

    png = SCREENSHOT.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 1000 and height >= 600, (width, height)
    assert len(png) > 20_000
