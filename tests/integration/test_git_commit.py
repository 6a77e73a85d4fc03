"""Commits and compare-and-swap pushes from a working copy to a real bare remote."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gitops_pipeline.errors import GitError, RemoteRefused, SignatureError
from gitops_pipeline.git.commit import CommitResult, PushConflict, WorkingCopy
from gitops_pipeline.testbed.gitremote import GitRemote, run_git

if TYPE_CHECKING:
    from tests.conftest import GpgSigner

pytestmark = pytest.mark.integration

TIMEOUT = 30.0
AUTHOR = ("Gitops Bot", "bot@example.com")
SHARED = "lines.txt"


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    remote = GitRemote(tmp_path / "remote")
    remote.commit({SHARED: "first\n"}, "first")
    return remote


def working_copy(remote: GitRemote, path: Path) -> WorkingCopy:
    return WorkingCopy(
        path, remote.url, remote.branch, env={"GIT_TERMINAL_PROMPT": "0"}, timeout=TIMEOUT
    )


@pytest.fixture
def copy(tmp_path: Path, remote: GitRemote) -> WorkingCopy:
    return working_copy(remote, tmp_path / "copy")


def append(line: str, name: str = SHARED) -> Callable[[Path], list[str]]:
    def change(root: Path) -> list[str]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(f"{line}\n")
        return [name]

    return change


def commit(
    copy: WorkingCopy,
    change: Callable[[Path], list[str] | None],
    *,
    ci_skip: bool = False,
    signer: GpgSigner | None = None,
    signing_key: str | None = None,
    max_attempts: int = 5,
    verify_base: Callable[[str], None] | None = None,
) -> CommitResult:
    return copy.commit_and_push(
        change,
        "Bump",
        author=AUTHOR,
        signing_key=signing_key or (signer.fingerprint if signer else None),
        gnupg_home=signer.home if signer else None,
        ci_skip=ci_skip,
        max_attempts=max_attempts,
        verify_base=verify_base,
    )


def in_remote(remote: GitRemote, *args: str) -> str:
    return run_git(*args, cwd=remote.bare)


def remote_head(remote: GitRemote) -> str:
    return in_remote(remote, "rev-parse", f"refs/heads/{remote.branch}")


def remote_file(remote: GitRemote, name: str = SHARED) -> str:
    return in_remote(remote, "show", f"refs/heads/{remote.branch}:{name}")


def assert_linear(remote: GitRemote) -> None:
    assert in_remote(remote, "rev-list", "--merges", remote.branch) == ""


def push_from_outside(remote: GitRemote, line: str) -> str:
    """Append `line` to the shared file from the remote's own clone, catching up first."""
    run_git("fetch", "--quiet", "origin", cwd=remote.work)
    run_git("reset", "--quiet", "--hard", f"origin/{remote.branch}", cwd=remote.work)
    current = (remote.work / SHARED).read_text()
    return remote.commit({SHARED: f"{current}{line}\n"}, f"outside: {line}")


# --- committing -------------------------------------------------------------------------------


def test_a_change_is_committed_and_pushed_as_the_author(
    remote: GitRemote, copy: WorkingCopy
) -> None:
    before = remote_head(remote)
    result = commit(copy, append("second"))
    assert result == CommitResult(remote_head(remote), 1, [SHARED])
    assert remote_file(remote) == "first\nsecond"
    people = in_remote(remote, "log", "-1", "--format=%an <%ae>|%cn <%ce>", remote.branch)
    assert people == "Gitops Bot <bot@example.com>|Gitops Bot <bot@example.com>"
    assert in_remote(remote, "log", "-1", "--format=%B", remote.branch) == "Bump"
    assert in_remote(remote, "rev-parse", f"{result.sha}^") == before
    assert in_remote(remote, "log", "-1", "--format=%G?", remote.branch) == "N"


def test_ci_skip_is_appended_to_the_message(remote: GitRemote, copy: WorkingCopy) -> None:
    commit(copy, append("second"), ci_skip=True)
    assert in_remote(remote, "log", "-1", "--format=%B", remote.branch) == "Bump\n\n[ci skip]"


def test_deletions_and_new_directories_are_committed(remote: GitRemote, copy: WorkingCopy) -> None:
    def change(root: Path) -> list[str]:
        (root / SHARED).unlink()
        (root / "apps" / "web").mkdir(parents=True)
        (root / "apps" / "web" / "deploy.yaml").write_text("kind: Deployment\n")
        return [SHARED, "apps/web/deploy.yaml"]

    result = commit(copy, change)
    assert sorted(result.changed_files) == ["apps/web/deploy.yaml", SHARED]
    tree = in_remote(remote, "ls-tree", "-r", "--name-only", remote.branch)
    assert tree.split() == ["apps/web/deploy.yaml"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda root: None, id="none"),
        pytest.param(lambda root: [], id="empty"),
        pytest.param(lambda root: [SHARED], id="unchanged-file"),
    ],
)
def test_nothing_to_change_makes_no_commit(
    remote: GitRemote, copy: WorkingCopy, change: Callable[[Path], list[str] | None]
) -> None:
    before = remote_head(remote)
    assert commit(copy, change) == CommitResult(None, 1, [])
    assert remote_head(remote) == before


