"""The mirror against real git remotes: fetch, and a clear error for each way it can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops_pipeline.errors import GitError, ManifestError, RemoteRefused
from gitops_pipeline.git.mirror import Mirror, redact
from gitops_pipeline.testbed.gitremote import GitRemote


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    remote = GitRemote(tmp_path / "remote")
    remote.commit({"a.yaml": "a: 1\n"}, "first")
    return remote


def test_fetch_is_incremental_and_reports_head(remote: GitRemote, tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "mirror", remote.url, timeout=20)
    assert mirror.fetch("master") == remote.head()
    second = remote.commit({"b.yaml": "b: 2\n"}, "second")
    assert mirror.fetch("master") == second
    tree = tmp_path / "tree"
    mirror.export(second, tree)
    assert sorted(p.name for p in tree.iterdir()) == ["a.yaml", "b.yaml"]


def test_missing_branch_is_a_refusal(remote: GitRemote, tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "mirror", remote.url, timeout=20)
    with pytest.raises(RemoteRefused, match=f"branch 'main' not found at {remote.url}"):
        mirror.fetch("main")


def test_missing_repository_is_a_refusal(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'nothing-here.git'}"
    with pytest.raises(RemoteRefused, match="does not appear to be a git repository"):
        Mirror(tmp_path / "mirror", url, timeout=20).fetch("master")


def test_hanging_remote_times_out_as_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ssh transport that never answers stands in for an unreachable host.
    monkeypatch.setenv("GIT_SSH_COMMAND", "sleep 30 #")  # `#` drops the arguments git adds
    mirror = Mirror(tmp_path / "mirror", "ssh://git@127.0.0.1/repo.git", timeout=1)
    with pytest.raises(GitError, match=r"timed out after 1s") as caught:
        mirror.fetch("master")
    assert not isinstance(caught.value, RemoteRefused)


def test_credentials_never_reach_messages() -> None:
    assert (
        redact("https://bot:s3cret@example.com/org/repo.git") == "https://example.com/org/repo.git"
    )


def test_read_files_from_the_object_store(remote: GitRemote, tmp_path: Path) -> None:
    head = remote.commit(
        {
            "apps/web.yaml": "w: 1\n",
            "apps/sub/db.yml": "d: 1\n",
            "apps/README.md": "x",
            "infra/net.yaml": "n: 1\n",
        },
        "tree",
    )
    mirror = Mirror(tmp_path / "mirror", remote.url, timeout=20)
    mirror.fetch("master")
    files = mirror.read_files(head, ["apps", "infra/net.yaml"], (".yaml", ".yml"))
    assert files == {
        "apps/web.yaml": b"w: 1\n",
        "apps/sub/db.yml": b"d: 1\n",
        "infra/net.yaml": b"n: 1\n",
    }
    assert mirror.read_files(head, ["."], (".yaml",)) is not None
    with pytest.raises(ManifestError, match="path 'nope' does not exist"):
        mirror.read_files(head, ["nope"], (".yaml",))


def test_symlinks_need_a_checkout(remote: GitRemote, tmp_path: Path) -> None:
    (remote.work / "link.yaml").symlink_to("a.yaml")
    head = remote.commit({}, "a symlink")
    mirror = Mirror(tmp_path / "mirror", remote.url, timeout=20)
    mirror.fetch("master")
    assert mirror.read_files(head, ["."], (".yaml",)) is None
