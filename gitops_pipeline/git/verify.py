"""Signature verification: which commits may be synced, and whether the sync tag is genuine.

Trust comes from one place only: the public keys in ``gpg_keys_dir``. They are imported into
an isolated GnuPG home (never the worker user's own keyring), and a signature counts only
when gpg calls it good *and* its key is one of those imported from the directory, so a stale
or stray key in the home can never vouch for a commit.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gnupg

from gitops_pipeline.errors import ConfigError, GitError, SignatureError
from gitops_pipeline.git.command import failure_reason, run_git

Mode = Literal["none", "all", "first-parent"]

# Verification needs only public keys; never let gpg (or git's gpg) spawn an agent or dirmngr.
_GPG_CONF = "no-autostart\n"
_MARKER = "trusted-keys.json"
_LOCK = "import.lock"
# %G? reports "G" only for a good signature from a key gpg considers valid (trusted).
_GOOD = "G"
_VALID_TRUST = {"TRUST_FULLY", "TRUST_ULTIMATE"}
_BAD_STATUS = {"BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY"}
_SEP = "\x1f"


@dataclass(frozen=True)
class Verification:
    """The newest commit allowed to sync and, when verification stopped early, why."""

    revision: str | None
    bad_commit: str | None = None
    message: str | None = None


class _TimedGPG(gnupg.GPG):  # type: ignore[misc]  # python-gnupg ships no type information
    """python-gnupg has no timeouts, so every gpg it starts is killed after `timeout` seconds."""

    def __init__(self, home: Path, timeout: float) -> None:
        # Set before the base class runs its first gpg (--list-config).
        self._timeout = timeout
        self._timers: dict[int, threading.Timer] = {}
        super().__init__(gpgbinary="gpg", gnupghome=str(home))

    def _open_subprocess(self, args: list[str], passphrase: bool = False) -> Any:
        process = super()._open_subprocess(args, passphrase)
        timer = threading.Timer(self._timeout, process.kill)
        timer.daemon = True
        timer.start()
        self._timers[process.pid] = timer
        return process

    def _collect_output(
        self, process: Any, result: Any, writer: Any = None, stdin: Any = None
    ) -> Any:
        try:
            return super()._collect_output(process, result, writer, stdin)
        finally:
            timer = self._timers.pop(process.pid, None)
            if timer is not None:
                timer.cancel()


class Keyring:
    """An isolated GnuPG home holding the trusted public keys; used for verification only.

    ``import_dir`` must run before verifying: until then nothing is trusted, so every
    signature is rejected (fail closed).
    """

    def __init__(self, home: Path, timeout: float = 30.0) -> None:
        self.home = home
        self.timeout = timeout
        self._trusted: frozenset[str] = frozenset()

    @property
    def trusted(self) -> frozenset[str]:
        """Primary-key fingerprints of the keys imported from the keys directory."""
        return self._trusted

    @property
    def env(self) -> dict[str, str]:
        """Environment for a git or gpg process that must verify against this keyring only."""
        return {"GNUPGHOME": str(self.home)}

    def import_dir(self, keys_dir: Path) -> frozenset[str]:
        """Trust exactly the public keys in `keys_dir`; return their fingerprints.

        Cheap when nothing changed: the directory's contents are hashed and compared with the
        hash recorded by the last import. On a change, new keys are imported and given
        ultimate owner trust, and keys no longer in the directory are deleted. Concurrent
        importers sharing the home are serialised by a lock file.
        """
        keys = _read_keys(keys_dir)
        digest = _digest(keys)
        self._prepare_home()
        trusted = self._recorded(digest)
        if trusted is None:
            with open(self.home / _LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                # Another process may have imported the same contents while we waited.
                trusted = self._recorded(digest)
                if trusted is None:
                    trusted = self._import(keys, digest)
        self._trusted = trusted
        return trusted

    def _prepare_home(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is subject to the umask, and gpg warns about unsafe permissions.
        self.home.chmod(0o700)
        conf = self.home / "gpg.conf"
        if not conf.is_file() or conf.read_text() != _GPG_CONF:
            _write_atomically(conf, _GPG_CONF)

    def _recorded(self, digest: str) -> frozenset[str] | None:
        try:
            record = json.loads((self.home / _MARKER).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("digest") != digest:
            return None
        return frozenset(str(fingerprint) for fingerprint in record.get("fingerprints", []))

    def _import(self, keys: Mapping[Path, bytes], digest: str) -> frozenset[str]:
        gpg = _TimedGPG(self.home, self.timeout)
        trusted: set[str] = set()
        for path, content in keys.items():
            result = gpg.import_keys(content)
            self._check_timeout(result, f"importing {path}")
            fingerprints = {str(fpr).upper() for fpr in result.fingerprints if fpr}
            if not fingerprints:
                raise ConfigError(f"git.gpg_keys_dir: {path} holds no OpenPGP public key")
            trusted |= fingerprints
        try:
            gpg.trust_keys(sorted(trusted), "TRUST_ULTIMATE")
        except ValueError as exc:
            raise GitError(f"gpg could not set owner trust in {self.home}: {exc}") from None
        # Keys no longer in the directory can never count (they are not in `trusted`);
        # deleting them keeps the home an honest copy of the directory.
        stale = {str(key["fingerprint"]) for key in gpg.list_keys()} - trusted
        if stale:
            self._check_timeout(gpg.delete_keys(sorted(stale)), "deleting untrusted keys")
        record = {"digest": digest, "fingerprints": sorted(trusted)}
        _write_atomically(self.home / _MARKER, json.dumps(record))
        return frozenset(trusted)

    def _check_timeout(self, result: Any, doing: str) -> None:
        if result.returncode == -9:
            raise GitError(f"gpg timed out after {self.timeout:g}s {doing}")


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` so that concurrent readers (other workers, gpg) never see it half-written."""
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def _read_keys(keys_dir: Path) -> dict[Path, bytes]:
    """The contents of the regular files directly in `keys_dir`, by path, skipping hidden ones.

    Hidden entries are skipped because a mounted Kubernetes Secret or ConfigMap keeps its
    real files in ``..data``-style directories and exposes them through symlinks. Reading
    once gives the hash and the import the same snapshot.
    """
    if not keys_dir.is_dir():
        raise ConfigError(f"git.gpg_keys_dir: {keys_dir} is not a directory")
    paths = sorted(p for p in keys_dir.iterdir() if not p.name.startswith(".") and p.is_file())
    if not paths:
        raise ConfigError(f"git.gpg_keys_dir: {keys_dir} holds no key files")
    try:
        return {path: path.read_bytes() for path in paths}
    except OSError as exc:
        raise ConfigError(f"git.gpg_keys_dir: cannot read {exc.filename}: {exc.strerror}") from None