def test_only_reported_paths_are_committed_and_nothing_is_kept_locally(
    remote: GitRemote, copy: WorkingCopy
) -> None:
    def change(root: Path) -> list[str]:
        (root / "stray.txt").write_text("not reported\n")
        (root / SHARED).write_text("rewritten\n")
        (root / "reported.txt").write_text("reported\n")
        return ["reported.txt"]

    result = commit(copy, change)
    assert result.changed_files == ["reported.txt"]
    assert in_remote(remote, "ls-tree", "--name-only", remote.branch).split() == [
        SHARED,
        "reported.txt",
    ]
    assert remote_file(remote) == "first"
    assert copy.update() == result.sha
    assert not (copy.path / "stray.txt").exists()
    assert (copy.path / SHARED).read_text() == "first\n"


def test_the_working_copy_is_reused_and_survives_a_stale_index_lock(
    remote: GitRemote, copy: WorkingCopy
) -> None:
    commit(copy, append("second"))
    marker = copy.path / ".git" / "reused"
    marker.write_text("")
    (copy.path / ".git" / "index.lock").write_text("")
    result = commit(copy, append("third"))
    assert marker.exists()
    assert result.sha == remote_head(remote)
    assert remote_file(remote) == "first\nsecond\nthird"


def test_a_signed_commit_verifies_with_the_signers_key(
    remote: GitRemote, copy: WorkingCopy, gpg_signer: GpgSigner
) -> None:
    result = commit(copy, append("second"), signer=gpg_signer)
    assert result.sha is not None
    run_git("fetch", "--quiet", "origin", cwd=remote.work)
    run_git("verify-commit", result.sha, cwd=remote.work, env=gpg_signer.env)
    signature = run_git(
        "log", "-1", "--format=%G? %GF", result.sha, cwd=remote.work, env=gpg_signer.env
    )
    assert signature == f"G {gpg_signer.fingerprint}"


def test_a_key_that_cannot_sign_pushes_nothing(
    remote: GitRemote, copy: WorkingCopy, gpg_signer: GpgSigner
) -> None:
    before = remote_head(remote)
    with pytest.raises(SignatureError, match="cannot sign the commit"):
        commit(copy, append("second"), signer=gpg_signer, signing_key="nobody@example.com")
    assert remote_head(remote) == before


# --- compare-and-swap -------------------------------------------------------------------------


def test_a_push_overtaken_from_outside_is_recomputed_on_the_new_head(
    remote: GitRemote, copy: WorkingCopy
) -> None:
    seen: list[str] = []
    outside: list[str] = []
    base_calls: list[str] = []

    def change(root: Path) -> list[str]:
        seen.append((root / SHARED).read_text())
        if not outside:
            outside.append(push_from_outside(remote, "outside"))
        return append("ours")(root)

    first_head = remote_head(remote)
    result = commit(copy, change, verify_base=base_calls.append)
    assert result.attempts == 2
    assert seen == ["first\n", "first\noutside\n"]
    assert base_calls == [first_head, outside[0]]
    assert result.sha == remote_head(remote)
    assert in_remote(remote, "rev-parse", f"{result.sha}^") == outside[0]
    assert remote_file(remote) == "first\noutside\nours"
    assert_linear(remote)


def test_a_change_someone_else_already_made_becomes_nothing_to_commit(
    remote: GitRemote, copy: WorkingCopy
) -> None:
    def change(root: Path) -> list[str]:
        if "ours" not in (root / SHARED).read_text():
            push_from_outside(remote, "ours")
            return append("ours")(root)
        return []

    result = commit(copy, change)
    assert result == CommitResult(None, 2, [])
    assert remote_file(remote) == "first\nours"


def test_a_branch_that_keeps_moving_exhausts_the_attempts(
    remote: GitRemote, copy: WorkingCopy
) -> None:
    calls = 0

    def change(root: Path) -> list[str]:
        nonlocal calls
        calls += 1
        push_from_outside(remote, f"outside {calls}")
        return append("ours")(root)

    with pytest.raises(PushConflict, match="overtaken 3 times") as caught:
        commit(copy, change, max_attempts=3)
    assert isinstance(caught.value, GitError)
    assert calls == 3
    assert "ours" not in remote_file(remote)
    assert_linear(remote)


