"""Commits back to Git: a working copy per pipeline, and pushes that never lose anyone's commit.

A push is a compare-and-swap. It is never forced, so the remote takes it only as a fast-forward
of the head the commit was made on. When another writer got there first, the change is
recomputed on the new head rather than rebased: the caller's edit runs again on fresh content,
so two edits of one file both land, a change someone already made becomes "nothing to commit",
and history stays linear (no merge commits, ever).
"""

from __future__ import annotations

import fcntl
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gitops_pipeline.errors import GitError, RemoteRefused, SignatureError
from gitops_pipeline.git.command import failure_reason, run_git
from gitops_pipeline.git.mirror import REFUSALS, redact

Change = Callable[[Path], Sequence[str] | None]
"""Edits files under the worktree root it is given; returns the paths it changed (or None)."""

# Every call: no hooks from the worker's git config, no background gc holding locks after a
# call returns, and the gpg on PATH for signing (as the sync tag does).
_BASE = ("-c", "core.hooksPath=/dev/null", "-c", "gc.autoDetach=false", "-c", "gpg.program=gpg")
# Push rejections that mean "the branch moved under us": recompute and try again.
_RACE_MARKERS = (
    "[rejected]",
    "cannot lock ref",
    "failed to lock",
    "failed to update ref",
    "incorrect old value",
)
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 1.0
_LOCK_POLL = 0.05
_jitter = random.SystemRandom()


@dataclass(frozen=True)
class CommitResult:
    """The pushed commit (None when there was nothing to change), attempts made, files in it."""

    sha: str | None
    attempts: int
    changed_files: list[str]


class PushConflict(GitError):
    """Every push lost the race to another writer; a later retry (with the lock held) may win."""


