"""The sync chain: trigger -> fetch -> verify -> generate -> apply.

Messages carry the pipeline name, SHAs and artifact keys only. `apply` holds the cluster's
writer lock and checks its fencing token before every batch of writes and before moving the
sync marker.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from celery import chain

from gitops_pipeline import artifacts, counters, events, jobs, runs, runtime
from gitops_pipeline.celery_app import app
from gitops_pipeline.cluster.apply import Applied, Applier, ApplyResult
from gitops_pipeline.cluster.gc import GcResult, collect
from gitops_pipeline.config import Pipeline
from gitops_pipeline.errors import GitopsError, PermanentError, SignatureError
from gitops_pipeline.git.mirror import Mirror, redact
from gitops_pipeline.git.synctag import move_sync_tag, read_sync_tag
from gitops_pipeline.git.verify import Keyring, verify_range, verify_tag
from gitops_pipeline.locks import FencedLock
from gitops_pipeline.manifests.generate import render_paths
from gitops_pipeline.manifests.load import YAML_SUFFIXES, Manifest, load_blobs
from gitops_pipeline.tasks.base import PipelineTask, pipeline_of
from gitops_pipeline.tasks.clients import cluster_client, git_credentials

ARTIFACT_TTL = 24 * 3600


def _mirror(pipeline: Pipeline) -> Mirror:
    key, token = git_credentials(pipeline)
    return Mirror(
        Path(runtime.settings().work_dir).expanduser() / "mirrors" / pipeline.name,
        pipeline.git.url,
        timeout=pipeline.git.timeout,
        ssh_key_file=key,
        token=token,
    )


def _status(pipeline: str, **fields: str | int) -> None:
    runtime.redis_client().hset(runtime.keys().sync(pipeline), mapping=fields)


def _event(pipeline: str, kind: str, message: str, **data: Any) -> None:
    events.record(runtime.redis_client(), runtime.keys(), pipeline, kind, message, **data)


def _count(pipeline: str, metric: str, amount: float = 1, **labels: str) -> None:
    client, prefix = runtime.redis_client(), runtime.keys().prefix
    counters.incr(client, prefix, metric, amount, pipeline=pipeline, **labels)


def _count_finished(pipeline: str, result: ApplyResult, gc: GcResult) -> None:
    """Count a sync that got through apply, and its objects (a failed one: `on_failure`)."""
    _count(pipeline, "syncs", result="with-errors" if result.errors else "success")
    objects = {
        "applied": len(result.applied),
        "unchanged": len(result.unchanged),
        "ignored": len(result.ignored),
        "failed": len(result.errors),
        "deleted": len(gc.deleted),
    }
    for outcome, count in objects.items():
        if count:
            _count(pipeline, "synced_objects", count, result=outcome)


class SyncTask(PipelineTask):
    """A stage of the sync chain: a final failure ends the run and starts a pending rerun."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        super().on_failure(exc, task_id, args, kwargs, einfo)
        pipeline = pipeline_of(args, kwargs)
        if pipeline is not None:
            _count(pipeline, "syncs", result="failed")
            _finish_run(pipeline)


def _finish_run(pipeline: str) -> None:
    pending = runs.finish(runtime.redis_client(), runtime.keys(), pipeline)
    if pending is not None:
        trigger.delay(pipeline, full=pending == "full")


@app.task(name="sync.trigger", base=PipelineTask)
def trigger(pipeline: str, full: bool = False) -> str | None:
    """The one entry point for beat ticks, webhooks and `gitopsctl sync`.

    `full` applies every object (drift correction); otherwise only what changed since the
    last applied revision, plus what failed then. Returns the run id, or None when the
    trigger was folded into a pending rerun.
    """
    spec = runtime.settings().pipeline(pipeline)
    run_id = uuid.uuid4().hex
    ttl = int(runtime.settings().tasks.hard_time_limit * 6 + spec.sync.timeout)
    if not runs.start(runtime.redis_client(), runtime.keys(), pipeline, run_id, ttl, full):
        return None
    _status(pipeline, status="syncing", run=run_id, started_at=f"{time.time():.3f}")
    _event(pipeline, "start", f"sync started ({'full' if full else 'changed objects'})")
    chain(
        fetch.s(pipeline),
        verify.s(pipeline),
        generate.s(pipeline),
        apply.s(pipeline, full=full),
    ).apply_async()
    return run_id


@app.task(name="sync.fetch", base=SyncTask)
def fetch(pipeline: str) -> str:
    """Fetch the branch into this worker's mirror; return the HEAD SHA."""
    spec = runtime.settings().pipeline(pipeline)
    started = time.monotonic()
    try:
        head = _mirror(spec).fetch(spec.git.branch)
    except Exception:
        _status(pipeline, git_ready=0)  # every failed attempt, retried or not
        raise
    _status(pipeline, head=head, git_ready=1, fetch_seconds=f"{time.monotonic() - started:.3f}")
    _event(
        pipeline,
        "fetched",
        f"fetched {redact(spec.git.url)} {spec.git.branch} at {head[:12]}",
        revision=head,
    )
    return head