def test_twenty_concurrent_committers_and_outside_pushes_all_land(
    tmp_path: Path, remote: GitRemote
) -> None:
    writers, outside_pushes = 20, 10
    start = threading.Barrier(writers + 1)
    results: dict[int, CommitResult] = {}
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        copy = working_copy(remote, tmp_path / f"copy-{index}")
        copy.update()
        start.wait()
        try:

            def change(root: Path) -> list[str]:
                (root / "files").mkdir(exist_ok=True)
                (root / "files" / f"{index}.txt").write_text(f"{index}\n")
                return [*append(f"writer {index}")(root), f"files/{index}.txt"]

            results[index] = commit(copy, change, max_attempts=60)
        except BaseException as exc:
            errors.append(exc)

    def outsider() -> None:
        start.wait()
        for number in range(outside_pushes):
            for _ in range(200):
                try:
                    push_from_outside(remote, f"outside {number}")
                    break
                except RuntimeError:
                    time.sleep(0.01)
            else:
                errors.append(AssertionError(f"outside push {number} never landed"))
            time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    threads.append(threading.Thread(target=outsider))
    for thread in threads:
        thread.start()
    began = time.monotonic()
    for thread in threads:
        thread.join(timeout=240)
    elapsed = time.monotonic() - began

    assert not errors
    assert sorted(results) == list(range(writers))
    lines = remote_file(remote).splitlines()
    expected = ["first"] + [f"writer {i}" for i in range(writers)]
    expected += [f"outside {n}" for n in range(outside_pushes)]
    assert sorted(lines) == sorted(expected)
    listed = in_remote(remote, "ls-tree", "--name-only", f"{remote.branch}:files").split()
    assert sorted(listed) == sorted(f"{i}.txt" for i in range(writers))
    count = in_remote(remote, "rev-list", "--count", remote.branch)
    assert int(count) == 1 + writers + outside_pushes
    assert_linear(remote)
    for result in results.values():
        assert result.sha is not None
        in_remote(remote, "merge-base", "--is-ancestor", result.sha, remote.branch)
    attempts = sorted(result.attempts for result in results.values())
    spread = f"{attempts[0]}/{attempts[len(attempts) // 2]}/{attempts[-1]}"
    print(f"\n20-way: {elapsed:.2f}s, attempts min/median/max {spread}")


def test_workers_sharing_one_working_copy_take_turns(tmp_path: Path, remote: GitRemote) -> None:
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            commit(working_copy(remote, tmp_path / "shared"), append(f"writer {index}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    lines = remote_file(remote).splitlines()
    assert sorted(lines) == ["first", *(f"writer {i}" for i in range(5))]
    assert_linear(remote)


# --- refusals and failures --------------------------------------------------------------------


def test_a_failing_base_verification_stops_before_any_commit(
    remote: GitRemote, copy: WorkingCopy
) -> None:
    before = remote_head(remote)
    changes: list[Path] = []

    def refuse(revision: str) -> None:
        raise SignatureError(f"commit {revision[:12]} is not signed")

    def change(root: Path) -> list[str]:
        changes.append(root)
        return append("second")(root)

    with pytest.raises(SignatureError, match=f"commit {before[:12]} is not signed"):
        commit(copy, change, verify_base=refuse)
    assert changes == []
    assert remote_head(remote) == before


def test_an_unreachable_remote_is_a_transient_error_with_the_url_redacted(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://user:s3cret@127.0.0.1:{port}/repo.git"
    copy = WorkingCopy(tmp_path / "copy", url, "master", env={}, timeout=TIMEOUT)
    with pytest.raises(GitError) as caught:
        commit(copy, append("second"))
    assert not isinstance(caught.value, RemoteRefused)
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}/repo.git" in message
    assert "s3cret" not in message


def test_a_missing_branch_is_refused(tmp_path: Path, remote: GitRemote) -> None:
    copy = WorkingCopy(tmp_path / "copy", remote.url, "nope", env={}, timeout=TIMEOUT)
    with pytest.raises(RemoteRefused, match="branch 'nope' not found"):
        commit(copy, append("second"))


def test_a_push_declined_by_the_remote_is_refused(remote: GitRemote, copy: WorkingCopy) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho protected branch >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(RemoteRefused, match="pre-receive hook declined"):
        commit(copy, append("second"))


def test_a_git_call_that_outlives_its_timeout_is_a_transient_error(
    tmp_path: Path, remote: GitRemote
) -> None:
    slow = tmp_path / "slow-upload-pack"
    slow.write_text('#!/bin/sh\nsleep 5\nexec git-upload-pack "$@"\n')
    slow.chmod(0o755)
    env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "remote.origin.uploadpack"}
    env["GIT_CONFIG_VALUE_0"] = str(slow)
    copy = WorkingCopy(tmp_path / "copy", remote.url, remote.branch, env=env, timeout=1.0)
    began = time.monotonic()
    with pytest.raises(GitError, match="timed out after 1s"):
        commit(copy, append("second"))
    assert time.monotonic() - began < 4
