"""Automation: `automation.plan` -> `automation.bump` -> `sync.trigger`.

The plan is a release of every automated, unlocked workload to the newest tags its filters
allow (the release planner decides, as it does for `gitopsctl release`); the bump writes the
whole plan as one commit (see `gitwrite`), and the sync applies it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gitops_pipeline import events, runtime
from gitops_pipeline.celery_app import app
from gitops_pipeline.config import Pipeline
from gitops_pipeline.manifests.edit import update_image
from gitops_pipeline.release import ReleaseSpec, cached_tags, plan_release
from gitops_pipeline.tasks import gitwrite
from gitops_pipeline.tasks.base import PipelineTask
from gitops_pipeline.tasks.clients import rendered_objects, tag_cache

AUTOMATED = ReleaseSpec(all_workloads=True, automated_only=True)


def plan_updates(spec: Pipeline) -> list[dict[str, str]]:
    """The image changes automation would make now, one per container."""
    plan = plan_release(
        rendered_objects(spec), spec.cluster.default_namespace, AUTOMATED, cached_tags(tag_cache())
    )
    for warning in plan.warnings:
        events.record(runtime.redis_client(), runtime.keys(), spec.name, "warning", warning)
    return [
        {
            "workload": workload,
            "container": update.container,
            "current": update.current,
            "image": update.target,
        }
        for workload, update in plan.updates
    ]


@app.task(name="automation.plan", base=PipelineTask)
def plan(pipeline: str) -> list[dict[str, str]]:
    """Plan updates for the pipeline; hand a non-empty plan to `automation.bump`."""
    spec = runtime.settings().pipeline(pipeline)
    if spec.git.readonly:
        return []
    changes = plan_updates(spec)
    if changes:
        bump.delay(changes, pipeline)
    return changes


@app.task(name="automation.bump", base=PipelineTask)
def bump(changes: list[dict[str, str]], pipeline: str) -> dict[str, Any]:
    """Write the plan to Git as one commit, pushed as compare-and-swap; then sync."""
    spec = runtime.settings().pipeline(pipeline)

    def change(root: Path) -> list[str]:
        changed: list[str] = []
        for item in changes:
            changed += update_image(
                root,
                spec.git.paths,
                spec.manifest_generation,
                item["workload"],
                item["container"],
                item["image"],
                spec.cluster.default_namespace,
            )
        return changed

    images = sorted({item["image"] for item in changes})
    result = gitwrite.write(spec, change, lambda: "\n".join(f"Auto-release {i}" for i in images))
    if result.sha is None:
        return {"sha": None}
    return {"sha": result.sha, "attempts": result.attempts, "files": result.changed_files}
