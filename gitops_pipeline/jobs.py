"""Jobs: what a release or policy change asked for, how it went, and whether its commit is applied.

A job is a Redis hash at `<prefix>job:<id>` (kept `JOB_TTL`), written by the web process when it
enqueues the operation and by the worker that runs it. The task message carries only the job id;
the request travels in the hash. Once a job's commit is pushed, its SHA waits in the pipeline's
`<prefix>jobs:awaiting:<pipeline>` hash until a sync applies a revision that contains it.

Fields: `id`, `pipeline`, `kind` (release/policy), `request` (JSON), `status`
(queued -> running -> succeeded | failed), `error`, `result` (JSON: per-workload outcomes),
`sha` (empty when nothing needed committing), `sync` (waiting | applied), `applied_revision`,
`created_at` / `finished_at` / `applied_at` (Unix time).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis

JOB_TTL = 7 * 24 * 3600
"""Seconds a job stays queryable after its last change."""


def job_key(prefix: str, job_id: str) -> str:
    return f"{prefix}job:{job_id}"


def awaiting_key(prefix: str, pipeline: str) -> str:
    return f"{prefix}jobs:awaiting:{pipeline}"


def create(
    client: redis.Redis, prefix: str, pipeline: str, kind: str, request: Mapping[str, Any]
) -> str:
    """Record a new job (queued) and return its id."""
    job_id = uuid.uuid4().hex
    key = job_key(prefix, job_id)
    fields = {
        "id": job_id,
        "pipeline": pipeline,
        "kind": kind,
        "request": json.dumps(request),
        "status": "queued",
        "created_at": f"{time.time():.3f}",
    }
    _store(client, key, fields)
    return job_id


# Change a job only while it exists: a late write to an expired job must not leave a partial one.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


def update(client: redis.Redis, prefix: str, job_id: str, **fields: str) -> bool:
    """Set fields of an existing job; False (nothing written) when it is unknown or expired."""
    pairs = [item for pair in fields.items() for item in pair]
    return bool(client.eval(_UPDATE, 1, job_key(prefix, job_id), str(JOB_TTL), *pairs))


def _store(client: redis.Redis, key: str, fields: Mapping[str, str]) -> None:
    with client.pipeline() as pipe:
        pipe.hset(key, mapping=dict(fields))
        pipe.expire(key, JOB_TTL)
        pipe.execute()


def get(client: redis.Redis, prefix: str, job_id: str) -> dict[str, Any] | None:
    """The job with `request` and `result` decoded; None when unknown or expired."""
    raw = cast(dict[str, str], client.hgetall(job_key(prefix, job_id)))
    if not raw:
        return None
    job: dict[str, Any] = dict(raw)
    for field in ("request", "result"):
        if field in job:
            job[field] = json.loads(job[field])
    return job


def request(client: redis.Redis, prefix: str, job_id: str) -> dict[str, Any]:
    """The job's request; LookupError when the job expired before it ran."""
    raw = cast(str | None, client.hget(job_key(prefix, job_id), "request"))
    if raw is None:
        raise LookupError(f"job {job_id} is unknown or expired")
    return cast(dict[str, Any], json.loads(raw))


def finished(client: redis.Redis, prefix: str, job_id: str) -> bool:
    """Whether the job already ended (a redelivered task then leaves it as it is)."""
    status = cast(str | None, client.hget(job_key(prefix, job_id), "status"))
    return status in ("succeeded", "failed")


def pushed(
    client: redis.Redis, prefix: str, job_id: str, pipeline: str, sha: str, result: Any
) -> None:
    """Record the job's commit the moment it is pushed, so that a worker dying before the job
    is finished loses neither the SHA nor the outcome (the redelivered run finds nothing left to
    change, and `succeed` keeps what is recorded here)."""
    if update(client, prefix, job_id, sha=sha, result=json.dumps(result), sync="waiting"):
        client.hset(awaiting_key(prefix, pipeline), job_id, sha)


def succeed(
    client: redis.Redis, prefix: str, job_id: str, pipeline: str, sha: str | None, result: Any
) -> None:
    """Finish the job; a pushed commit waits for the sync that applies it.

    What `pushed` recorded stands: a run with nothing left to commit (the redelivery of one
    that pushed) does not blank it, and a pushed commit is not recorded twice."""
    fields = {"status": "succeeded", "finished_at": f"{time.time():.3f}"}
    recorded = cast(str | None, client.hget(job_key(prefix, job_id), "sha"))
    if sha is not None and sha != recorded:
        pushed(client, prefix, job_id, pipeline, sha, result)
    elif sha is None and not recorded:
        fields.update(sha="", result=json.dumps(result), sync="")
    update(client, prefix, job_id, **fields)


def fail(client: redis.Redis, prefix: str, job_id: str, error: str) -> None:
    update(client, prefix, job_id, status="failed", error=error, finished_at=f"{time.time():.3f}")


def mark_applied(
    client: redis.Redis,
    prefix: str,
    pipeline: str,
    revision: str,
    contains: Callable[[str, str], bool],
) -> list[str]:
    """Mark the jobs whose commit `revision` contains as applied; return their ids.

    `contains(ancestor, descendant)` answers from the worker's git mirror; a commit that is not
    (yet) in the applied revision keeps waiting.
    """
    key = awaiting_key(prefix, pipeline)
    waiting = cast(dict[str, str], client.hgetall(key))
    # A job that expired unapplied (its branch was reset past its commit) waits no longer.
    expired = [job for job in waiting if not client.exists(job_key(prefix, job))]
    done = [
        job
        for job, sha in waiting.items()
        if job not in expired and (sha == revision or contains(sha, revision))
    ]
    now = f"{time.time():.3f}"
    for job_id in done:
        update(client, prefix, job_id, sync="applied", applied_revision=revision, applied_at=now)
    if done or expired:
        client.hdel(key, *done, *expired)
    return done
