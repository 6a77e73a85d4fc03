"""Automation: `automation.plan` -> `automation.bump` -> `sync.trigger`.

The plan lists, for every automated and unlocked workload's container, the newest tag its filter
allows when that differs from Git; the bump writes the whole plan as one commit (pushed as
compare-and-swap under the repository's write lock), and the sync applies it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from gitops_pipeline import events, runtime
from gitops_pipeline.celery_app import app
from gitops_pipeline.config import Pipeline
from gitops_pipeline.errors import SignatureError
from gitops_pipeline.git.commit import WorkingCopy
from gitops_pipeline.git.mirror import auth_env
from gitops_pipeline.git.verify import Keyring, verify_range
from gitops_pipeline.locks import FencedLock
from gitops_pipeline.manifests.edit import update_image
from gitops_pipeline.manifests.workloads import container_images, workload_annotations
from gitops_pipeline.policy.annotations import read_policy
from gitops_pipeline.policy.update import choose_tag
from gitops_pipeline.registry.reference import InvalidReference, parse_image
from gitops_pipeline.tasks.base import PipelineTask
from gitops_pipeline.tasks.clients import rendered_objects, tag_cache

log = logging.getLogger(__name__)

REPO_LOCK_TTL = 60.0


def _event(pipeline: str, kind: str, message: str, **data: Any) -> None:
    events.record(runtime.redis_client(), runtime.keys(), pipeline, kind, message, **data)


def plan_updates(spec: Pipeline) -> list[dict[str, str]]:
    """The image changes automation would make now, one per container."""
    objects = rendered_objects(spec)
    namespace = spec.cluster.default_namespace
    annotations = workload_annotations(objects, namespace)
    cache = tag_cache()
    changes: list[dict[str, str]] = []
    for item in container_images(objects, namespace):
        policy = read_policy(annotations.get(item.workload, {}))
        if not policy.automated or policy.locked:
            continue
        for error in policy.errors:
            _event(spec.name, "warning", f"{item.workload}: {error}", workload=item.workload)
        try:
            ref = parse_image(item.image)
        except InvalidReference as exc:
            _event(spec.name, "warning", f"{item.workload} {item.container}: {exc}")
            continue
        tags = cache.get_tags(ref.name)
        infos = cache.images(digest for digest in tags.values() if digest)
        created = {
            tag: (infos[digest].created if digest and digest in infos else None)
            for tag, digest in tags.items()
        }
        choice = choose_tag(policy.filter_for(item.container), ref.tag, created)
        if choice.warning:
            _event(spec.name, "warning", f"{item.workload} {item.container}: {choice.warning}")
        if choice.tag is not None:
            changes.append(
                {
                    "workload": item.workload,
                    "container": item.container,
                    "current": item.image,
                    "image": str(ref.with_tag(choice.tag)),
                }
            )
    return changes


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


def _verify_base(spec: Pipeline, repo: Path) -> Any:
    """A check that the commit a bump builds on passed signature verification."""
    if spec.git.verify_signatures == "none":
        return None

    def check(head: str) -> None:
        assert spec.git.gpg_keys_dir is not None  # the config refuses verification without keys
        home = Path(runtime.settings().work_dir).expanduser() / "gnupg" / spec.name
        keyring = Keyring(home, timeout=spec.git.timeout)
        keyring.import_dir(spec.git.gpg_keys_dir)
        base = cast(str | None, runtime.redis_client().get(runtime.keys().marker(spec.name)))
        mode = spec.git.verify_signatures
        result = verify_range(repo, base, head, mode, keyring, spec.git.timeout)
        if result.revision != head:
            raise SignatureError(f"not building on {head[:12]}: {result.message}")

    return check


@app.task(name="automation.bump", base=PipelineTask)
def bump(changes: list[dict[str, str]], pipeline: str) -> dict[str, Any]:
    """Write the plan to Git as one commit, pushed as compare-and-swap; then sync."""
    spec = runtime.settings().pipeline(pipeline)
    client = runtime.redis_client()
    keys = runtime.keys()
    work = Path(runtime.settings().work_dir).expanduser() / "worktrees" / pipeline
    git = spec.git
    env = auth_env(git.ssh_key_file, git.token.get_secret_value() if git.token else None)
    copy = WorkingCopy(work, git.url, git.branch, env=env, timeout=git.timeout)

    def change(root: Path) -> list[str]:
        changed: list[str] = []
        for item in changes:
            changed += update_image(
                root, git.paths, spec.manifest_generation, item["workload"], item["container"],
                item["image"], spec.cluster.default_namespace,
            )  # fmt: skip
        return changed

    message = "\n".join(f"Auto-release {item['image']}" for item in changes)
    repo_key = f"{keys.prefix}lock:repo:{git.url}#{git.branch}"
    with FencedLock(client, repo_key, f"{repo_key}:fence", ttl=REPO_LOCK_TTL):
        result = copy.commit_and_push(
            change,
            message,
            author=(git.user, git.email),
            signing_key=git.signing_key,
            gnupg_home=None,
            ci_skip=git.ci_skip,
            verify_base=_verify_base(spec, work),
        )
    if result.sha is None:
        return {"sha": None}
    _event(pipeline, "commit", f"Commit pushed: {result.sha[:7]} ({message.splitlines()[0]}...)",
           sha=result.sha)  # fmt: skip
    app.send_task("sync.trigger", args=[pipeline])
    return {"sha": result.sha, "attempts": result.attempts, "files": result.changed_files}
