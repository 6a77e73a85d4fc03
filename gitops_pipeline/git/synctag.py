"""The sync tag: the marker in the remote recording the last revision applied to the cluster.

Like Flux v1's ``flux-sync`` tag it lives in the repository itself, so it survives restarts
and is visible to people; it is an annotated tag, GPG-signed when a signing key is set, so
that signature verification can check it was written by this operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import git

from gitops_pipeline.errors import ConfigError, GitError, SignatureError
from gitops_pipeline.git.command import failure_reason, run_git
from gitops_pipeline.git.mirror import redact


def read_sync_tag(repo: Path, tag: str, timeout: float) -> str | None:
    """The commit the local sync tag points to (as of the last fetch), or None if absent."""
    args = ["rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"]
    status, out, err = run_git(repo, args, {}, timeout)
    if status == 0:
        return out.strip()
    if status == 1:
        return None
    raise GitError(f"cannot read sync tag {tag!r}: {failure_reason(err)}")


def move_sync_tag(
    repo: Path,
    tag: str,
    revision: str,
    *,
    message: str,
    user: str,
    email: str,
    signing_key: str | None,
    gnupg_home: Path | None,
    env: Mapping[str, str],
    timeout: float,
) -> None:
    """Point the sync tag at `revision` in the bare repo `repo` and force-push it to origin.

    The tag is annotated with `user`/`email` as tagger, and signed with `signing_key` from
    the GnuPG home `gnupg_home` when a key is given. `env` carries the remote's credentials
    (as the mirror uses them). Each of the two git calls gets `timeout`. Running it again
    for the same revision makes a new tag object with the same target: harmless.

    Raises SignatureError when the tag cannot be signed, ConfigError for an invalid tag
    name and GitError when tagging or the push fails (rejected, unreachable, timed out).
    """
    identity = {"GIT_COMMITTER_NAME": user, "GIT_COMMITTER_EMAIL": email}
    tag_env = {**env, **identity}
    if gnupg_home is not None:
        tag_env["GNUPGHOME"] = str(gnupg_home)
    sign = ["--local-user", signing_key] if signing_key else ["--annotate", "--no-sign"]
    args = ["-c", "gpg.program=gpg", "tag", "--force", *sign, "--message", message]
    status, _, err = run_git(repo, [*args, "--end-of-options", tag, revision], tag_env, timeout)
    if status == -9:
        raise GitError(f"creating sync tag {tag!r} timed out after {timeout:g}s")
    if status != 0:
        if "failed to sign" in err:
            raise SignatureError(
                f"cannot sign sync tag {tag!r} with key {signing_key!r}: "
                "is its secret key (without passphrase) in the signing GnuPG home?"
            )
        if "not a valid tag name" in err:
            raise ConfigError(f"git.label: {tag!r} is not a valid tag name")
        raise GitError(f"cannot create sync tag {tag!r}: {failure_reason(err)}")
    _push(repo, tag, {**env, "GIT_TERMINAL_PROMPT": "0"}, timeout)


def _push(repo: Path, tag: str, env: Mapping[str, str], timeout: float) -> None:
    ref = f"refs/tags/{tag}"
    args = ["push", "--porcelain", "origin", f"+{ref}:{ref}"]
    status, out, err = run_git(repo, args, env, timeout)
    if status == 0:
        return
    remote = redact(git.Repo(repo).remotes.origin.url)
    if status == -9:
        raise GitError(f"pushing sync tag {tag!r} to {remote} timed out after {timeout:g}s")
    # --porcelain reports a refused ref on stdout ("!  <refspec>  [remote rejected] (why)").
    refused = [line for line in out.splitlines() if line.startswith("!")]
    reason = refused[0].split("\t")[-1] if refused else failure_reason(err)
    raise GitError(f"pushing sync tag {tag!r} to {remote} failed: {redact(reason)}")
