"""Which credentials a registry gets: the operator's config first, then a docker config.json,
then the workloads' imagePullSecrets (`.dockerconfigjson` contents). Parsing of docker's auth
formats (base64 `auth`, `index.docker.io` aliases, credential helpers) is left to the `docker`
package's auth module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from docker import auth as docker_auth

Credentials = tuple[str, str]


def _lookup(auths: Mapping[str, Any], registry: str) -> Credentials | None:
    """`auths` as docker's `parse_auth` returns them (decoded user and password per host)."""
    resolved = docker_auth.resolve_authconfig(
        docker_auth.AuthConfig({"auths": dict(auths)}), registry
    )
    if not resolved:
        return None
    username = resolved.get("username") or resolved.get("Username")
    password = resolved.get("password") or resolved.get("Password")
    if username and password:
        return str(username), str(password)
    return None


def credentials_for(
    registry: str,
    configured: Mapping[str, Credentials],
    docker_config: Path | None = None,
    pull_secrets: Iterable[Mapping[str, Any]] = (),
) -> Credentials | None:
    """Credentials for `registry` (as written in image names, e.g. `docker.io`), or None."""
    if registry in configured:
        return configured[registry]
    lookup = "https://index.docker.io/v1/" if registry == "docker.io" else registry
    if docker_config is not None and docker_config.exists():
        loaded = docker_auth.load_config(config_path=str(docker_config))
        found = _lookup(loaded.auths, lookup)
        if found:
            return found
    for secret in pull_secrets:
        found = _lookup(docker_auth.parse_auth(secret.get("auths", {})), lookup)
        if found:
            return found
    return None
