"""Signature verification against real signed commits and tags, real git and real gpg."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gitops_pipeline.errors import ConfigError, SignatureError
from gitops_pipeline.git.mirror import Mirror
from gitops_pipeline.git.verify import (
    Keyring,
    Mode,
    Verification,
    verify_range,
    verify_tag,
)
from gitops_pipeline.testbed.gitremote import GitRemote, run_git

if TYPE_CHECKING:
    from tests.conftest import GpgSigner

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


def no_valid_signature(sha: str) -> str:
    return f"commit {sha} has no valid signature from a trusted key"


@dataclass
class Repo:
    """A remote to commit to, a mirror of it, and a keyring trusting the keys in `keys_dir`."""

    remote: GitRemote
    mirror: Mirror
    keys_dir: Path
    keyring: Keyring

    def fetch(self) -> str:
        return self.mirror.fetch(self.remote.branch)

    def verify(self, base: str | None, mode: Mode = "all") -> Verification:
        head = self.fetch()
        return verify_range(self.mirror.path, base, head, mode, self.keyring, TIMEOUT)

    def unsigned(self, name: str) -> str:
        return self.remote.commit({f"{name}.yaml": f"name: {name}\n"}, f"unsigned {name}")

    def push_tags(self) -> None:
        run_git("push", "--quiet", "--force", "origin", "--tags", cwd=self.remote.work)


@pytest.fixture
def repo(tmp_path: Path, gpg_signer: GpgSigner) -> Repo:
    keys_dir = tmp_path / "keys"
    gpg_signer.export_to(keys_dir)
    keyring = Keyring(tmp_path / "keyring")
    keyring.import_dir(keys_dir)
    remote = GitRemote(tmp_path / "remote")
    mirror = Mirror(tmp_path / "mirror", remote.url, timeout=TIMEOUT)
    return Repo(remote, mirror, keys_dir, keyring)


def signed(signer: GpgSigner, repo: Repo, name: str) -> str:
    return signer.commit(repo.remote, {f"{name}.yaml": f"name: {name}\n"}, f"signed {name}")


# --- commits ----------------------------------------------------------------------------------


def test_mode_none_allows_head_without_checking(repo: Repo) -> None:
    repo.unsigned("a")
    head = repo.unsigned("b")
    assert repo.verify(None, "none") == Verification(head, None, None)


@pytest.mark.parametrize("mode", ["all", "first-parent"])
def test_all_signed_history_allows_head(repo: Repo, gpg_signer: GpgSigner, mode: Mode) -> None:
    first = signed(gpg_signer, repo, "a")
    signed(gpg_signer, repo, "b")
    head = signed(gpg_signer, repo, "c")
    assert repo.verify(None, mode) == Verification(head, None, None)
    assert repo.verify(first, mode) == Verification(head, None, None)


def test_up_to_date_base_allows_head(repo: Repo, gpg_signer: GpgSigner) -> None:
    head = signed(gpg_signer, repo, "a")
    assert repo.verify(head) == Verification(head, None, None)


@pytest.mark.parametrize("mode", ["all", "first-parent"])
def test_unsigned_commit_stops_sync_before_it(
    repo: Repo, gpg_signer: GpgSigner, mode: Mode
) -> None:
    base = signed(gpg_signer, repo, "a")
    good = signed(gpg_signer, repo, "b")
    bad = repo.unsigned("c")
    signed(gpg_signer, repo, "d")
    assert repo.verify(base, mode) == Verification(good, bad, no_valid_signature(bad))


def test_unsigned_commit_right_after_base_keeps_base(repo: Repo, gpg_signer: GpgSigner) -> None:
    base = signed(gpg_signer, repo, "a")
    bad = repo.unsigned("b")
    signed(gpg_signer, repo, "c")
    assert repo.verify(base) == Verification(base, bad, no_valid_signature(bad))


def test_commit_signed_by_untrusted_key_is_bad(
    repo: Repo, gpg_signer: GpgSigner, gpg_signers: Callable[[str], GpgSigner]
) -> None:
    base = signed(gpg_signer, repo, "a")
    bad = signed(gpg_signers("mallory"), repo, "b")
    assert repo.verify(base) == Verification(base, bad, no_valid_signature(bad))


def test_history_before_the_base_is_not_checked(repo: Repo, gpg_signer: GpgSigner) -> None:
    repo.unsigned("old")
    base = signed(gpg_signer, repo, "a")
    head = signed(gpg_signer, repo, "b")
    assert repo.verify(base) == Verification(head, None, None)


def test_without_base_every_commit_is_checked(repo: Repo, gpg_signer: GpgSigner) -> None:
    first = repo.unsigned("old")
    signed(gpg_signer, repo, "a")
    assert repo.verify(None) == Verification(None, first, no_valid_signature(first))


def test_merged_unsigned_side_branch(repo: Repo, gpg_signer: GpgSigner) -> None:
    """first-parent accepts a signed merge of unsigned work; all stops before the merge."""
    base = signed(gpg_signer, repo, "a")
    before_merge = signed(gpg_signer, repo, "b")
    work = repo.remote.work
    run_git("checkout", "--quiet", "-b", "side", base, cwd=work)
    (work / "side.yaml").write_text("name: side\n")
    run_git("add", "--all", cwd=work)
    run_git("commit", "--quiet", "-m", "unsigned side work", cwd=work)
    side = run_git("rev-parse", "HEAD", cwd=work)
    run_git("checkout", "--quiet", repo.remote.branch, cwd=work)
    merge = [*gpg_signer.git_options, "merge", "--quiet", "--no-ff", "-S", "-m", "merge side"]
    run_git(*merge, "side", cwd=work, env=gpg_signer.env)
    run_git("push", "--quiet", "origin", f"HEAD:refs/heads/{repo.remote.branch}", cwd=work)
    head = signed(gpg_signer, repo, "c")

    assert repo.verify(base, "first-parent") == Verification(head, None, None)
    assert repo.verify(base, "all") == Verification(before_merge, side, no_valid_signature(side))


def test_unsigned_commit_on_first_parent_chain_stops_first_parent_mode(
    repo: Repo, gpg_signer: GpgSigner
) -> None:
    base = signed(gpg_signer, repo, "a")
    bad = repo.unsigned("b")
    assert repo.verify(base, "first-parent") == Verification(base, bad, no_valid_signature(bad))


# --- keyring ----------------------------------------------------------------------------------


def test_keyring_tracks_the_keys_directory(
    repo: Repo, gpg_signer: GpgSigner, gpg_signers: Callable[[str], GpgSigner]
) -> None:
    bob = gpg_signers("bob")
    base = signed(gpg_signer, repo, "a")
    by_bob = signed(bob, repo, "b")
    assert repo.verify(base).bad_commit == by_bob

    bob.export_to(repo.keys_dir)
    assert repo.keyring.import_dir(repo.keys_dir) == {gpg_signer.fingerprint, bob.fingerprint}
    assert repo.verify(base) == Verification(by_bob, None, None)

    (repo.keys_dir / f"{gpg_signer.name}.asc").unlink()
    assert repo.keyring.import_dir(repo.keys_dir) == {bob.fingerprint}
    assert repo.verify(None) == Verification(None, base, no_valid_signature(base))


def test_reimporting_an_unchanged_directory_is_cheap(repo: Repo, gpg_signer: GpgSigner) -> None:
    pubring = repo.keyring.home / "pubring.kbx"
    before = pubring.stat().st_mtime_ns
    started = time.monotonic()
    for _ in range(20):
        assert repo.keyring.import_dir(repo.keys_dir) == {gpg_signer.fingerprint}
    elapsed = time.monotonic() - started
    assert pubring.stat().st_mtime_ns == before
    print(f"20 unchanged re-imports: {elapsed * 1000:.1f} ms")


def test_keyring_home_is_private_and_imports_binary_keys(
    tmp_path: Path, gpg_signer: GpgSigner
) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    export = ["gpg", "--homedir", str(gpg_signer.home), "--batch", "--export"]
    binary = subprocess.run(
        [*export, gpg_signer.fingerprint], capture_output=True, check=True, timeout=30
    )
    (keys_dir / "alice.gpg").write_bytes(binary.stdout)
    keyring = Keyring(tmp_path / "home")
    assert keyring.import_dir(keys_dir) == {gpg_signer.fingerprint}
    assert (tmp_path / "home").stat().st_mode & 0o777 == 0o700


def test_keys_from_a_mounted_secret_are_found(tmp_path: Path, gpg_signer: GpgSigner) -> None:
    """Kubernetes mounts Secret files as symlinks into a hidden ``..data`` directory."""
    keys_dir = tmp_path / "keys"
    gpg_signer.export_to(keys_dir / "..data")
    (keys_dir / "alice.asc").symlink_to(Path("..data") / "alice.asc")
    assert Keyring(tmp_path / "home").import_dir(keys_dir) == {gpg_signer.fingerprint}


@pytest.mark.parametrize(
    ("files", "problem"),
    [({"README": "not a key\n"}, "README holds no OpenPGP public key"), ({}, "holds no key files")],
)
def test_keys_directory_without_keys_is_a_config_error(
    tmp_path: Path, files: dict[str, str], problem: str
) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    for name, text in files.items():
        (keys_dir / name).write_text(text)
    with pytest.raises(ConfigError, match=problem):
        Keyring(tmp_path / "home").import_dir(keys_dir)


def test_nothing_is_trusted_before_import(
    tmp_path: Path, repo: Repo, gpg_signer: GpgSigner
) -> None:
    head = signed(gpg_signer, repo, "a")
    fresh = Keyring(tmp_path / "fresh")
    result = verify_range(repo.mirror.path, None, repo.fetch(), "all", fresh, TIMEOUT)
    assert result == Verification(None, head, no_valid_signature(head))


# --- the sync tag -----------------------------------------------------------------------------


def test_absent_sync_tag_passes(repo: Repo, gpg_signer: GpgSigner) -> None:
    signed(gpg_signer, repo, "a")
    repo.fetch()
    assert verify_tag(repo.mirror.path, "flux", repo.keyring, TIMEOUT) is None


def test_signed_sync_tag_passes(repo: Repo, gpg_signer: GpgSigner) -> None:
    target = signed(gpg_signer, repo, "a")
    signed(gpg_signer, repo, "b")
    tag = [*gpg_signer.git_options, "tag", "--sign", "--message", "synced", "flux", target]
    run_git(*tag, cwd=repo.remote.work, env=gpg_signer.env)
    repo.push_tags()
    repo.fetch()
    assert verify_tag(repo.mirror.path, "flux", repo.keyring, TIMEOUT) == target


@pytest.mark.parametrize(
    ("tag_args", "problem"),
    [
        ([], "is a lightweight tag"),
        (["--annotate", "--message", "synced"], "is not signed"),
    ],
)
def test_unsigned_sync_tag_is_an_error(
    repo: Repo, gpg_signer: GpgSigner, tag_args: list[str], problem: str
) -> None:
    target = signed(gpg_signer, repo, "a")
    run_git("tag", *tag_args, "flux", target, cwd=repo.remote.work)
    repo.push_tags()
    repo.fetch()
    with pytest.raises(SignatureError, match=f"sync tag 'flux' {problem}"):
        verify_tag(repo.mirror.path, "flux", repo.keyring, TIMEOUT)


def test_sync_tag_signed_by_untrusted_key_is_an_error(
    repo: Repo, gpg_signer: GpgSigner, gpg_signers: Callable[[str], GpgSigner]
) -> None:
    mallory = gpg_signers("mallory")
    target = signed(gpg_signer, repo, "a")
    tag = [*mallory.git_options, "tag", "--sign", "--message", "synced", "flux", target]
    run_git(*tag, cwd=repo.remote.work, env=mallory.env)
    repo.push_tags()
    repo.fetch()
    with pytest.raises(SignatureError, match="sync tag 'flux' has no valid signature"):
        verify_tag(repo.mirror.path, "flux", repo.keyring, TIMEOUT)


def test_signed_tag_of_another_name_is_not_a_sync_tag(repo: Repo, gpg_signer: GpgSigner) -> None:
    target = signed(gpg_signer, repo, "a")
    tag = [*gpg_signer.git_options, "tag", "--sign", "--message", "release", "v1.0", target]
    run_git(*tag, cwd=repo.remote.work, env=gpg_signer.env)
    tag_object = run_git("rev-parse", "refs/tags/v1.0", cwd=repo.remote.work)
    run_git("update-ref", "refs/tags/flux", tag_object, cwd=repo.remote.work)
    repo.push_tags()
    repo.fetch()
    with pytest.raises(SignatureError, match=r"tag object named 'v1\.0'"):
        verify_tag(repo.mirror.path, "flux", repo.keyring, TIMEOUT)
