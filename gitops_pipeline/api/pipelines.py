"""REST endpoints for pipelines: status, events, sync requests and the SSH identity."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

import redis
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from gitops_pipeline import events, identity
from gitops_pipeline.api.deps import Admin, Read, known, state
from gitops_pipeline.api.records import number, object_errors
from gitops_pipeline.errors import ConfigError
from gitops_pipeline.store import Keys

router = APIRouter(prefix="/api/v1/pipelines", tags=["pipelines"])

RECENT_EVENTS = 20
_STREAM_ID_MAX = 2**64 - 1
_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "unknown pipeline"}}


class PipelineStatus(BaseModel):
    """The pipeline's sync record (`<prefix>sync:<pipeline>`); fields appear once written."""

    name: str
    status: str | None = Field(
        None, description="syncing, synced, synced-with-errors or failed; absent before a sync"
    )
    run: str | None = Field(None, description="id of the current or last sync run")
    head: str | None = Field(None, description="branch head fetched by the last run")
    revision: str | None = Field(None, description="last applied revision")
    error: str | None = Field(None, description="why the last run failed; empty after success")
    verify_error: str | None = Field(None, description="the last signature verification problem")
    git_ready: bool | None = Field(None, description="whether the last fetch reached the remote")
    applied: int | None = None
    unchanged: int | None = None
    ignored: int | None = None
    failed: int | None = None
    deleted: int | None = None
    errors: dict[str, str] | None = Field(None, description="object -> error, of the last apply")
    artifact: str | None = Field(None, description="Redis key of the last rendered manifests")
    started_at: float | None = None
    finished_at: float | None = None
    last_success_at: float | None = None
    duration_seconds: float | None = None
    fetch_seconds: float | None = None
    generate_seconds: float | None = None
    apply_seconds: float | None = None


class Event(BaseModel):
    id: str = Field(description="stream id; pass it as `after` to read what came later")
    time: float
    kind: str
    message: str
    data: dict[str, Any]


class PipelineDetail(PipelineStatus):
    events: list[Event] = Field(description=f"the newest {RECENT_EVENTS}, oldest first")


class SyncRequested(BaseModel):
    job: str = Field(description="id of the enqueued sync.trigger task")
    previous_run: str = Field(
        description="the run current when the sync was asked for (empty if none): the run that "
        "answers this request is the next one to finish with another id"
    )
    events_after: str = Field(
        description="the newest event id at the time; events of the run "
        "that answers this request come after it"
    )


class IdentityOut(BaseModel):
    pipeline: str
    public_key: str = Field(description="authorized_keys line; add it to the git host")
    fingerprint: str = Field(description="SHA256:..., as ssh-keygen -l prints it")
    source: Literal["ssh_key_file", "generated"]
    in_use: bool = Field(description="whether git uses it (the pipeline's URL is an ssh URL)")


_COUNTS = ("applied", "unchanged", "ignored", "failed", "deleted")
_TIMES = (
    "started_at",
    "finished_at",
    "last_success_at",
    "duration_seconds",
    "fetch_seconds",
    "generate_seconds",
    "apply_seconds",
)
_TEXTS = ("status", "run", "head", "revision", "error", "verify_error", "artifact")


def _status(client: redis.Redis, keys: Keys, name: str) -> dict[str, Any]:
    """The sync record's fields as `PipelineStatus` takes them; a corrupt field reads as absent
    (a corrupt `errors` as `records.UNREADABLE_ERRORS`), so one bad field costs no 500."""
    raw = cast(dict[str, str], client.hgetall(keys.sync(name)))
    fields: dict[str, Any] = {f: raw[f] for f in _TEXTS if f in raw}
    for field in _COUNTS:
        count = number(raw.get(field))
        if count is not None and count.is_integer():
            fields[field] = int(count)
    for field in _TIMES:
        fields[field] = number(raw.get(field))
    if raw.get("git_ready") in ("0", "1"):
        fields["git_ready"] = raw["git_ready"] == "1"
    if "errors" in raw:
        fields["errors"] = object_errors(raw["errors"])
    return {**fields, "name": name}


