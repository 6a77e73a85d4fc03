"""Moving the sync tag in a real bare mirror and pushing it to a real remote."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gitops_pipeline.errors import GitError, SignatureError
from gitops_pipeline.git.mirror import Mirror
from gitops_pipeline.git.synctag import move_sync_tag, read_sync_tag
from gitops_pipeline.git.verify import Keyring, verify_tag
from gitops_pipeline.testbed.gitremote import GitRemote, run_git

if TYPE_CHECKING:
    from tests.conftest import GpgSigner

pytestmark = pytest.mark.integration

TIMEOUT = 30.0
TAG = "flux"


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path / "remote")


@pytest.fixture
def mirror(tmp_path: Path, remote: GitRemote) -> Mirror:
    remote.commit({"a.yaml": "name: a\n"}, "first")
    mirror = Mirror(tmp_path / "mirror", remote.url, timeout=TIMEOUT)
    mirror.fetch(remote.branch)
    return mirror


def move(
    mirror: Mirror,
    revision: str,
    *,
    signer: GpgSigner | None = None,
    key: str | None = None,
    timeout: float = TIMEOUT,
) -> None:
    move_sync_tag(
        mirror.path,
        TAG,
        revision,
        message="Sync pointer",
        user="gitops-pipeline",
        email="gitops-pipeline@example.com",
        signing_key=key or (signer.fingerprint if signer else None),
        gnupg_home=signer.home if signer else None,
        env={"GIT_TERMINAL_PROMPT": "0"},
        timeout=timeout,
    )


def in_remote(remote: GitRemote, *args: str) -> str:
    return run_git(*args, cwd=remote.bare)


def test_moving_the_tag_creates_an_annotated_tag_in_the_remote(
    remote: GitRemote, mirror: Mirror
) -> None:
    revision = remote.head()
    assert read_sync_tag(mirror.path, TAG, TIMEOUT) is None
    move(mirror, revision)
    assert in_remote(remote, "cat-file", "-t", f"refs/tags/{TAG}") == "tag"
    assert in_remote(remote, "rev-parse", f"refs/tags/{TAG}^{{commit}}") == revision
    tagger = in_remote(remote, "for-each-ref", "--format=%(taggername) %(taggeremail)", "refs/tags")
    assert tagger == "gitops-pipeline <gitops-pipeline@example.com>"
    assert read_sync_tag(mirror.path, TAG, TIMEOUT) == revision


def test_moving_again_forces_the_tag_forward(remote: GitRemote, mirror: Mirror) -> None:
    first = remote.head()
    move(mirror, first)
    second = remote.commit({"b.yaml": "name: b\n"}, "second")
    assert mirror.fetch(remote.branch) == second
    # The fetch brought the remote's tag back; moving it again must still succeed.
    assert read_sync_tag(mirror.path, TAG, TIMEOUT) == first
    move(mirror, second)
    move(mirror, second)  # idempotent: a new tag object at the same commit
    assert in_remote(remote, "rev-parse", f"refs/tags/{TAG}^{{commit}}") == second
    assert read_sync_tag(mirror.path, TAG, TIMEOUT) == second


def test_signed_tag_verifies(
    tmp_path: Path, remote: GitRemote, mirror: Mirror, gpg_signer: GpgSigner
) -> None:
    revision = remote.head()
    move(mirror, revision, signer=gpg_signer)
    keys_dir = tmp_path / "keys"
    gpg_signer.export_to(keys_dir)
    keyring = Keyring(tmp_path / "keyring")
    keyring.import_dir(keys_dir)
    assert verify_tag(mirror.path, TAG, keyring, TIMEOUT) == revision
    # And as a fresh mirror sees it after fetching from the remote.
    fresh = Mirror(tmp_path / "fresh", remote.url, timeout=TIMEOUT)
    fresh.fetch(remote.branch)
    assert verify_tag(fresh.path, TAG, keyring, TIMEOUT) == revision


def test_unsigned_tag_does_not_verify(
    tmp_path: Path, mirror: Mirror, gpg_signer: GpgSigner
) -> None:
    move(mirror, read_head(mirror))
    keyring = Keyring(tmp_path / "keyring")
    gpg_signer.export_to(tmp_path / "keys")
    keyring.import_dir(tmp_path / "keys")
    with pytest.raises(SignatureError, match="sync tag 'flux' is not signed"):
        verify_tag(mirror.path, TAG, keyring, TIMEOUT)


def test_signing_with_a_missing_key_is_a_signature_error(
    remote: GitRemote, mirror: Mirror, gpg_signer: GpgSigner
) -> None:
    with pytest.raises(SignatureError, match="cannot sign sync tag 'flux' with key 'DEADBEEF'"):
        move(mirror, remote.head(), signer=gpg_signer, key="DEADBEEF")
    assert read_sync_tag(mirror.path, TAG, TIMEOUT) is None


def test_push_to_unreachable_remote_is_a_git_error(mirror: Mirror) -> None:
    run_git("remote", "set-url", "origin", "file:///nonexistent/remote.git", cwd=mirror.path)
    with pytest.raises(
        GitError, match=r"pushing sync tag 'flux' to file:///nonexistent/remote\.git"
    ):
        move(mirror, read_head(mirror))


def test_push_rejected_by_the_remote_is_a_git_error(remote: GitRemote, mirror: Mirror) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'tags are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(GitError, match=r"failed: .*pre-receive hook declined"):
        move(mirror, remote.head())


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP URL whose server accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield f"http://user:secret@127.0.0.1:{server.getsockname()[1]}/remote.git"
    finally:
        server.close()


def test_push_that_hangs_times_out(mirror: Mirror, silent_server: str) -> None:
    run_git("remote", "set-url", "origin", silent_server, cwd=mirror.path)
    started = time.monotonic()
    with pytest.raises(GitError, match=r"timed out after 1\.5s") as caught:
        move(mirror, read_head(mirror), timeout=1.5)
    assert time.monotonic() - started < 10
    assert "secret" not in str(caught.value)


def read_head(mirror: Mirror) -> str:
    return run_git("rev-parse", "refs/remotes/origin/master", cwd=mirror.path)
