"""Writing to a pipeline's Git branch: the one path for automation bumps, releases and policies.

Every write holds the repository's write lock (`<prefix>lock:repo:<url>#<branch>`), builds on a
verified head only, commits once and pushes as compare-and-swap (`WorkingCopy.commit_and_push`
recomputes the change on a moved head). A pushed commit is announced and synced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from gitops_pipeline import events, runtime
from gitops_pipeline.celery_app import app
from gitops_pipeline.config import Pipeline
from gitops_pipeline.errors import SignatureError
from gitops_pipeline.git.commit import Change, CommitResult, WorkingCopy
from gitops_pipeline.git.mirror import auth_env
from gitops_pipeline.git.verify import Keyring, verify_range
from gitops_pipeline.locks import FencedLock
from gitops_pipeline.tasks.clients import git_credentials

REPO_LOCK_TTL = 60.0
LOCK_WAIT = 120.0
"""Seconds a write waits for another writer of the same branch before it is retried later."""


def _verify_base(spec: Pipeline, repo: Path) -> Any:
    """A check that the commit a write builds on passed signature verification."""
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


def working_copy(spec: Pipeline) -> WorkingCopy:
    git = spec.git
    work = Path(runtime.settings().work_dir).expanduser() / "worktrees" / spec.name
    env = auth_env(*git_credentials(spec))
    return WorkingCopy(work, git.url, git.branch, env=env, timeout=git.timeout)


def write(
    spec: Pipeline,
    change: Change,
    message: Callable[[], str],
    on_pushed: Callable[[str], None] | None = None,
) -> CommitResult:
    """Commit `change` to the pipeline's branch as one commit; announce and sync it if pushed.

    `message` is asked for after `change` ran (on the head the commit is made on); `on_pushed`
    is told the SHA as soon as the push landed, before anything else can fail."""
    git = spec.git
    client = runtime.redis_client()
    prefix = runtime.keys().prefix
    copy = working_copy(spec)
    repo_key = f"{prefix}lock:repo:{git.url}#{git.branch}"
    lock = FencedLock(client, repo_key, f"{repo_key}:fence", ttl=REPO_LOCK_TTL)
    # Wait for the branch's other writers (a write takes about a second) rather than failing
    # into a task retry.
    lock.acquire(wait=LOCK_WAIT)
    try:
        result = copy.commit_and_push(
            change,
            message,
            author=(git.user, git.email),
            signing_key=git.signing_key,
            gnupg_home=None,
            ci_skip=git.ci_skip,
            verify_base=_verify_base(spec, copy.path),
        )
    finally:
        lock.release()
    if result.sha is not None and on_pushed is not None:
        on_pushed(result.sha)
    if result.sha is not None:
        first = message().splitlines()[0]
        events.record(
            client,
            runtime.keys(),
            spec.name,
            "commit",
            f"Commit pushed: {result.sha[:7]} ({first})",
            sha=result.sha,
        )
        app.send_task("sync.trigger", args=[spec.name])
    return result