def _digest(keys: Mapping[Path, bytes]) -> str:
    digest = hashlib.sha256()
    for path, content in keys.items():
        digest.update(f"{path.name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Commit:
    sha: str
    parents: tuple[str, ...]
    good: bool


def verify_range(
    repo: Path, base: str | None, head: str, mode: Mode, keyring: Keyring, timeout: float
) -> Verification:
    """Return the newest commit on the first-parent chain base..head that may be synced.

    `base` is the last synced commit (the sync tag; None before the first sync: then every
    commit reachable from `head` is checked) and `head` a commit SHA. Walking the chain from
    base towards head, a chain commit C is allowed in ``all`` mode when every commit in
    base..C is good, in ``first-parent`` mode when every chain commit in base..C is good.
    When a commit fails, the result holds the newest allowed commit (`base` itself, or None
    without a base, when the first one fails) and the first bad commit. ``none`` allows head.
    """
    if mode == "none":
        return Verification(head)
    if mode not in ("all", "first-parent"):
        raise ValueError(f"unknown signature verification mode {mode!r}")
    commits = _signed_log(repo, base, head, mode == "first-parent", keyring, timeout)
    if not commits:
        # Nothing in base..head: head is already covered by the last sync.
        return Verification(head)
    by_sha = {commit.sha: commit for commit in commits}
    chain: list[str] = []
    tip: str | None = commits[-1].sha  # --reverse --topo-order: the tip comes last
    while tip is not None and tip in by_sha:
        chain.append(tip)
        tip = next(iter(by_sha[tip].parents), None)
    chain.reverse()
    clean = _clean(commits) if mode == "all" else {sha: by_sha[sha].good for sha in chain}
    allowed = base
    for sha in chain:
        if not clean[sha]:
            bad = sha if mode == "first-parent" else _first_bad(commits, by_sha, sha)
            return Verification(allowed, bad, _no_valid_signature(bad))
        allowed = sha
    return Verification(allowed)


def _no_valid_signature(sha: str) -> str:
    return f"commit {sha} has no valid signature from a trusted key"


def _signed_log(
    repo: Path,
    base: str | None,
    head: str,
    first_parent: bool,
    keyring: Keyring,
    timeout: float,
) -> list[_Commit]:
    """Every commit in base..head with its parents and verdict, parents before children.

    One git call for the whole range; git runs gpg per signed commit against the keyring.
    """
    revisions = f"{base}..{head}" if base else head
    args = [
        "--no-replace-objects",
        "-c",
        "gpg.program=gpg",
        "-c",
        "log.showSignature=false",
        "log",
        "--topo-order",
        "--reverse",
        *(["--first-parent"] if first_parent else []),
        f"--format=%H{_SEP}%P{_SEP}%G?{_SEP}%GF{_SEP}%GP",
        "--end-of-options",
        revisions,
        "--",
    ]
    status, out, err = run_git(repo, args, keyring.env, timeout)
    if status == -9:
        raise GitError(f"verifying signatures in {revisions} timed out after {timeout:g}s")
    if status != 0:
        raise GitError(f"cannot list commits {revisions}: {failure_reason(err)}")
    trusted = keyring.trusted
    commits = []
    for line in out.splitlines():
        sha, parents, verdict, signer, primary = line.split(_SEP)
        good = verdict == _GOOD and bool({signer, primary} & trusted)
        commits.append(_Commit(sha, tuple(parents.split()), good))
    return commits


def _clean(commits: Sequence[_Commit]) -> dict[str, bool]:
    """Whether each commit and all its ancestors inside the range are good."""
    clean: dict[str, bool] = {}
    for commit in commits:  # parents come before their children
        clean[commit.sha] = commit.good and all(clean.get(p, True) for p in commit.parents)
    return clean


def _first_bad(commits: Sequence[_Commit], by_sha: Mapping[str, _Commit], sha: str) -> str:
    """The oldest bad commit in the range that is `sha` or one of its ancestors."""
    ancestry = {sha}
    pending = [sha]
    while pending:
        for parent in by_sha[pending.pop()].parents:
            if parent in by_sha and parent not in ancestry:
                ancestry.add(parent)
                pending.append(parent)
    return next(c.sha for c in commits if c.sha in ancestry and not c.good)


def verify_tag(repo: Path, tag: str, keyring: Keyring, timeout: float) -> str | None:
    """Check that the sync tag is an annotated tag signed by a trusted key.

    Returns the commit the tag points to, or None when the tag does not exist (before the
    first sync). Raises SignatureError when the tag is lightweight, unsigned, signed by a key
    not in the keys directory, badly signed, or its tag object carries another tag's name
    (a genuine signed tag moved under this name).
    """
    ref = f"refs/tags/{tag}"
    kind = _tag_kind(repo, ref, timeout)
    if kind is None:
        return None
    object_type, name, target_type, target = kind
    if object_type != "tag":
        raise SignatureError(f"sync tag {tag!r} is a lightweight tag, not a signed annotated tag")
    if target_type != "commit":
        raise SignatureError(f"sync tag {tag!r} points at a {target_type}, not a commit")
    if name != tag:
        raise SignatureError(f"sync tag {tag!r} points at a tag object named {name!r}")
    # --raw puts gpg's status lines on stderr (but not together with --format).
    args = ["-c", "gpg.program=gpg", "verify-tag", "--raw", ref]
    status, _, err = run_git(repo, args, keyring.env, timeout)
    if status == -9:
        raise GitError(f"verifying sync tag {tag!r} timed out after {timeout:g}s")
    statuses = [line.split()[1:] for line in err.splitlines() if line.startswith("[GNUPG:] ")]
    if not statuses:
        raise SignatureError(f"sync tag {tag!r} is not signed")
    if status != 0 or not _trusted_signature(statuses, keyring.trusted):
        raise SignatureError(f"sync tag {tag!r} has no valid signature from a trusted key")
    return target


def _tag_kind(repo: Path, ref: str, timeout: float) -> tuple[str, str, str, str] | None:
    """(object type, tag object's name, target type, target SHA) of `ref`, None if absent.

    For a lightweight tag the name is empty and the target is the object `ref` names.
    """
    fields = "%(refname)%1f%(objecttype)%1f%(tag)%1f%(*objecttype)%1f%(*objectname)%1f%(objectname)"
    status, out, err = run_git(repo, ["for-each-ref", f"--format={fields}", ref], {}, timeout)
    if status != 0:
        raise GitError(f"cannot read {ref}: {failure_reason(err)}")
    for line in out.splitlines():
        refname, object_type, name, target_type, target, sha = line.split(_SEP)
        # for-each-ref also matches refs below `ref` (refs/tags/flux/x); only `ref` counts.
        if refname == ref:
            if object_type != "tag":
                return object_type, name, object_type, sha
            return object_type, name, target_type, target
    return None


def _trusted_signature(statuses: Sequence[Sequence[str]], trusted: frozenset[str]) -> bool:
    """Whether gpg's status lines show only good, valid signatures by trusted keys."""
    keywords = [fields[0] for fields in statuses if fields]
    if _BAD_STATUS & set(keywords) or "GOODSIG" not in keywords:
        return False
    valid = [fields for fields in statuses if fields and fields[0] == "VALIDSIG"]
    trust = [keyword for keyword in keywords if keyword.startswith("TRUST_")]
    if not valid or not trust or any(level not in _VALID_TRUST for level in trust):
        return False
    # VALIDSIG <signing-key fpr> ... <primary-key fpr> (the primary is the last field).
    return all({fields[1], fields[-1]} & trusted for fields in valid)
