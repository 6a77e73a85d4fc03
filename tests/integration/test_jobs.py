"""Jobs on the real Redis: a pushed commit waits until a sync applies a revision containing it
(answered by a real git mirror); a job that expired unapplied stops waiting."""

from __future__ import annotations

from pathlib import Path

import redis

from gitops_pipeline import jobs
from gitops_pipeline.git.mirror import Mirror
from gitops_pipeline.testbed.gitremote import GitRemote


def test_commit_waits_until_a_revision_containing_it_is_applied(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    remote = GitRemote(tmp_path / "git")
    first = remote.commit({"a.yaml": "a: 1\n"}, "first")
    second = remote.commit({"a.yaml": "a: 2\n"}, "second")
    mirror = Mirror(tmp_path / "mirror", remote.url, timeout=30)
    mirror.fetch("master")

    applied_job = jobs.create(client, key_prefix, "p", "release", {"all": True})
    jobs.succeed(client, key_prefix, applied_job, "p", first, {"results": []})
    other_job = jobs.create(client, key_prefix, "p", "policy", {"workloads": ["x"]})
    jobs.succeed(client, key_prefix, other_job, "p", "f" * 40, {"results": []})
    gone_job = jobs.create(client, key_prefix, "p", "release", {"all": True})
    jobs.succeed(client, key_prefix, gone_job, "p", first, {"results": []})
    client.delete(jobs.job_key(key_prefix, gone_job))  # expired before any sync applied it

    assert jobs.get(client, key_prefix, applied_job)["sync"] == "waiting"  # type: ignore[index]
    done = jobs.mark_applied(client, key_prefix, "p", second, mirror.contains)
    assert done == [applied_job]
    job = jobs.get(client, key_prefix, applied_job)
    assert job is not None and job["sync"] == "applied" and job["applied_revision"] == second
    assert job["result"] == {"results": []} and job["request"] == {"all": True}
    waiting = client.hgetall(jobs.awaiting_key(key_prefix, "p"))
    assert waiting == {other_job: "f" * 40}
    assert jobs.get(client, key_prefix, other_job)["sync"] == "waiting"  # type: ignore[index]
    assert mirror.contains(first, second) and not mirror.contains(second, first)