def _keyring(pipeline: Pipeline) -> Keyring:
    home = Path(runtime.settings().work_dir).expanduser() / "gnupg" / pipeline.name
    return Keyring(home, timeout=pipeline.git.timeout)


def _last_synced(pipeline: Pipeline, mirror: Mirror, keyring: Keyring | None) -> str | None:
    """The revision the sync marker points at: the sync tag, or Redis for read-only repos.

    With verification on, the sync tag must itself carry a valid signature.
    """
    if pipeline.git.readonly:
        return cast(str | None, runtime.redis_client().get(runtime.keys().marker(pipeline.name)))
    if keyring is not None:
        return verify_tag(mirror.path, pipeline.git.label, keyring, pipeline.git.timeout)
    return read_sync_tag(mirror.path, pipeline.git.label, pipeline.git.timeout)


@app.task(name="sync.verify", base=SyncTask)
def verify(head: str, pipeline: str) -> str:
    """Return the newest revision allowed to sync: never anything from an unverified commit."""
    spec = runtime.settings().pipeline(pipeline)
    mode = spec.git.verify_signatures
    if mode == "none":
        return head
    assert spec.git.gpg_keys_dir is not None  # the config refuses verification without keys
    keyring = _keyring(spec)
    keyring.import_dir(spec.git.gpg_keys_dir)
    mirror = _mirror(spec)
    base = _last_synced(spec, mirror, keyring)
    result = verify_range(mirror.path, base, head, mode, keyring, spec.git.timeout)
    if result.bad_commit is not None:
        _status(pipeline, verify_error=result.message or "")
        _event(pipeline, "error", result.message or "", commit=result.bad_commit)
    else:
        _status(pipeline, verify_error="")
    if result.revision is None:
        raise SignatureError(f"{result.message}; nothing before it is verified, nothing synced")
    _event(
        pipeline,
        "verified",
        f"verified signatures ({mode}) up to {result.revision[:12]}",
        revision=result.revision,
    )
    return result.revision


def _artifact_digest(pipeline: Pipeline, revision: str) -> str:
    material = json.dumps(
        [pipeline.name, revision, pipeline.git.paths, pipeline.manifest_generation],
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


@app.task(name="sync.generate", base=SyncTask)
def generate(revision: str, pipeline: str) -> str:
    """Render the manifests of `revision` into Redis; return the artifact key."""
    spec = runtime.settings().pipeline(pipeline)
    client = runtime.redis_client()
    key = runtime.keys().artifact(_artifact_digest(spec, revision))
    if client.expire(key, ARTIFACT_TTL):
        return key  # identical input is not rendered again
    started = time.monotonic()
    manifests = _render(spec, revision)
    artifacts.store(client, key, pipeline, revision, manifests, ARTIFACT_TTL)
    _status(pipeline, generate_seconds=f"{time.monotonic() - started:.3f}")
    _event(
        pipeline,
        "generated",
        f"rendered {len(manifests)} objects at {revision[:12]}",
        revision=revision,
    )
    return key


def _render(spec: Pipeline, revision: str) -> list[Manifest]:
    """Plain YAML is read from git's object store; generators need a checkout on disk."""
    mirror = _mirror(spec)
    if not spec.manifest_generation:
        files = mirror.read_files(revision, spec.git.paths, YAML_SUFFIXES)
        if files is not None:
            return load_blobs(files)
    scratch = Path(runtime.settings().work_dir).expanduser() / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    tree = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=scratch))
    try:
        mirror.export(revision, tree)
        return render_paths(tree, spec.git.paths, spec.manifest_generation)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _applied_record(pipeline: str) -> dict[str, Applied]:
    raw = cast(dict[str, str], runtime.redis_client().hgetall(runtime.keys().applied(pipeline)))
    return {ref: Applied.from_json(value) for ref, value in raw.items()}


def _save_record(pipeline: str, result: ApplyResult, gc: GcResult) -> None:
    key = runtime.keys().applied(pipeline)
    client = runtime.redis_client()
    pipe = client.pipeline()
    for ref, applied in result.applied.items():
        pipe.hset(key, ref, applied.to_json())
    for ref in result.errors:
        # Failed objects are applied again next time, whatever changed.
        pipe.hdel(key, ref)
    for ref in [*gc.deleted, *gc.gone]:
        pipe.hdel(key, ref)
    pipe.execute()


