"""Registry credentials from the config, a docker config.json, and imagePullSecrets."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from gitops_pipeline.registry.credentials import credentials_for


def _auths(host: str, user: str, password: str) -> dict[str, object]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"auths": {host: {"auth": token}}}


def test_config_wins(tmp_path: Path) -> None:
    docker_config = tmp_path / "config.json"
    docker_config.write_text(json.dumps(_auths("quay.io", "file-user", "file-pw")))
    configured = {"quay.io": ("cfg-user", "cfg-pw")}
    assert credentials_for("quay.io", configured, docker_config) == ("cfg-user", "cfg-pw")


def test_docker_config_json(tmp_path: Path) -> None:
    docker_config = tmp_path / "config.json"
    auths = _auths("quay.io", "robot", "s3cret")
    auths["auths"].update(_auths("https://index.docker.io/v1/", "hubber", "hubpw")["auths"])  # type: ignore[attr-defined]
    docker_config.write_text(json.dumps(auths))
    assert credentials_for("quay.io", {}, docker_config) == ("robot", "s3cret")
    assert credentials_for("docker.io", {}, docker_config) == ("hubber", "hubpw")
    assert credentials_for("ghcr.io", {}, docker_config) is None
    assert credentials_for("quay.io", {}, tmp_path / "absent.json") is None


def test_image_pull_secrets() -> None:
    secrets = [_auths("127.0.0.1:5000", "puller", "pw")]
    assert credentials_for("127.0.0.1:5000", {}, None, secrets) == ("puller", "pw")
    assert credentials_for("127.0.0.1:5001", {}, None, secrets) is None
