"""Operations people ask for: `automation.release` and `automation.policy`, run as jobs.

The web process records the request as a job (see `jobs`) and enqueues the job id; these tasks
plan on the branch head, inside the write (so a commit that races them is taken into account),
and commit all or nothing: a named workload that does not exist fails the whole job and
nothing is written. The job then holds the per-workload outcome and the commit's SHA, and the
sync marks it applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gitops_pipeline import events, jobs, runtime
from gitops_pipeline.celery_app import app
from gitops_pipeline.errors import ManifestError, PermanentError
from gitops_pipeline.manifests.edit import update_image, update_policy
from gitops_pipeline.manifests.generate import render_paths
from gitops_pipeline.manifests.workloads import container_images
from gitops_pipeline.policy.changes import PolicyUpdate
from gitops_pipeline.release import (
    ReleaseError,
    ReleasePlan,
    ReleaseSpec,
    cached_tags,
    plan_release,
    workload_key,
)
from gitops_pipeline.tasks import gitwrite
from gitops_pipeline.tasks.base import PipelineTask, pipeline_of
from gitops_pipeline.tasks.clients import tag_cache

log = logging.getLogger(__name__)


class OperationTask(PipelineTask):
    """A job's task (arguments: job id, pipeline): a final failure fails the job, not the sync."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        pipeline = pipeline_of(args, kwargs)
        job_id = kwargs.get("job_id") or (args[0] if args else None)
        message = f"{self.name.rsplit('.', 1)[-1]} failed: {exc}"
        log.error(message)
        client = runtime.redis_client()
        if isinstance(job_id, str):
            jobs.fail(client, runtime.keys().prefix, job_id, str(exc))
        if pipeline is not None:
            events.record(client, runtime.keys(), pipeline, "error", message, job=str(job_id))


def release_spec(request: dict[str, Any]) -> ReleaseSpec:
    """The release a job's request asks for (checked: ReleaseError when malformed)."""
    spec = ReleaseSpec(
        workloads=tuple(request.get("workloads") or ()),
        all_workloads=bool(request.get("all")),
        image=request.get("image"),
        exclude=tuple(request.get("exclude") or ()),
        force=bool(request.get("force")),
    )
    spec.check()
    return spec


def policy_update(request: dict[str, Any]) -> PolicyUpdate:
    """The policy change a job's request asks for (checked: ValueError when invalid)."""
    update = PolicyUpdate(
        automate=request.get("automate"),
        lock=request.get("lock"),
        user=request.get("user") or "",
        message=request.get("message") or "",
        tag_all=request.get("tag_all"),
        tags=dict(request.get("tags") or {}),
    )
    update.check()
    if not request.get("workloads"):
        raise ValueError("name at least one workload")
    for workload in request["workloads"]:
        workload_key(workload)  # ReleaseError (a ValueError) for a malformed id
    return update


def _start(job_id: str) -> dict[str, Any] | None:
    """The job's request, with the job marked running; None when it already ended (this is a
    redelivery of a task that finished it, which must not overwrite its outcome)."""
    client = runtime.redis_client()
    prefix = runtime.keys().prefix
    try:
        request = jobs.request(client, prefix, job_id)
    except LookupError as exc:
        raise PermanentError(str(exc)) from None
    if jobs.finished(client, prefix, job_id):
        return None
    jobs.update(client, prefix, job_id, status="running")
    return request


def _recorder(job_id: str, pipeline: str, outcome: Callable[[], Any]) -> Callable[[str], None]:
    """`gitwrite.write`'s `on_pushed`: the job's SHA and outcome, kept the moment they exist."""

    def record(sha: str) -> None:
        jobs.pushed(runtime.redis_client(), runtime.keys().prefix, job_id, pipeline, sha, outcome())

    return record


