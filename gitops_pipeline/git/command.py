"""Running git in a repository with a timeout and reading what went wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import git


def run_git(
    repo: Path, args: Sequence[str], env: Mapping[str, str], timeout: float
) -> tuple[int, str, str]:
    """Run git in `repo` with `env` over the worker's; return (status, stdout, stderr).

    GitPython kills the process and its children when `timeout` passes (status -9).
    """
    return git.Git(str(repo)).execute(
        ["git", *args],
        with_extended_output=True,
        with_exceptions=False,
        kill_after_timeout=timeout,
        env=dict(env),
    )


def failure_reason(stderr: str) -> str:
    """The line of git's stderr that says what went wrong (its first fatal/error line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                return line.removeprefix(prefix)
    return lines[-1] if lines else "no error output"
