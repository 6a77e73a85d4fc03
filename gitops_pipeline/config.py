"""Settings and pipeline specs: one YAML file, overridable by environment variables, validated.

This module is the one place for defaults. Errors are raised as `ConfigError` with a single
line that names the key, and the file and line (or the environment variable) it came from.

Environment overrides: `GITOPS__<KEY>__<SUBKEY>=value` sets any key (values are read as YAML
scalars, so `true`, `30s` and `[a, b]` work). Pipelines are addressed by name, upper-cased with
`-` as `_`: `GITOPS__PIPELINES__SAMPLE_APP__SYNC__INTERVAL=1m`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gitops_pipeline.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("gitops.yaml")
ENV_CONFIG_PATH = "GITOPS_CONFIG"
ENV_OVERRIDE_PREFIX = "GITOPS__"

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: object) -> float:
    """Parse `30s`, `5m`, `1h`, `1h30m` or a bare number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 5m, 1h)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _DURATION_RE.match(text)
        if not text or match is None or not any(match.groups()):
            raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 5m, 1h)")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 5m, 1h)")
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be positive")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _gc_mode(value: object) -> object:
    if value in (True, False, "dry-run"):
        return value
    raise ValueError(f"invalid value {value!r}: use true, false or dry-run")


GarbageCollection = Annotated[bool | Literal["dry-run"], BeforeValidator(_gc_mode)]


def _read_secret(value: object) -> object:
    """A secret is a literal string or `{file: path}`; the file's content is read, stripped."""
    if isinstance(value, Mapping):
        if set(value) != {"file"}:
            raise ValueError("a secret is a string or a mapping with the single key 'file'")
        path = Path(str(value["file"])).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from exc
    return value


