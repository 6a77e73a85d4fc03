"""What each webhook sender sends: how its deliveries are authenticated, which id a delivery
carries, and what a push says (the pushed repository URLs and branches, or image repositories).

Parsers raise on anything that is not a push of theirs; the router (`api/hooks.py`) turns that
into a 400. Nothing here touches Redis or Celery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers

from gitops_pipeline.registry.reference import DOCKER_HUB, parse_image

_NO_COMMIT = "0" * 40  # the `after` of a push that deleted the branch


class Malformed(ValueError):
    """The delivery is authentic but not what the source sends for a push."""


@dataclass(frozen=True)
class GitPush:
    """Every URL the payload gives for the pushed repository, and the branches pushed."""

    urls: tuple[str, ...]
    branches: tuple[str, ...]


@dataclass(frozen=True)
class ImagePush:
    """Canonical names (``registry/repository``, as the tag cache keys them) of pushed images."""

    repositories: tuple[str, ...]


@dataclass(frozen=True)
class Ignored:
    reason: str


Event = GitPush | ImagePush | Ignored
Verify = Callable[[Headers, bytes, bytes, str | None], bool]
"""(headers, body, secret, secret from the URL path) -> whether the delivery is authentic."""


@dataclass(frozen=True)
class Source:
    name: str
    secret: str
    """The `WebhookSettings` field holding the secret (the generic hooks share one)."""
    verify: Verify
    parse: Callable[[Headers, bytes], Event]
    delivery: Callable[[Headers, bytes], str | None]
    """The delivery id (the same on the sender's retries), or None where there is none."""
    path_secret: bool = False


# --- authentication ------------------------------------------------------------------------


def _same(presented: str | None, expected: str) -> bool:
    """Constant-time equality; compared as UTF-8 bytes, so no header value can raise."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


def _hmac_sha256(prefix: str, header: str) -> Verify:
    """`header` is `prefix` + the hex HMAC-SHA256 of the body, keyed with the secret."""

    def verify(headers: Headers, body: bytes, secret: bytes, path: str | None) -> bool:
        expected = prefix + hmac.new(secret, body, hashlib.sha256).hexdigest()
        presented = headers.get(header)
        return _same(presented.lower() if presented else None, expected)

    return verify


def _token(header: str) -> Verify:
    """`header` is the secret itself (GitLab's X-Gitlab-Token)."""

    def verify(headers: Headers, body: bytes, secret: bytes, path: str | None) -> bool:
        return _same(headers.get(header), secret.decode())

    return verify


def _authorization(headers: Headers, body: bytes, secret: bytes, path: str | None) -> bool:
    """`Authorization` is the secret, bare or as a bearer token (how registries are set up)."""
    presented = headers.get("authorization")
    if presented is not None:
        scheme, _, token = presented.strip().partition(" ")
        if scheme.lower() == "bearer" and token:
            presented = token
    return _same(presented, secret.decode())


def _in_path(headers: Headers, body: bytes, secret: bytes, path: str | None) -> bool:
    """The secret is the last URL segment, for senders that cannot sign or add headers."""
    return _same(path, secret.decode())


# --- delivery ids --------------------------------------------------------------------------


def body_hash(body: bytes) -> str:
    return "sha256-" + hashlib.sha256(body).hexdigest()


def _header_or_body(*names: str) -> Callable[[Headers, bytes], str | None]:
    """The first of these headers that is set, else the body's hash (a retry resends it)."""

    def delivery(headers: Headers, body: bytes) -> str:
        for name in names:
            value = (headers.get(name) or "").strip()
            if value:
                return value
        return body_hash(body)

    return delivery


def _required_header(name: str) -> Callable[[Headers, bytes], str | None]:
    """Our own senders must name each delivery: a hash would make a re-sent push a replay."""

    def delivery(headers: Headers, body: bytes) -> str:
        value = (headers.get(name) or "").strip()
        if not value:
            raise Malformed(f"the {name} header is required (unique per delivery, kept on retries)")
        return value

    return delivery


def _no_delivery_id(headers: Headers, body: bytes) -> None:
    return None


# --- payloads ------------------------------------------------------------------------------


def _object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:  # includes bodies that are not UTF-8
        raise Malformed(f"the body is not JSON ({exc}); send it as application/json") from None
    if not isinstance(payload, dict):
        raise Malformed("the body is not a JSON object")
    return payload


def _get(data: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data


def _text(data: Any, *path: str) -> str | None:
    value = _get(data, *path)
    return value if isinstance(value, str) and value.strip() else None


def _list(data: Any, *path: str) -> list[Any]:
    value = _get(data, *path)
    if not isinstance(value, list):
        raise Malformed(f"{'.'.join(path)} is not a list")
    return value


def _urls(payload: dict[str, Any], fields: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    urls = tuple(url for path in fields if (url := _text(payload, *path)) is not None)
    if not urls:
        raise Malformed("the payload names no repository URL")
    return urls


def _ref_push(payload: dict[str, Any], urls: tuple[str, ...]) -> Event:
    """A push described by `ref` and `after`, as GitHub, GitLab and Gitea send it."""
    ref = _text(payload, "ref")
    if ref is None:
        raise Malformed("the payload has no ref")
    if payload.get("deleted") is True or payload.get("after") == _NO_COMMIT:
        return Ignored(f"{ref} was deleted")
    if not ref.startswith("refs/heads/"):
        return Ignored(f"{ref} is not a branch")
    return GitPush(urls, (ref.removeprefix("refs/heads/"),))


def _ref_hook(
    event_header: str,
    push_event: str,
    url_fields: Sequence[tuple[str, ...]],
    *,
    pings: bool = False,
) -> Callable[[Headers, bytes], Event]:
    """A parser for a host that names the event in `event_header` and the pushed branch in the
    payload's `ref` (GitHub, Gitea, GitLab); `pings`: it also sends a `ping` event."""

    def parse(headers: Headers, body: bytes) -> Event:
        event = headers.get(event_header)
        if event != push_event:
            ping = pings and event == "ping"
            return Ignored("ping" if ping else f"event {event!r} is not a push")
        payload = _object(body)
        return _ref_push(payload, _urls(payload, url_fields))

    return parse


_GITHUB_URLS = [("repository", name) for name in ("clone_url", "ssh_url", "git_url", "html_url")]
_github = _ref_hook("x-github-event", "push", _GITHUB_URLS, pings=True)
_gitea = _ref_hook("x-gitea-event", "push", _GITHUB_URLS)
_gitlab = _ref_hook(
    "x-gitlab-event",
    "Push Hook",
    [
        *(("project", name) for name in ("git_http_url", "git_ssh_url", "web_url")),
        *(("repository", name) for name in ("git_http_url", "git_ssh_url", "homepage", "url")),
    ],
)


def _bitbucket(headers: Headers, body: bytes) -> Event:
    """Bitbucket Cloud: one push may move several branches (`push.changes[].new`)."""
    event = headers.get("x-event-key")
    if event != "repo:push":
        return Ignored(f"event {event!r} is not a push")
    payload = _object(body)
    urls = _urls(payload, [("repository", "links", "html", "href")])
    branches = tuple(
        dict.fromkeys(
            name
            for change in _list(payload, "push", "changes")
            if _get(change, "new", "type") == "branch"
            and (name := _text(change, "new", "name")) is not None
        )
    )
    if not branches:
        return Ignored("no branch was updated (tags or deletions only)")
    return GitPush(urls, branches)


def _generic_git(headers: Headers, body: bytes) -> Event:
    payload = _object(body)
    url, branch = _text(payload, "url"), _text(payload, "branch")
    if url is None or branch is None:
        raise Malformed('the body must be {"url": "<git remote>", "branch": "<branch>"}')
    return GitPush((url,), (branch,))


def _canonical(image: str) -> str:
    """The tag cache's name of an image repository (Docker Hub's name and `library/` added)."""
    return parse_image(image).name


def _pushed(repositories: Iterable[str], nothing: str) -> Event:
    unique = tuple(dict.fromkeys(repositories))
    return ImagePush(unique) if unique else Ignored(nothing)


def _distribution(headers: Headers, body: bytes) -> Event:
    """An envelope of registry events; only tag pushes matter (blob pushes have no tag)."""
    repositories = []
    for event in _list(_object(body), "events"):
        if _get(event, "action") != "push" or _text(event, "target", "tag") is None:
            continue
        host, name = _text(event, "request", "host"), _text(event, "target", "repository")
        if host is None or name is None:
            raise Malformed("a push event lacks target.repository or request.host")
        repositories.append(_canonical(f"{host}/{name}"))
    return _pushed(repositories, "no tag was pushed")


def _dockerhub(headers: Headers, body: bytes) -> Event:
    payload = _object(body)
    name = _text(payload, "repository", "repo_name")
    if name is None or _text(payload, "push_data", "tag") is None:
        raise Malformed("the payload lacks repository.repo_name or push_data.tag")
    return ImagePush((_canonical(f"{DOCKER_HUB}/{name}"),))


def _harbor(headers: Headers, body: bytes) -> Event:
    payload = _object(body)
    kind = payload.get("type")
    if kind not in ("PUSH_ARTIFACT", "pushImage"):
        return Ignored(f"event {kind!r} is not a push")
    repositories = []
    for resource in _list(payload, "event_data", "resources"):
        url = _text(resource, "resource_url")
        if url is None:
            raise Malformed("a resource lacks resource_url")
        repositories.append(_canonical(url))
    return _pushed(repositories, "no artifact was pushed")


def _quay(headers: Headers, body: bytes) -> Event:
    payload = _object(body)
    url = _text(payload, "docker_url")
    if url is None:
        raise Malformed("the payload lacks docker_url")
    if not payload.get("updated_tags"):  # a list, or a tag -> digest map in older Quay
        return Ignored("not a repository push (no updated_tags)")
    return ImagePush((_canonical(url),))


def _generic_image(headers: Headers, body: bytes) -> Event:
    payload = _object(body)
    image = _text(payload, "image")
    if image is None or _text(payload, "tag") is None:
        raise Malformed('the body must be {"image": "<registry>/<repository>", "tag": "<tag>"}')
    return ImagePush((_canonical(image),))


_GENERIC_SIGNATURE = _hmac_sha256("sha256=", "X-Signature-256")

SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            "github",
            "github",
            _hmac_sha256("sha256=", "X-Hub-Signature-256"),
            _github,
            _header_or_body("X-GitHub-Delivery"),
        ),
        Source(
            "gitlab",
            "gitlab",
            _token("X-Gitlab-Token"),
            _gitlab,
            _header_or_body("Idempotency-Key", "X-Gitlab-Event-UUID"),
        ),
        Source(
            "bitbucket",
            "bitbucket",
            _hmac_sha256("sha256=", "X-Hub-Signature"),
            _bitbucket,
            _header_or_body("X-Request-UUID"),
        ),
        Source(
            "gitea",
            "gitea",
            _hmac_sha256("", "X-Gitea-Signature"),
            _gitea,
            _header_or_body("X-Gitea-Delivery"),
        ),
        Source(
            "generic-git",
            "generic",
            _GENERIC_SIGNATURE,
            _generic_git,
            _required_header("X-Delivery-Id"),
        ),
        # Registries: their envelopes carry event ids or push times, so a body recurs only
        # when the sender retries it. Quay's carries neither: it is not de-duplicated, which
        # is harmless, as an image push only makes a repository due.
        Source("distribution", "distribution", _authorization, _distribution, _header_or_body()),
        Source("dockerhub", "dockerhub", _in_path, _dockerhub, _header_or_body(), path_secret=True),
        Source("harbor", "harbor", _authorization, _harbor, _header_or_body()),
        Source("quay", "quay", _in_path, _quay, _no_delivery_id, path_secret=True),
        Source(
            "generic-image",
            "generic",
            _GENERIC_SIGNATURE,
            _generic_image,
            _required_header("X-Delivery-Id"),
        ),
    )
}
