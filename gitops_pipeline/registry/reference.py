"""Image references (``[registry/]repository[:tag][@digest]``), parsed and made canonical.

Follows the grammar of distribution's ``reference`` package, so a reference that Docker and
Kubernetes accept parses here and one they reject is refused with a message saying why.
Canonical means the registry is always spelled out (``docker.io`` included) and single-name
Docker Hub images get their implicit ``library/``: ``nginx``, ``docker.io/nginx`` and
``index.docker.io/library/nginx:latest`` are one repository, so they share one cache entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gitops_pipeline.errors import PermanentError

DOCKER_HUB = "docker.io"
"""The canonical name of Docker Hub in references (what ``nginx`` expands to)."""

DOCKER_HUB_API = "registry-1.docker.io"
"""Where Docker Hub serves the Registry API; ``docker.io`` itself does not."""

DEFAULT_TAG = "latest"
MAX_TAG_LENGTH = 128
MAX_NAME_LENGTH = 255
"""Longest ``registry/repository`` distribution accepts."""

_HUB_ALIASES = frozenset({"index.docker.io"})

_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
# Spelled out rather than ``\w``: Python's ``\w`` matches non-ASCII letters, Go's does not.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")


class InvalidReference(PermanentError, ValueError):
    """An image reference, repository name, tag or digest that the grammar does not allow."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed, canonical image reference.

    ``tag`` is ``None`` only when a digest pins the image and no tag was written; a reference
    with neither means ``latest``.
    """

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``registry/repository``: one image repository, the key its tags are cached under."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The ``host[:port]`` that serves the Registry API for this reference."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if pinned (it wins over a tag), else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository at ``tag``, without a digest (what a tag bump writes)."""
        return ImageRef(self.registry, self.repository, check_tag(tag), None)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_image(ref: str) -> ImageRef:
    """Parse ``ref`` as Docker does; raise `InvalidReference` (a `ValueError`) saying what is wrong.

    The first path component names a registry only if it contains ``.`` or ``:`` or is
    ``localhost``; otherwise the image lives on Docker Hub (``gitopsbook/sample-app`` is
    ``docker.io/gitopsbook/sample-app``).
    """
    if not ref or ref != ref.strip():
        raise InvalidReference(f"invalid image reference {ref!r}: empty or surrounded by spaces")
    remainder, at, digest = ref.partition("@")
    if at:
        _check_digest(digest, ref)
    tag: str | None = None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        _check_tag(tag, ref)
    registry, repository = _split_registry(remainder, ref)
    _check_repository(repository, ref)
    if len(registry) + 1 + len(repository) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"invalid image reference {ref!r}: the name is longer than {MAX_NAME_LENGTH} characters"
        )
    if tag is None and not at:
        tag = DEFAULT_TAG
    return ImageRef(registry, repository, tag, digest if at else None)


def check_repository(repository: str) -> str:
    """Return ``repository`` if it is a valid repository path (no registry), else raise."""
    _check_repository(repository, repository)
    return repository


def check_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid tag, else raise `InvalidReference`."""
    _check_tag(tag, tag)
    return tag


def is_valid_tag(tag: str) -> bool:
    """Whether ``tag`` may appear in a reference (registries list tags that cannot, rarely)."""
    return len(tag) <= MAX_TAG_LENGTH and _TAG_RE.fullmatch(tag) is not None


def is_digest(reference: str) -> bool:
    """Whether ``reference`` is a content digest (``sha256:`` + 64 hex) rather than a tag."""
    return _DIGEST_RE.fullmatch(reference) is not None


def _split_registry(name: str, ref: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        registry, repository = DOCKER_HUB, name
    else:
        if _DOMAIN_RE.fullmatch(first) is None:
            raise InvalidReference(f"invalid registry host {first!r} in image reference {ref!r}")
        registry, repository = first.lower(), rest
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _check_repository(repository: str, ref: str) -> None:
    if _REPOSITORY_RE.fullmatch(repository) is None:
        hint = " (uppercase letters are not allowed)" if repository.lower() != repository else ""
        raise InvalidReference(
            f"invalid repository name {repository!r} in {ref!r}{hint}: path components are "
            "lowercase letters and digits, separated by '.', '_', '__' or '-', joined by '/'"
        )


def _check_tag(tag: str, ref: str) -> None:
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidReference(
            f"invalid tag in {ref!r}: {len(tag)} characters long, at most {MAX_TAG_LENGTH} allowed"
        )
    if _TAG_RE.fullmatch(tag) is None:
        raise InvalidReference(
            f"invalid tag {tag!r} in {ref!r}: a tag is ASCII letters, digits, '_', '.' and '-', "
            "and does not start with '.' or '-'"
        )


def _check_digest(digest: str, ref: str) -> None:
    if _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidReference(
            f"invalid digest {digest!r} in {ref!r}: expected 'sha256:' and 64 lowercase hex digits"
        )
