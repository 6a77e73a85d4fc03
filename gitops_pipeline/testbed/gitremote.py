"""Bare git repositories on disk used as remotes by the test bed and by `make run`.

This is test-bed provisioning (like pushing images to the local registry), not the operator's
own git access, which lives in `gitops_pipeline.git`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

AUTHOR = {
    "GIT_AUTHOR_NAME": "Example Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Example Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
}


def run_git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run git with a fixed identity and no user config; return stdout, raise with stderr."""
    full_env = {**os.environ, **AUTHOR, "GIT_CONFIG_GLOBAL": os.devnull, **(env or {})}
    completed = subprocess.run(
        ["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed.stdout.strip()


class GitRemote:
    """A bare repository plus a working clone to commit and push from."""

    def __init__(self, root: Path, branch: str = "master") -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        self.branch = branch
        root.mkdir(parents=True, exist_ok=True)
        run_git("init", "--bare", "--initial-branch", branch, str(self.bare), cwd=root)
        run_git("clone", "--quiet", str(self.bare), str(self.work), cwd=root)
        run_git("checkout", "--quiet", "-B", branch, cwd=self.work)

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        """Write (or with None, delete) files, commit, push; return the new commit SHA."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        run_git("add", "--all", cwd=self.work)
        run_git("commit", "--quiet", "-m", message, cwd=self.work)
        run_git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        return self.head()

    def head(self) -> str:
        return run_git("rev-parse", "HEAD", cwd=self.work)

    def commit_tree(self, source: Path, message: str) -> str:
        """Copy every file under `source` into the repository and commit them."""
        files = {
            str(path.relative_to(source)): path.read_text()
            for path in sorted(source.rglob("*"))
            if path.is_file()
        }
        return self.commit(files, message)

    def remove(self) -> None:
        shutil.rmtree(self.bare.parent, ignore_errors=True)
