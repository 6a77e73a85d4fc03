"""A bare mirror of one remote branch, fetched incrementally, and export of a revision."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path, PurePosixPath

import git

from gitops_pipeline.errors import GitError, ManifestError, RemoteRefused
from gitops_pipeline.git.command import failure_reason

_CREDENTIALS_RE = re.compile(r"//[^/@]*@")
_SYMLINK_MODE = 0o120000
# What git prints when the remote answered and said no; anything else may pass on a retry.
REFUSALS = (
    "does not appear to be a git repository",
    "Repository not found",
    "Permission denied",
    "Authentication failed",
    "Invalid username or password",
)


def redact(url: str) -> str:
    """Drop user:password from a URL so it can go into logs and events."""
    return _CREDENTIALS_RE.sub("//", url)


def auth_env(ssh_key_file: Path | None, token: str | None) -> dict[str, str]:
    """Environment that gives git the remote's credentials (never on a command line)."""
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if ssh_key_file is not None:
        env["GIT_SSH_COMMAND"] = (
            f"ssh -i {ssh_key_file} -o IdentitiesOnly=yes -o BatchMode=yes "
            "-o StrictHostKeyChecking=accept-new"
        )
    if token is not None:
        # Passed through git's environment config, never on the command line.
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    return env


class Mirror:
    """A bare repository under `path` tracking `url`; one per pipeline per worker."""

    def __init__(
        self,
        path: Path,
        url: str,
        timeout: float,
        ssh_key_file: Path | None = None,
        token: str | None = None,
    ) -> None:
        self.path = path
        self.url = url
        self.timeout = timeout
        self.env = auth_env(ssh_key_file, token)
        """Environment for git commands that reach the remote (credentials, never argv)."""

    def _repo(self) -> git.Repo:
        if (self.path / "HEAD").exists():
            repo = git.Repo(self.path)
            if repo.remotes.origin.url != self.url:
                repo.remotes.origin.set_url(self.url)
            return repo
        self.path.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(self.path, bare=True)
        repo.create_remote("origin", self.url)
        return repo

    def fetch(self, branch: str) -> str:
        """Fetch `branch` (and tags) from the remote; return the branch's HEAD SHA."""
        repo = self._repo()
        refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
        try:
            repo.git.fetch(
                "origin",
                refspec,
                "+refs/tags/*:refs/tags/*",
                "--prune",
                env={**os.environ, **self.env},
                kill_after_timeout=self.timeout,
            )
        except git.GitCommandError as exc:
            raise self._explain(exc, branch) from None
        return str(repo.rev_parse(f"refs/remotes/origin/{branch}").hexsha)

    def _explain(self, exc: git.GitCommandError, branch: str) -> GitError | RemoteRefused:
        """Refusals (retrying cannot help) apart from failures that may pass (retried)."""
        # GitPython wraps git's stderr as "stderr: '...'".
        stderr = str(exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
        remote = redact(self.url)
        if "couldn't find remote ref" in stderr:
            return RemoteRefused(f"branch {branch!r} not found at {remote}")
        if exc.status == -9 or "timed out" in stderr.lower():
            return GitError(f"git fetch from {remote} timed out after {self.timeout:g}s")
        last = redact(failure_reason(stderr)) if stderr else f"exit status {exc.status}"
        if any(marker in stderr for marker in REFUSALS):
            return RemoteRefused(f"git fetch from {remote} refused: {last}")
        return GitError(f"git fetch from {remote} failed: {last}")

    def contains(self, ancestor: str, revision: str) -> bool:
        """Whether `revision` includes commit `ancestor` (False when either is not here)."""
        repo = self._repo()
        try:
            return bool(repo.is_ancestor(repo.commit(ancestor), repo.commit(revision)))
        except (git.GitCommandError, git.BadName, git.BadObject, ValueError):
            return False

    def read_files(
        self, revision: str, paths: list[str], suffixes: tuple[str, ...]
    ) -> dict[str, bytes] | None:
        """Files under `paths` at `revision` whose names end in `suffixes`, straight from the
        object store (no checkout: writing a thousand files cost more than parsing them).

        Returns None when a symlink is among them, since only a checkout can resolve those.
        A path missing at `revision` raises `ManifestError`.
        """
        tree = self._repo().commit(revision).tree
        found: dict[str, bytes] = {}
        for entry in paths:
            relative = str(PurePosixPath(entry))
            try:
                node = tree if relative == "." else tree / relative
            except KeyError:
                raise ManifestError(f"path {entry!r} does not exist in the repository") from None
            items = [node] if isinstance(node, git.Blob) else list(node.traverse())
            for item in items:
                if not isinstance(item, git.Blob):
                    continue
                if item.mode == _SYMLINK_MODE:
                    return None
                path = str(item.path)
                if path.endswith(suffixes):
                    found[path] = item.data_stream.read()
        return found

    def export(self, revision: str, dest: Path) -> None:
        """Write the tree of `revision` into `dest`, through a throwaway index.

        `read-tree` + `checkout-index` writes a thousand files in tens of milliseconds, where
        extracting a `git archive` took up to a second. Symlinks are written as symlinks; the
        loaders refuse any that lead out of `dest`.
        """
        repo = self._repo()
        dest.mkdir(parents=True, exist_ok=True)
        index = dest.parent / f".{dest.name}.index"
        env = {**os.environ, "GIT_INDEX_FILE": str(index)}
        try:
            repo.git.read_tree(revision, env=env, kill_after_timeout=self.timeout)
            repo.git.execute(
                ["git", f"--work-tree={dest}", "checkout-index", "--all", "--force"],
                env=env,
                kill_after_timeout=self.timeout,
            )
        except git.GitCommandError as exc:
            reason = failure_reason(str(exc.stderr or ""))
            raise GitError(f"cannot export revision {revision[:12]}: {reason}") from None
        finally:
            index.unlink(missing_ok=True)
