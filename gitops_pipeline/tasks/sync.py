"""The sync chain: fetch -> verify -> generate -> apply. Messages carry SHAs and keys only."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any, cast

from celery import chain

from gitops_pipeline import events, runtime
from gitops_pipeline.celery_app import app
from gitops_pipeline.cluster.apply import Applier
from gitops_pipeline.cluster.client import api_client, dynamic_client
from gitops_pipeline.config import Pipeline
from gitops_pipeline.errors import PermanentError
from gitops_pipeline.git.mirror import Mirror, redact
from gitops_pipeline.manifests.load import load_paths
from gitops_pipeline.tasks.base import PipelineTask

ARTIFACT_TTL = 24 * 3600


def _mirror(pipeline: Pipeline) -> Mirror:
    settings = runtime.settings()
    git = pipeline.git
    return Mirror(
        Path(settings.work_dir).expanduser() / "mirrors" / pipeline.name,
        git.url,
        timeout=git.timeout,
        ssh_key_file=git.ssh_key_file,
        token=git.token.get_secret_value() if git.token else None,
    )


@cache
def _applier(
    kubeconfig: Path | None, context: str | None, impersonate: str | None, default_namespace: str
) -> Applier:
    """One discovery-backed client per cluster identity per process."""
    return Applier(dynamic_client(api_client(kubeconfig, context, impersonate)), default_namespace)


def _record_stage(pipeline: str, stage: str, started: float, **fields: str | int) -> None:
    mapping: dict[str, str | int] = {
        f"{stage}_seconds": f"{time.monotonic() - started:.3f}",
        **fields,
    }
    runtime.redis_client().hset(runtime.keys().sync(pipeline), mapping=mapping)


@app.task(name="sync.trigger", base=PipelineTask)
def trigger(pipeline: str) -> str:
    """The one entry point for beat ticks, webhooks and `gitopsctl sync`; returns the chain id."""
    runtime.settings().pipeline(pipeline)
    result = chain(
        fetch.s(pipeline), verify.s(pipeline), generate.s(pipeline), apply.s(pipeline)
    ).apply_async()
    return str(result.id)


@app.task(name="sync.fetch", base=PipelineTask)
def fetch(pipeline: str) -> str:
    """Fetch the branch into this worker's mirror; return the HEAD SHA."""
    spec = runtime.settings().pipeline(pipeline)
    started = time.monotonic()
    head = _mirror(spec).fetch(spec.git.branch)
    _record_stage(pipeline, "fetch", started, status="syncing", head=head)
    events.record(
        runtime.redis_client(),
        runtime.keys(),
        pipeline,
        "fetched",
        f"fetched {redact(spec.git.url)} {spec.git.branch} at {head[:12]}",
        revision=head,
    )
    return head


@app.task(name="sync.verify", base=PipelineTask)
def verify(head: str, pipeline: str) -> str:
    """Return the newest revision allowed to sync."""
    spec = runtime.settings().pipeline(pipeline)
    if spec.git.verify_signatures != "none":
        # Signature verification is not built yet; refusing is the only safe answer.
        raise PermanentError(
            f"verify_signatures: {spec.git.verify_signatures} is not supported yet; "
            "nothing was applied"
        )
    return head


def _artifact_digest(pipeline: Pipeline, revision: str) -> str:
    material = json.dumps([pipeline.name, revision, pipeline.git.paths], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


@app.task(name="sync.generate", base=PipelineTask)
def generate(revision: str, pipeline: str) -> str:
    """Render the manifests of `revision` into Redis; return the artifact key."""
    spec = runtime.settings().pipeline(pipeline)
    client = runtime.redis_client()
    key = runtime.keys().artifact(_artifact_digest(spec, revision))
    started = time.monotonic()
    if client.expire(key, ARTIFACT_TTL):
        return key  # identical input is not rendered again
    scratch = Path(runtime.settings().work_dir).expanduser() / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    tree = Path(tempfile.mkdtemp(prefix=f"{pipeline}-", dir=scratch))
    try:
        _mirror(spec).export(revision, tree)
        manifests = load_paths(tree, spec.git.paths)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    payload = {
        "pipeline": pipeline,
        "revision": revision,
        "objects": [{"source": m.source, "object": m.obj} for m in manifests],
    }
    client.set(key, json.dumps(payload), ex=ARTIFACT_TTL)
    _record_stage(pipeline, "generate", started)
    events.record(
        client,
        runtime.keys(),
        pipeline,
        "generated",
        f"rendered {len(manifests)} objects at {revision[:12]}",
        revision=revision,
    )
    return key


@app.task(name="sync.apply", base=PipelineTask)
def apply(artifact_key: str, pipeline: str) -> dict[str, Any]:
    """Server-side apply the rendered set; record what was applied and what failed."""
    spec = runtime.settings().pipeline(pipeline)
    client = runtime.redis_client()
    started = time.monotonic()
    raw = cast(str | None, client.get(artifact_key))
    if raw is None:
        raise PermanentError(
            f"rendered manifests {artifact_key} expired; the next sync renders them again"
        )
    payload = json.loads(raw)
    cluster = spec.cluster
    applier = _applier(
        cluster.kubeconfig, cluster.context, cluster.impersonate, cluster.default_namespace
    )
    result = applier.apply(item["object"] for item in payload["objects"])
    status = "synced" if not result.errors else "synced-with-errors"
    _record_stage(
        pipeline,
        "apply",
        started,
        status=status,
        revision=payload["revision"],
        applied=len(result.applied),
        failed=len(result.errors),
        errors=json.dumps(result.errors),
        error="",
        finished_at=f"{time.time():.3f}",
    )
    keys = runtime.keys()
    events.record(
        client,
        keys,
        pipeline,
        "applied",
        f"applied {len(result.applied)} objects at {payload['revision'][:12]}"
        + (f", {len(result.errors)} failed" if result.errors else ""),
        revision=payload["revision"],
    )
    for ref, error in result.errors.items():
        events.record(client, keys, pipeline, "error", f"{ref}: {error}", object=ref)
    return {"revision": payload["revision"], "applied": result.applied, "errors": result.errors}
