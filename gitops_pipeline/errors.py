"""One error hierarchy for the whole operator.

Whether a failure is worth retrying is part of its type, so tasks decide retry behaviour by
catching `TransientError` and nothing else (as kopf's PermanentError/TemporaryError do).
"""

from __future__ import annotations


class GitopsError(Exception):
    """Base of every error the operator raises on purpose."""


class PermanentError(GitopsError):
    """Retrying cannot help: bad input, bad config, a refused object."""


class TransientError(GitopsError):
    """A retry may succeed: a timeout, an unreachable service, a lost race."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class ConfigError(PermanentError):
    """The configuration is invalid; the message is one line naming the key and where it is."""


class GitError(TransientError):
    """A git operation failed (unreachable remote, timeout, missing branch)."""


class RemoteRefused(PermanentError):
    """The git remote answered but refused: no such branch or repository, or bad credentials."""


class ManifestError(PermanentError):
    """The manifests in Git cannot be loaded or generated."""


class SignatureError(PermanentError):
    """A required signature is missing, invalid, from an untrusted key, or cannot be made."""


class ClusterError(TransientError):
    """The Kubernetes API could not be reached or answered with a server error."""