class WorkingCopy:
    """A non-bare clone of one branch under `path`, kept per pipeline per worker.

    It holds no state between operations: each one fetches and hard-resets to the remote head
    and removes untracked files first. Operations on one working copy are serialised by a
    file lock beside it, so the processes of one worker may share the directory. `env` carries
    the remote's credentials (as `Mirror.env` does); every git call gets `timeout`.
    """

    def __init__(
        self, path: Path, url: str, branch: str, *, env: Mapping[str, str], timeout: float
    ) -> None:
        self.path = path
        self.url = url
        self.branch = branch
        self.env = {**env, "GIT_TERMINAL_PROMPT": "0"}
        self.timeout = timeout
        self._lock_file = path.with_name(f".{path.name}.lock")

    def update(self) -> str:
        """Clone on first use, else fetch; reset to the remote head and return its SHA."""
        with self._locked():
            return self._update()

    def commit_and_push(
        self,
        change: Change,
        message: str | Callable[[], str],
        *,
        author: tuple[str, str],
        signing_key: str | None,
        gnupg_home: Path | None,
        ci_skip: bool,
        max_attempts: int = 5,
        verify_base: Callable[[str], None] | None = None,
    ) -> CommitResult:
        """Apply `change` to the remote head, commit it as `author` (name, email) and push it.

        `verify_base` is called with every head a commit is about to be made on, and raises to
        refuse it (a revision that fails verification is never the base of a commit). When
        `change` reports no paths, or they hold no difference, nothing is committed or pushed.
        `message` may be a function, called after `change` (whose result it may describe).
        The commit is signed with `signing_key` from the GnuPG home `gnupg_home` when a key
        is given; `ci_skip` appends "[ci skip]" to the message.

        Raises PushConflict when `max_attempts` pushes were all overtaken, SignatureError when
        the commit cannot be signed, RemoteRefused when the remote refuses (missing branch,
        credentials, a hook or protected branch) and GitError for failures that may pass.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        rejection = ""
        with self._locked():
            for attempt in range(1, max_attempts + 1):
                if attempt > 1:
                    time.sleep(_backoff(attempt - 1))
                base = self._update()
                if verify_base is not None:
                    verify_base(base)
                changed = self._stage(change(self.path))
                if not changed:
                    return CommitResult(None, attempt, [])
                text = message() if callable(message) else message
                if ci_skip:
                    text += "\n\n[ci skip]"
                sha = self._commit(text, author, signing_key, gnupg_home)
                refused = self._push()
                if refused is None:
                    return CommitResult(sha, attempt, changed)
                rejection = refused
        raise PushConflict(
            f"push to {redact(self.url)} (branch {self.branch!r}) was overtaken {max_attempts} "
            f"times by other writers, recomputing the change each time (last: {rejection})"
        )

    # --- steps ------------------------------------------------------------------------------

    def _update(self) -> str:
        self._prepare()
        refspec = f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}"
        args = [*_BASE, "fetch", "--quiet", "--no-tags", "origin", refspec]
        status, _, err = run_git(self.path, args, self.env, self.timeout)
        if status != 0:
            raise self._remote_failure("fetch from", status, err)
        tracking = f"refs/remotes/origin/{self.branch}^{{commit}}"
        head = self._local("rev-parse", "--verify", "--quiet", tracking)
        self._local("checkout", "--quiet", "--force", "--detach", head)
        self._local("clean", "-ffdxq")
        return head

    def _prepare(self) -> None:
        """Create the repository on first use and drop lock files a killed git left behind.

        Only called with the working copy's file lock held, and every git call it serialises
        is killed at its timeout, so any lock file found here belongs to a dead process.
        """
        git_dir = self.path / ".git"
        if not git_dir.is_dir():
            self.path.mkdir(parents=True, exist_ok=True)
            self._local("init", "--quiet")
        for stale in [*git_dir.glob("*.lock"), *(git_dir / "refs").rglob("*.lock")]:
            stale.unlink(missing_ok=True)
        status, configured, _ = run_git(
            self.path, ["config", "--get", "remote.origin.url"], {}, self.timeout
        )
        if status != 0 or configured != self.url:
            self._local("config", "remote.origin.url", self.url)

    def _stage(self, paths: Sequence[str] | None) -> list[str]:
        """Stage exactly the reported paths (deletions too); return those that differ."""
        if not paths:
            return []
        self._local("--literal-pathspecs", "add", "--all", "--", *(str(p) for p in paths))
        names = self._local("diff", "--cached", "--name-only", "--no-renames", "-z")
        return [name for name in names.split("\0") if name]

    def _commit(
        self,
        message: str,
        author: tuple[str, str],
        signing_key: str | None,
        gnupg_home: Path | None,
    ) -> str:
        name, email = author
        env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        if gnupg_home is not None:
            env["GNUPGHOME"] = str(gnupg_home)
        sign = f"--gpg-sign={signing_key}" if signing_key else "--no-gpg-sign"
        args = [*_BASE, "commit", "--quiet", sign, "--message", message]
        status, _, err = run_git(self.path, args, env, self.timeout)
        if status == -9:
            raise GitError(f"git commit timed out after {self.timeout:g}s")
        if status != 0:
            if "failed to sign" in err:
                raise SignatureError(
                    f"cannot sign the commit with key {signing_key!r}: is its secret key "
                    "(without passphrase) in the signing GnuPG home?"
                )
            raise GitError(f"git commit failed: {failure_reason(err)}")
        return self._local("rev-parse", "--verify", "HEAD")

    def _push(self) -> str | None:
        """Push HEAD as a fast-forward of the branch; the rejection if another writer won."""
        args = [*_BASE, "push", "--porcelain", "origin", f"HEAD:refs/heads/{self.branch}"]
        status, out, err = run_git(self.path, args, self.env, self.timeout)
        if status == 0:
            return None
        # --porcelain reports a refused ref on stdout ("!  <refspec>  [rejected] (why)").
        refused = [line.split("\t")[-1] for line in out.splitlines() if line.startswith("!")]
        if status != -9 and refused:
            if any(marker in refused[0] for marker in _RACE_MARKERS):
                return refused[0]
            raise RemoteRefused(
                f"push to {redact(self.url)} (branch {self.branch!r}) refused: {redact(refused[0])}"
            )
        raise self._remote_failure("push to", status, err)

    # --- plumbing ---------------------------------------------------------------------------

    def _local(self, *args: str) -> str:
        """Run a git command that stays on this machine; its stdout, or GitError."""
        status, out, err = run_git(self.path, [*_BASE, *args], {}, self.timeout)
        if status == -9:
            raise GitError(f"git {args[0]} in {self.path} timed out after {self.timeout:g}s")
        if status != 0:
            raise GitError(f"git {args[0]} in {self.path} failed: {failure_reason(err)}")
        return out.strip()

    def _remote_failure(self, action: str, status: int, stderr: str) -> GitError | RemoteRefused:
        """Refusals (retrying cannot help) apart from failures that may pass (retried)."""
        remote = redact(self.url)
        if status == -9:
            return GitError(f"git {action} {remote} timed out after {self.timeout:g}s")
        if "couldn't find remote ref" in stderr:
            return RemoteRefused(f"branch {self.branch!r} not found at {remote}")
        reason = redact(failure_reason(stderr)) if stderr.strip() else f"exit status {status}"
        if any(marker in stderr for marker in REFUSALS):
            return RemoteRefused(f"git {action} {remote} refused: {reason}")
        return GitError(f"git {action} {remote} failed: {reason}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the working copy's file lock, waiting at most `timeout` for another holder."""
        self._lock_file.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        with self._lock_file.open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise GitError(
                            f"working copy {self.path} stayed busy for {self.timeout:g}s"
                        ) from None
                    time.sleep(_LOCK_POLL)
            yield


def _backoff(retry: int) -> float:
    """Seconds to wait before retry number `retry`: capped exponential, fully jittered."""
    return _jitter.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**retry))
