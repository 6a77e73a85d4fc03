"""A pipeline's SSH identity: the key git uses for an ssh remote, and its public half.

With `git.ssh_key_file` configured, that file is the identity. Otherwise an ed25519 deploy key
is generated on first use (by whichever process asks first: `SET NX`, so concurrent first uses
agree on one key) and kept in Redis at `<prefix>identity:<pipeline>` as an OpenSSH private key,
so every worker on every machine uses the same key and `gitopsctl identity` can show it. Workers
copy it to a 0600 file under the work dir because ssh reads keys from files only.

The private key never leaves this module except into that file: it is not logged, not put in an
event, not returned by the API.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import redis
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gitops_pipeline import events
from gitops_pipeline.config import Pipeline, Settings
from gitops_pipeline.errors import ConfigError
from gitops_pipeline.store import Keys

Source = Literal["ssh_key_file", "generated"]

# ssh://host/repo, git+ssh://..., and scp-like user@host:path (a colon before any slash).
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^/:]+:(?!//)")
_SSH_KEY_TYPES = (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)


@dataclass(frozen=True)
class Identity:
    public_key: str
    """One line in authorized_keys format, e.g. `ssh-ed25519 AAAA... gitops-pipeline@app`."""
    fingerprint: str
    """`SHA256:<base64>`, as `ssh-keygen -l` prints it."""
    source: Source
    in_use: bool
    """Whether git uses this key: the pipeline's URL is an ssh URL."""


def redis_key(prefix: str, pipeline: str) -> str:
    return f"{prefix}identity:{pipeline}"


def uses_ssh(url: str) -> bool:
    """Whether git reaches `url` over ssh (and so needs a key)."""
    if "://" in url:
        return url.split("://", 1)[0].lower() in {"ssh", "git+ssh", "ssh+git"}
    return bool(_SCP_LIKE.match(url))


def public_identity(settings: Settings, client: redis.Redis, pipeline: str) -> Identity:
    """The pipeline's public key and fingerprint, generating the deploy key on first use."""
    spec = settings.pipeline(pipeline)
    if spec.git.ssh_key_file is not None:
        return _describe(_load_key_file(spec.git.ssh_key_file), "ssh_key_file", spec)
    return _describe(_parse(_stored_pem(settings, client, pipeline)), "generated", spec)


def regenerate(settings: Settings, client: redis.Redis, pipeline: str) -> Identity:
    """Replace the generated deploy key; workers pick the new one up at their next git call.

    Raises `ConfigError` when the key comes from `git.ssh_key_file`, which this cannot change.
    """
    spec = settings.pipeline(pipeline)
    if spec.git.ssh_key_file is not None:
        raise ConfigError(
            f"pipeline {pipeline!r} uses git.ssh_key_file {spec.git.ssh_key_file}; "
            "replace that file to change its key"
        )
    pem = _generate()
    client.set(redis_key(settings.key_prefix, pipeline), pem)
    identity = _describe(_parse(pem), "generated", spec)
    _record(client, settings, pipeline, f"deploy key regenerated ({identity.fingerprint})")
    return identity


def key_file(settings: Settings, client: redis.Redis, pipeline: str) -> Path | None:
    """The private key file git should use for `pipeline`, or None when it needs none.

    `git.ssh_key_file` when configured; else, for an ssh URL, the generated deploy key written
    (0600) to `<work_dir>/identity/<pipeline>`, rewritten whenever the stored key changed.
    """
    spec = settings.pipeline(pipeline)
    if spec.git.ssh_key_file is not None:
        return spec.git.ssh_key_file
    if not uses_ssh(spec.git.url):
        return None
    pem = _stored_pem(settings, client, pipeline).encode()
    path = Path(settings.work_dir).expanduser() / "identity" / pipeline
    try:
        if path.read_bytes() == pem:
            return path
    except FileNotFoundError:
        pass
    _write_private(path, pem)
    return path


def _stored_pem(settings: Settings, client: redis.Redis, pipeline: str) -> str:
    """The deploy key from Redis; the first process to find none generates and stores it."""
    key = redis_key(settings.key_prefix, pipeline)
    pem = cast(str | None, client.get(key))
    if pem is not None:
        return pem
    if client.set(key, _generate(), nx=True):
        fingerprint = _fingerprint(_parse(cast(str, client.get(key))))
        _record(client, settings, pipeline, f"deploy key generated ({fingerprint})")
    return cast(str, client.get(key))


def _record(client: redis.Redis, settings: Settings, pipeline: str, message: str) -> None:
    events.record(client, Keys(settings.key_prefix), pipeline, "identity", message)


def _generate() -> str:
    private = ed25519.Ed25519PrivateKey.generate()
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def _parse(pem: str) -> serialization.SSHPrivateKeyTypes:
    return serialization.load_ssh_private_key(pem.encode(), password=None)


def _load_key_file(path: Path) -> serialization.SSHPrivateKeyTypes:
    """The configured key file, in OpenSSH or PEM format; a one-line `ConfigError` otherwise."""
    where = f"git.ssh_key_file {path}"
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
    try:
        return serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: not an unencrypted OpenSSH or PEM private key") from None
    if not isinstance(private, _SSH_KEY_TYPES):
        raise ConfigError(f"{where}: ssh cannot use a {type(private).__name__}")
    return private


def _public_line(private: serialization.SSHPrivateKeyTypes) -> str:
    """`<type> <base64 blob>`, as in authorized_keys."""
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _fingerprint(private: serialization.SSHPrivateKeyTypes) -> str:
    blob = base64.b64decode(_public_line(private).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _describe(
    private: serialization.SSHPrivateKeyTypes, source: Source, spec: Pipeline
) -> Identity:
    comment = f" gitops-pipeline@{spec.name}" if source == "generated" else ""
    return Identity(
        public_key=_public_line(private) + comment,
        fingerprint=_fingerprint(private),
        source=source,
        in_use=uses_ssh(spec.git.url),
    )


def _write_private(path: Path, pem: bytes) -> None:
    """Write atomically, 0600 from the start, in a 0700 directory (ssh refuses looser modes)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp makes 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