@app.task(name="automation.release", base=OperationTask)
def release(job_id: str, pipeline: str) -> dict[str, Any]:
    """Plan the job's release on the branch head; commit it unless it is a dry run."""
    spec = runtime.settings().pipeline(pipeline)
    request = _start(job_id)
    if request is None:
        return {"job": job_id, "redelivered": True}
    try:
        wanted = release_spec(request)
    except ReleaseError as exc:
        raise PermanentError(str(exc)) from None
    dry_run = bool(request.get("dry_run"))
    if spec.git.readonly and not dry_run:
        raise PermanentError(f"pipeline {pipeline!r} is read-only (git.readonly)")
    namespace = spec.cluster.default_namespace
    tags = cached_tags(tag_cache())
    planned: list[ReleasePlan] = []

    def change(root: Path) -> list[str]:
        objects = [m.obj for m in render_paths(root, spec.git.paths, spec.manifest_generation)]
        plan = plan_release(objects, namespace, wanted, tags)
        planned[:] = [plan]
        failed = [f"{r.workload}: {r.error}" for r in plan.results if r.status == "failed"]
        if failed:
            raise PermanentError("nothing released: " + "; ".join(failed))
        if dry_run:
            return []
        changed: list[str] = []
        for workload, update in plan.updates:
            changed += update_image(
                root,
                spec.git.paths,
                spec.manifest_generation,
                workload,
                update.container,
                update.target,
                namespace,
            )
        return changed

    def outcome() -> dict[str, Any]:
        return {**planned[0].as_json(), "dry_run": dry_run}

    result = gitwrite.write(
        spec, change, lambda: planned[0].message(), _recorder(job_id, pipeline, outcome)
    )
    jobs.succeed(
        runtime.redis_client(), runtime.keys().prefix, job_id, pipeline, result.sha, outcome()
    )
    return {"sha": result.sha, **outcome()}


@app.task(name="automation.policy", base=OperationTask)
def policy(job_id: str, pipeline: str) -> dict[str, Any]:
    """Write the job's policy change for its workloads as one commit."""
    spec = runtime.settings().pipeline(pipeline)
    request = _start(job_id)
    if request is None:
        return {"job": job_id, "redelivered": True}
    if spec.git.readonly:
        raise PermanentError(f"pipeline {pipeline!r} is read-only (git.readonly)")
    try:
        update = policy_update(request)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None
    workloads: list[str] = list(request["workloads"])
    namespace = spec.cluster.default_namespace
    results: list[dict[str, Any]] = []

    def change(root: Path) -> list[str]:
        objects = [m.obj for m in render_paths(root, spec.git.paths, spec.manifest_generation)]
        containers: dict[str, list[str]] = {}
        for item in container_images(objects, namespace):
            containers.setdefault(workload_key(item.workload), []).append(item.container)
        changed: list[str] = []
        results.clear()
        for workload in workloads:
            names = containers.get(workload_key(workload), [])
            unknown = sorted(set(update.tags) - set(names))
            if names and unknown:
                raise PermanentError(
                    f"nothing changed: {workload} has no container {', '.join(unknown)} "
                    f"(it has {', '.join(names)})"
                )
            values = update.values(names)
            try:
                files = update_policy(
                    root, spec.git.paths, spec.manifest_generation, workload, values, namespace
                )
            except ManifestError as exc:
                raise PermanentError(f"nothing changed: {exc}") from None
            changed += files
            status, error = ("success", "") if files else ("skipped", "policy already set")
            updates = [f"{k}={v}" if v is not None else f"-{k}" for k, v in values.items()]
            results.append(
                {
                    "workload": workload,
                    "status": status,
                    "error": error,
                    "updates": updates if files else [],
                }
            )
        return changed

    def message() -> str:
        lines = [f"{update.summary()}: {r['workload']}" for r in results if r["updates"]]
        return "\n".join(lines)

    def outcome() -> dict[str, Any]:
        return {"results": results, "warnings": []}

    result = gitwrite.write(spec, change, message, _recorder(job_id, pipeline, outcome))
    jobs.succeed(
        runtime.redis_client(),
        runtime.keys().prefix,
        job_id,
        pipeline,
        result.sha,
        outcome(),
    )
    return {"sha": result.sha, **outcome()}