@app.task(name="sync.apply", base=SyncTask)
def apply(artifact_key: str, pipeline: str, full: bool = False) -> dict[str, Any]:
    """Collect garbage, apply the rendered set, move the marker; all under the writer lock."""
    spec = runtime.settings().pipeline(pipeline)
    client = runtime.redis_client()
    keys = runtime.keys()
    started = time.monotonic()
    raw = cast(str | None, client.get(artifact_key))
    if raw is None:
        raise PermanentError(
            f"rendered manifests {artifact_key} expired; the next sync renders them again"
        )
    payload = json.loads(raw)
    revision: str = payload["revision"]
    objects = [item["object"] for item in payload["objects"]]
    cluster = spec.cluster
    dynamic, cluster_name = cluster_client(cluster.kubeconfig, cluster.context, cluster.impersonate)
    applier = Applier(dynamic, pipeline, cluster.default_namespace, cluster.allow_namespaces)
    record = _applied_record(pipeline)
    lock = FencedLock(
        client,
        keys.cluster_lock(cluster_name),
        keys.cluster_fence(cluster_name),
        ttl=runtime.settings().tasks.lock_ttl,
    )
    with lock:
        gc = GcResult()
        if spec.sync.garbage_collection:
            wanted = applier.refs(objects)
            gone = {ref: applied for ref, applied in record.items() if ref not in wanted}
            gc = collect(
                dynamic,
                pipeline,
                gone,
                dry_run=spec.sync.garbage_collection == "dry-run",
                before_batch=lock.check,
            )
        previous = None if full else {ref: a.checksum for ref, a in record.items()}
        result = applier.apply(objects, previous=previous, before_batch=lock.check)
        _save_record(pipeline, result, gc)
        lock.check()
        _move_marker(spec, revision)
    status = "synced" if not result.errors else "synced-with-errors"
    now = f"{time.time():.3f}"
    started_at = cast(str | None, client.hget(keys.sync(pipeline), "started_at"))
    previous_revision = cast(str | None, client.hget(keys.sync(pipeline), "revision"))
    _status(
        pipeline,
        status=status,
        revision=revision,
        artifact=artifact_key,
        applied=len(result.applied),
        unchanged=len(result.unchanged),
        ignored=len(result.ignored),
        failed=len(result.errors),
        deleted=len(gc.deleted),
        errors=json.dumps(result.errors),
        error="",
        apply_seconds=f"{time.monotonic() - started:.3f}",
        finished_at=now,
        duration_seconds=f"{float(now) - float(started_at or now):.3f}",
        **({"last_success_at": now} if not result.errors else {}),
    )
    _count_finished(pipeline, result, gc)
    _report(pipeline, revision, result, gc)
    jobs.mark_applied(client, keys.prefix, pipeline, revision, _ancestry(spec))
    if revision != previous_revision and not spec.git.readonly:
        # A new revision may have automated a workload (`gitopsctl automate`): plan at once
        # rather than at the next automation tick.
        app.send_task("automation.plan", args=[pipeline])
    _finish_run(pipeline)
    return {"revision": revision, "applied": sorted(result.applied), "errors": result.errors}


def _ancestry(spec: Pipeline) -> Callable[[str, str], bool]:
    """Whether a revision contains a commit, from this worker's mirror; fetched once when it
    does not know, since the chain's fetch may have run on another machine."""
    mirror = _mirror(spec)
    fetched = False

    def contains(ancestor: str, revision: str) -> bool:
        nonlocal fetched
        if mirror.contains(ancestor, revision):
            return True
        if fetched:
            return False
        fetched = True
        try:
            mirror.fetch(spec.git.branch)
        except GitopsError:
            return False
        return mirror.contains(ancestor, revision)

    return contains


def _move_marker(spec: Pipeline, revision: str) -> None:
    """Point the sync marker at `revision`: the sync tag in Git, or Redis when read-only.

    The revision is applied whatever happens here, so a failed tag push is reported and the
    next sync tries again; it does not fail the sync.
    """
    runtime.redis_client().set(runtime.keys().marker(spec.name), revision)
    if spec.git.readonly:
        return
    mirror = _mirror(spec)
    try:
        move_sync_tag(
            mirror.path,
            spec.git.label,
            revision,
            message="Sync pointer",
            user=spec.git.user,
            email=spec.git.email,
            signing_key=spec.git.signing_key,
            gnupg_home=None,
            env=mirror.env,
            timeout=spec.git.timeout,
        )
    except GitopsError as exc:
        _event(spec.name, "error", f"could not move sync tag {spec.git.label!r}: {exc}")
        return
    _event(spec.name, "tag", f"moved sync tag {spec.git.label!r} to {revision[:12]}")


def _report(pipeline: str, revision: str, result: ApplyResult, gc: GcResult) -> None:
    """One event per outcome that a person should see."""
    summary = f"applied {len(result.applied)} objects at {revision[:12]}"
    if result.unchanged:
        summary += f", {len(result.unchanged)} unchanged"
    if result.errors:
        summary += f", {len(result.errors)} failed"
    _event(pipeline, "applied", summary, revision=revision)
    for ref, error in result.errors.items():
        _event(pipeline, "error", f"{ref}: {error}", object=ref)
    for ref in gc.deleted:
        _event(pipeline, "deleted", f"{ref}: deleted (no longer in Git)", object=ref)
    for ref in gc.would_delete:
        _event(pipeline, "gc-dry-run", f"{ref}: would be deleted (no longer in Git)", object=ref)
    for ref, reason in gc.kept.items():
        _event(pipeline, "warning", f"{ref}: {reason}", object=ref)
    for ref, error in gc.errors.items():
        _event(pipeline, "error", f"{ref}: garbage collection failed: {error}", object=ref)
