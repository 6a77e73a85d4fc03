"""A private Docker registry (distribution 2.8, ``docker-registry``) and a daemon-less pusher.

:func:`push_image` writes minimal images straight through the Registry HTTP API V2: a config
blob carrying the creation time and labels, an image manifest (schema 2) and, for several
platforms, a manifest list. That is all an image-update automation reads from a registry.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from gitops_pipeline.testbed.process import HOST, ManagedProcess, free_port

READY_TIMEOUT = 30.0
REALM = "gitops-pipeline-testbed"

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_CONFIG_V1 = "application/vnd.docker.container.image.v1+json"


@dataclass(eq=False)
class RegistryServer:
    """A running registry on ``http://127.0.0.1:PORT``, optionally behind htpasswd auth."""

    process: ManagedProcess
    port: int
    storage_dir: Path
    users: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the form used in image references."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def auth(self) -> tuple[str, str] | None:
        """Credentials of the first htpasswd user, or ``None`` without auth."""
        for user, password in self.users.items():
            return user, password
        return None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()


# --- htpasswd ---------------------------------------------------------------------------------


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd file (the only scheme distribution accepts).

    Uses the ``bcrypt`` package if installed, else ``htpasswd -B`` (apache2-utils), else the
    system's libcrypt (libxcrypt, as on Debian 12/13, implements bcrypt).
    """
    try:
        import bcrypt

        hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        return hashed.decode()
    except ImportError:
        pass
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        result = subprocess.run(
            [htpasswd, "-nbB", "user", password], check=True, capture_output=True, text=True
        )
        return result.stdout.strip().split(":", 1)[1]
    return _libcrypt_bcrypt(password)


def _libcrypt_bcrypt(password: str) -> str:
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise RuntimeError("no bcrypt implementation: install `bcrypt` or apache2-utils")
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    setting = lib.crypt_gensalt(b"$2y$", 10, None, 0)
    hashed = lib.crypt(password.encode(), setting) if setting else None
    if not hashed or not hashed.startswith(b"$2"):
        raise RuntimeError("libcrypt has no bcrypt: install `bcrypt` or apache2-utils")
    return str(hashed.decode())


def write_htpasswd(path: Path, users: Mapping[str, str]) -> None:
    path.write_text("".join(f"{user}:{bcrypt_hash(pw)}\n" for user, pw in users.items()))
    path.chmod(0o600)


# --- server -----------------------------------------------------------------------------------


def serve_registry(
    binary: str, workdir: Path, config: dict[str, Any], ready: tuple[int, ...]
) -> ManagedProcess:
    """Run ``docker-registry serve`` on ``config`` (written to ``workdir``) until ``/v2/``
    answers one of the ``ready`` statuses."""
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # Only config.yml configures the registry: REGISTRY_* variables would override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = ManagedProcess(
        "docker-registry", [binary, "serve", str(config_path)], workdir, env=env
    ).start()
    url = f"http://{config['http']['addr']}/v2/"
    process.wait_until_ready(
        lambda: httpx.get(url, timeout=2.0).status_code in ready, READY_TIMEOUT, what=url
    )
    return process


def start_registry(
    workdir: Path,
    htpasswd_users: dict[str, str] | None = None,
    *,
    executable: str | None = None,
) -> RegistryServer:
    """Start ``docker-registry serve`` with filesystem storage in ``workdir``, deletes enabled.

    With ``htpasswd_users`` (user -> password) every request needs HTTP basic auth.
    """
    binary = executable or shutil.which("docker-registry") or "/usr/bin/docker-registry"
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    port = free_port(HOST)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"{HOST}:{port}",
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    if htpasswd_users:
        htpasswd = workdir / "htpasswd"
        write_htpasswd(htpasswd, htpasswd_users)
        config["auth"] = {"htpasswd": {"realm": REALM, "path": str(htpasswd)}}
    process = serve_registry(binary, workdir, config, ready=(200, 401))
    return RegistryServer(
        process=process, port=port, storage_dir=storage, users=dict(htpasswd_users or {})
    )


# --- pushing ----------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _rfc3339(created: datetime) -> str:
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_platform(spec: str) -> tuple[str, str, str | None]:
    parts = spec.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must be os/arch[/variant], got {spec!r}")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.is_error:
        raise RuntimeError(
            f"registry {what}: {response.request.method} {response.request.url} -> "
            f"{response.status_code} {response.text[:500]}"
        )
    return response


def _upload_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    digest = _digest(data)
    started = _check(client.post(f"/v2/{repository}/blobs/uploads/"), "start blob upload")
    # The upload URL carries state in its query (``_state=...``): add to it, do not replace it.
    location = httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest})
    _check(
        client.put(
            location,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        ),
        "finish blob upload",
    )
    return digest


def _put_manifest(
    client: httpx.Client, repository: str, reference: str, body: bytes, media_type: str
) -> str:
    response = _check(
        client.put(
            f"/v2/{repository}/manifests/{reference}",
            content=body,
            headers={"Content-Type": media_type},
        ),
        f"put manifest {repository}:{reference}",
    )
    digest = str(response.headers.get("Docker-Content-Digest", ""))
    if digest != _digest(body):
        raise RuntimeError(f"registry returned digest {digest!r}, expected {_digest(body)}")
    return digest


def _push_platform_image(
    client: httpx.Client,
    repository: str,
    reference: str | None,
    created: datetime,
    labels: Mapping[str, str],
    os_name: str,
    architecture: str,
    variant: str | None,
) -> tuple[bytes, str]:
    """Push config blob + schema-2 manifest; ``reference=None`` pushes by digest."""
    image_config: dict[str, Any] = {
        "created": _rfc3339(created),
        "architecture": architecture,
        "os": os_name,
        "config": {"Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created": _rfc3339(created), "created_by": "gitops-pipeline testbed"}],
    }
    if variant:
        image_config["variant"] = variant
    config_bytes = _canonical_json(image_config)
    config_digest = _upload_blob(client, repository, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {
            "mediaType": IMAGE_CONFIG_V1,
            "size": len(config_bytes),
            "digest": config_digest,
        },
        "layers": [],
    }
    body = _canonical_json(manifest)
    digest = _put_manifest(client, repository, reference or _digest(body), body, MANIFEST_V2)
    return body, digest


def push_image(
    registry_url: str,
    repository: str,
    tag: str,
    created: datetime,
    labels: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    platforms: list[str] | None = None,
) -> str:
    """Push a minimal image (no layers) as ``repository:tag``; return the tag's digest.

    ``created`` (naive means UTC) and ``labels`` go into the image config. Without
    ``platforms`` a single linux/amd64 image is pushed; with e.g. ``["linux/amd64",
    "linux/arm64/v8"]`` one image per platform is pushed by digest and the tag points at a
    manifest list of them. The returned digest is the ``Docker-Content-Digest`` of the tag.
    """
    with httpx.Client(base_url=registry_url, auth=auth, timeout=30.0) as client:
        if not platforms:
            _, digest = _push_platform_image(
                client, repository, tag, created, labels or {}, "linux", "amd64", None
            )
            return digest
        entries = []
        for spec in platforms:
            os_name, architecture, variant = _parse_platform(spec)
            body, digest = _push_platform_image(
                client, repository, None, created, labels or {}, os_name, architecture, variant
            )
            platform: dict[str, str] = {"architecture": architecture, "os": os_name}
            if variant:
                platform["variant"] = variant
            entries.append(
                {
                    "mediaType": MANIFEST_V2,
                    "size": len(body),
                    "digest": digest,
                    "platform": platform,
                }
            )
        manifest_list = {"schemaVersion": 2, "mediaType": MANIFEST_LIST_V2, "manifests": entries}
        return _put_manifest(
            client, repository, tag, _canonical_json(manifest_list), MANIFEST_LIST_V2
        )