Secret = Annotated[SecretStr, BeforeValidator(_read_secret)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiToken(_Model):
    """A bearer token for the REST API; `read` may only look, `admin` may change things."""

    token: Secret
    scope: Literal["read", "admin"] = "read"


class ApiSettings(_Model):
    listen: str = Field("127.0.0.1:8080", description="host:port the web process binds")
    public_url: str | None = Field(None, description="URL printed for users; default from listen")
    tokens: list[ApiToken] = Field(default_factory=list)
    status_page: Literal["public", "token", "off"] = Field(
        "public",
        description="the HTML status page at /: public (no auth; meant for a loopback listen), "
        "token (a read or admin bearer token, as the REST API) or off (404)",
    )


class FlowerSettings(_Model):
    listen: str = "127.0.0.1:5555"
    basic_auth: Secret | None = Field(
        None, description="user:password; Flower refuses to start without"
    )


class RegistryHost(_Model):
    """Rate limit shared by every scanner process for one registry host."""

    rps: float = Field(10.0, gt=0)
    burst: int = Field(20, ge=1)


class RegistryCredential(_Model):
    username: str
    password: Secret


class RegistrySettings(_Model):
    hosts: dict[str, RegistryHost] = Field(default_factory=dict)
    default_rps: float = Field(10.0, gt=0)
    default_burst: int = Field(20, ge=1)
    insecure_hosts: list[str] = Field(
        default_factory=list, description="hosts reached over plain http"
    )
    credentials: dict[str, RegistryCredential] = Field(default_factory=dict)
    docker_config: Path | None = Field(None, description="a docker config.json with auths")
    platform: str = "linux/amd64"
    dispatch_interval: Duration = Field(60.0, description="how often due repositories are enqueued")


class WebhookSettings(_Model):
    """One secret per webhook source; a source without a secret is refused (404)."""

    github: Secret | None = None
    gitlab: Secret | None = None
    bitbucket: Secret | None = None
    gitea: Secret | None = None
    generic: Secret | None = None
    distribution: Secret | None = None
    dockerhub: Secret | None = None
    harbor: Secret | None = None
    quay: Secret | None = None
    max_body_bytes: int = Field(
        1024 * 1024, ge=1, description="larger deliveries are refused (413) before they are read"
    )
    replay_ttl: Duration = Field(
        24 * 3600.0, description="how long delivery ids are remembered, so a replay does nothing"
    )


class TaskLimits(_Model):
    """Time limits on every task, and how long a dead worker's work waits to be redelivered."""

    soft_time_limit: Duration = 300.0
    hard_time_limit: Duration = 360.0
    visibility_timeout: Duration | None = Field(
        None, description="unacked messages return to the queue after this; default 2 x hard + 60s"
    )
    lock_ttl: Duration = Field(30.0, description="cluster lock TTL; renewed while a sync writes")

    @model_validator(mode="after")
    def _limits_in_order(self) -> TaskLimits:
        if self.soft_time_limit >= self.hard_time_limit:
            raise ValueError("soft_time_limit must be below hard_time_limit")
        if self.visibility_timeout is not None and self.visibility_timeout <= self.hard_time_limit:
            raise ValueError("visibility_timeout must be longer than hard_time_limit")
        return self


class WorkerSettings(_Model):
    sync_concurrency: int = Field(2, ge=1)
    scan_concurrency: int = Field(4, ge=1)
    automation_concurrency: int = Field(1, ge=1)


class GitSettings(_Model):
    url: str
    branch: str = "master"
    paths: list[str] = Field(default_factory=lambda: ["."])
    label: str = Field("flux", description="name of the sync tag")
    user: str = "gitops-pipeline"
    email: str = "gitops-pipeline@users.noreply.local"
    signing_key: str | None = None
    verify_signatures: Literal["none", "all", "first-parent"] = "none"
    gpg_keys_dir: Path | None = None
    ssh_key_file: Path | None = None
    token: Secret | None = Field(None, description="HTTPS token for the remote")
    readonly: bool = False
    poll_interval: Duration = 300.0
    timeout: Duration = 20.0
    ci_skip: bool = False

    @field_validator("url")
    @classmethod
    def _url_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _keys_for_verification(self) -> GitSettings:
        if self.verify_signatures != "none" and self.gpg_keys_dir is None:
            raise ValueError(
                f"verify_signatures: {self.verify_signatures} needs gpg_keys_dir "
                "(a directory of trusted public keys)"
            )
        return self

    @field_validator("paths")
    @classmethod
    def _paths_inside_repo(cls, value: list[str]) -> list[str]:
        for path in value:
            if Path(path).is_absolute() or ".." in Path(path).parts:
                raise ValueError(f"path {path!r} must be relative and inside the repository")
        return value


class ClusterSettings(_Model):
    kubeconfig: Path | None = None
    context: str | None = None
    impersonate: str | None = Field(None, description="service account to act as")
    allow_namespaces: list[str] = Field(default_factory=list)
    default_namespace: str = "default"


class SyncSettings(_Model):
    interval: Duration = 300.0
    timeout: Duration = 300.0
    garbage_collection: GarbageCollection = False


class PipelineRegistry(_Model):
    scanning: bool = True
    include_images: list[str] = Field(default_factory=list)
    exclude_images: list[str] = Field(default_factory=list)


class Pipeline(_Model):
    """One repo-to-cluster flow (one Flux v1 daemon)."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    git: GitSettings
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    manifest_generation: bool = False
    registry: PipelineRegistry = Field(default_factory=PipelineRegistry)
    automation_interval: Duration = 300.0


class Settings(_Model):
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("gp:", description="prefix of every Redis key the operator writes")
    work_dir: Path = Field(
        Path("~/.cache/gitops-pipeline/work"), description="git mirrors and scratch space"
    )
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    api: ApiSettings = Field(default_factory=ApiSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    tasks: TaskLimits = Field(default_factory=TaskLimits)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    pipelines: list[Pipeline] = Field(default_factory=list)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{value!r} is not a redis:// URL")
        return value

    @field_validator("pipelines")
    @classmethod
    def _unique_names(cls, value: list[Pipeline]) -> list[Pipeline]:
        seen: set[str] = set()
        for pipeline in value:
            if pipeline.name in seen:
                raise ValueError(f"pipeline name {pipeline.name!r} is used twice")
            seen.add(pipeline.name)
        return value

    def pipeline(self, name: str) -> Pipeline:
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        raise ConfigError(f"unknown pipeline {name!r}")

    @property
    def visibility_timeout(self) -> float:
        """Longer than the longest hard limit, so a running task is never redelivered."""
        if self.tasks.visibility_timeout is not None:
            return self.tasks.visibility_timeout
        return self.tasks.hard_time_limit * 2 + 60


# --- loading --------------------------------------------------------------------------------

Location = tuple[str | int, ...]


def _node_lines(node: yaml.Node, path: Location, out: dict[Location, int]) -> None:
    """Record the 1-based line of every key and list item in the composed YAML tree."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _node_lines(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, (*path, index), out)


def _parse_scalar(text: str) -> object:
    """Read an environment value as YAML (`true`, `30`, `[a, b]`), else as the plain string.

    Only flow collections written as such become lists or mappings, so `gp:` stays a string.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, dict | list) and not text.lstrip().startswith(("[", "{")):
        return text
    return text if value is None and text.strip() not in ("", "null", "~") else value


def _env_key(name: str) -> str:
    return name.upper().replace("-", "_")


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[Location, str]:
    """Apply `GITOPS__A__B=v` overrides in place; return where each overridden key came from."""
    sources: dict[Location, str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_OVERRIDE_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_OVERRIDE_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node: Any = data
        location: list[str | int] = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                index = next(
                    (
                        n
                        for n, item in enumerate(node)
                        if isinstance(item, dict)
                        and _env_key(str(item.get("name", ""))) == part.upper()
                    ),
                    None,
                )
                if index is None:
                    raise ConfigError(f"{var}: no pipeline named {part!r} to override")
                location.append(index)
                if last:
                    raise ConfigError(f"{var}: name a key inside the pipeline")
                node = node[index]
                continue
            location.append(part)
            if last:
                node[part] = _parse_scalar(environ[var])
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict | list):
                    raise ConfigError(f"{var}: {'.'.join(map(str, location))} is not a mapping")
        sources[tuple(location)] = f"environment variable {var}"
    return sources


def _format_location(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: Mapping[str, Any]) -> tuple[Location, str]:
    location: Location = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return location, f"unknown key {location[-1]!r}"
    if kind == "missing":
        return location, f"missing required key {location[-1]!r}"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    return location, message


def _existing_prefix(data: object, location: Location) -> Location:
    """Drop the parts pydantic appends for union members (e.g. `.bool`) that are not keys."""
    node: Any = data
    for depth, part in enumerate(location):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return location[: depth + 1] if isinstance(node, dict) else location[:depth]
    return location


def _where(
    location: Location, file: str, lines: Mapping[Location, int], sources: Mapping[Location, str]
) -> str:
    for depth in range(len(location), -1, -1):
        prefix = location[:depth]
        if prefix in sources:
            return sources[prefix]
        if prefix in lines:
            return f"{file}:{lines[prefix]}"
    return file


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, override and validate the configuration; raise `ConfigError` with one line."""
    environ = os.environ if environ is None else environ
    config_path = Path(path or environ.get(ENV_CONFIG_PATH) or DEFAULT_CONFIG_PATH)
    try:
        text = config_path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {config_path} not found (pass --config or set {ENV_CONFIG_PATH})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {config_path}: {exc.strerror}") from None
    return parse_settings(text, str(config_path), environ)


def parse_settings(text: str, file: str, environ: Mapping[str, str]) -> Settings:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{file}{line}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: the top level must be a mapping of keys")
    lines: dict[Location, int] = {}
    if node is not None:
        _node_lines(node, (), lines)
    sources = apply_env_overrides(data, environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        location, message = _describe(errors[0])
        if errors[0]["type"] != "missing":
            location = _existing_prefix(data, location)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = _where(location, file, lines, sources)
        raise ConfigError(f"{where}: {_format_location(location)}: {message}{more}") from None
