"""The generated deploy key is what git uses: written 0600 for ssh, equal to what the API shows."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from gitops_pipeline import identity, runtime
from gitops_pipeline.api.app import create_app
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.tasks.sync import _mirror

ADMIN = "identity-admin-token"
SSH_URL = "git@git.example.invalid:team/config.git"


@pytest.fixture
def settings(redis_url: str, key_prefix: str, tmp_path: Path) -> Settings:
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "work_dir": str(tmp_path / "work"),
        "api": {"tokens": [{"token": ADMIN, "scope": "admin"}]},
        "pipelines": [
            {"name": "over-ssh", "git": {"url": SSH_URL}},
            {"name": "over-file", "git": {"url": "file:///srv/config.git"}},
        ],
    }
    return parse_settings(yaml.safe_dump(config), "test", {})


def _public_half(private_key_file: Path) -> str:
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private_key_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return " ".join(derived.stdout.split()[:2])


def _shown(api: TestClient, path: str) -> dict[str, str]:
    response = api.request(
        "POST" if path.endswith("regenerate") else "GET",
        f"/api/v1/pipelines/over-ssh/{path}",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 200, response.text
    shown: dict[str, str] = response.json()
    return shown


def test_key_file_is_private_and_matches_the_identity_endpoint(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    api = TestClient(create_app(settings))

    path = identity.key_file(settings, client, "over-ssh")
    assert path == settings.work_dir / "identity" / "over-ssh"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    shown = _shown(api, "identity")
    assert shown["in_use"] is True
    assert " ".join(shown["public_key"].split()[:2]) == _public_half(path)

    # A regenerated key replaces the file at the next use, still 0600.
    regenerated = _shown(api, "identity/regenerate")
    assert identity.key_file(settings, client, "over-ssh") == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert " ".join(regenerated["public_key"].split()[:2]) == _public_half(path)
    assert regenerated["public_key"] != shown["public_key"]


def test_no_key_file_for_a_non_ssh_url(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    assert identity.key_file(settings, client, "over-file") is None
    assert not (settings.work_dir / "identity").exists()
    assert client.exists(identity.redis_key(settings.key_prefix, "over-file")) == 0


def test_the_sync_mirror_hands_the_key_to_ssh(settings: Settings) -> None:
    runtime.init(settings)
    spec = settings.pipeline("over-ssh")
    command = _mirror(spec).env["GIT_SSH_COMMAND"]
    assert f"-i {settings.work_dir / 'identity' / 'over-ssh'} " in command
    assert "-o IdentitiesOnly=yes" in command
    assert "GIT_SSH_COMMAND" not in _mirror(settings.pipeline("over-file")).env