def _events(found: list[events.Event]) -> list[Event]:
    return [Event(**event.__dict__) for event in found]


def _stream_id(value: str) -> tuple[int, int]:
    milliseconds, _, sequence = value.partition("-")
    parts = (int(milliseconds), int(sequence))
    if any(part > _STREAM_ID_MAX for part in parts):
        raise HTTPException(422, f"after: {value!r} is not an event id")
    return parts


@router.get("", response_model_exclude_none=True)
def pipelines(request: Request, scope: Read) -> list[PipelineStatus]:
    """Every configured pipeline with its last sync."""
    settings, client, keys = state(request)
    return [PipelineStatus(**_status(client, keys, p.name)) for p in settings.pipelines]


@router.get("/{name}", response_model_exclude_none=True, responses=_UNKNOWN)
def pipeline(name: str, request: Request, scope: Read) -> PipelineDetail:
    """One pipeline's last sync and its newest events."""
    settings, client, keys = state(request)
    known(settings, name)
    recent = events.recent(client, keys, name, count=RECENT_EVENTS)
    return PipelineDetail(**_status(client, keys, name), events=_events(recent))


@router.get("/{name}/events", responses=_UNKNOWN)
def pipeline_events(
    name: str,
    request: Request,
    scope: Read,
    count: Annotated[int, Query(ge=1, le=events.MAX_EVENTS)] = 50,
    after: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{1,20}-[0-9]{1,20}$",
            description="an event id: return up to `count` events after it, oldest first "
            "(`0-0` for the oldest); without it, the newest `count`",
        ),
    ] = None,
) -> list[Event]:
    """The pipeline's event log; `after` turns it into a cursor for following it."""
    settings, client, keys = state(request)
    known(settings, name)
    if after is None:
        return _events(events.recent(client, keys, name, count=count))
    if _stream_id(after) == (_STREAM_ID_MAX, _STREAM_ID_MAX):
        return []  # nothing can come after the largest id (and Redis refuses to range from it)
    return _events(events.after(client, keys, name, after, count=count))


@router.post("/{name}/sync", status_code=202, responses=_UNKNOWN)
def sync(name: str, request: Request, scope: Admin) -> SyncRequested:
    """Fetch and apply now (every object, correcting drift); a running sync gets one rerun."""
    settings, client, keys = state(request)
    known(settings, name)
    previous_run = cast(str | None, client.hget(keys.sync(name), "run")) or ""
    newest = events.recent(client, keys, name, count=1)
    try:
        result = request.app.state.celery.send_task(
            "sync.trigger", args=[name], kwargs={"full": True}, ignore_result=True
        )
    except Exception as exc:  # the broker refused or is down: kombu's errors have no common base
        raise HTTPException(503, f"could not queue the sync: {exc}") from None
    return SyncRequested(
        job=str(result.id),
        previous_run=previous_run,
        events_after=newest[0].id if newest else "0-0",
    )


def _identity(name: str, found: identity.Identity) -> IdentityOut:
    return IdentityOut(pipeline=name, **found.__dict__)


@router.get(
    "/{name}/identity",
    responses={**_UNKNOWN, 500: {"description": "git.ssh_key_file cannot be read"}},
)
def get_identity(name: str, request: Request, scope: Read) -> IdentityOut:
    """The SSH public key git uses for the pipeline (its deploy key), generated on first use."""
    settings, client, _ = state(request)
    known(settings, name)
    try:
        return _identity(name, identity.public_identity(settings, client, name))
    except ConfigError as exc:
        raise HTTPException(500, str(exc)) from None


@router.post(
    "/{name}/identity/regenerate",
    responses={**_UNKNOWN, 409: {"description": "the key comes from git.ssh_key_file"}},
)
def regenerate_identity(name: str, request: Request, scope: Admin) -> IdentityOut:
    """Replace the generated deploy key; the git host must be given the new public key."""
    settings, client, _ = state(request)
    known(settings, name)
    try:
        return _identity(name, identity.regenerate(settings, client, name))
    except ConfigError as exc:
        raise HTTPException(409, str(exc)) from None
