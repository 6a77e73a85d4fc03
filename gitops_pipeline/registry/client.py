"""A synchronous Registry HTTP API v2 client: tags, manifest digests, image configs.

Reads only what image-update automation needs: the tags of a repository, the digest a tag
points to (and, through a manifest list or OCI index, the image for one platform), and that
image's creation time and labels. Authentication (Basic or bearer tokens), pagination and
redirects are handled here; every failure becomes a `RegistryError` (transient: retry) or a
`RegistryRefused` (permanent until something changes), never a stray exception, and every
answer is size-capped and shape-checked before it is believed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from gitops_pipeline.errors import PermanentError, TransientError
from gitops_pipeline.registry.auth import (
    TokenCache,
    TokenKey,
    parse_challenges,
    parse_token_response,
)
from gitops_pipeline.registry.reference import (
    InvalidReference,
    check_repository,
    check_tag,
    is_digest,
    is_valid_tag,
)

log = logging.getLogger(__name__)

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

IMAGE_MANIFESTS = frozenset({MANIFEST_V2, OCI_MANIFEST})
MANIFEST_INDEXES = frozenset({MANIFEST_LIST_V2, OCI_INDEX})
_KNOWN_MANIFESTS = IMAGE_MANIFESTS | MANIFEST_INDEXES | {MANIFEST_V1, MANIFEST_V1_SIGNED}
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, MANIFEST_LIST_V2, OCI_MANIFEST, MANIFEST_V2])

MAX_TAGS = 100_000
"""More tags than this in one repository is refused: no policy needs them, memory would."""

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest answer read (a 100 000-tag list is a few MiB; distribution caps manifests at 4)."""

MAX_REDIRECTS = 5
DEFAULT_RETRY_AFTER = 10.0
"""Seconds to wait after a 429 that carries no usable ``Retry-After``."""
MAX_RETRY_AFTER = 3600.0
"""A ``Retry-After`` beyond this is capped: a typo on the registry should not park a scan."""

USER_AGENT = "gitops-pipeline"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_VARIANTS = {"arm64": "v8", "arm": "v7"}
"""The variant an entry without one means, as containerd's platform matcher assumes."""


class RegistryError(TransientError):
    """A registry was unreachable, timed out, failed (5xx) or answered garbage: retry later."""


class RateLimited(RegistryError):
    """The registry (or its token server) answered 429; ``retry_after`` seconds is its ask."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, delay=retry_after)
        self.retry_after = retry_after


class RegistryRefused(PermanentError):
    """The registry answered and said no: authentication missing or rejected, no access, no such
    repository, tag or blob. Retrying will not help until credentials or references change."""


class TooManyTags(PermanentError):
    """A repository lists more tags than the client is willing to hold."""


@dataclass(frozen=True)
class Resolved:
    """What a tag points to.

    ``digest`` is the tag's own digest (of the manifest list, for a multi-platform image): what
    to pin and compare. ``config_digest`` is the config blob of the image for the client's
    platform, ``None`` if there is none (no such platform in the list, or a schema-1 manifest).
    """

    digest: str
    config_digest: str | None
    media_type: str


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config that image policies read."""

    created: datetime | None
    labels: dict[str, str]


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: httpx.Headers
    url: httpx.URL
    body: bytes

    @property
    def origin(self) -> str:
        return self.url.netloc.decode("ascii", "replace")


@dataclass(frozen=True)
class _Bearer:
    """This registry authenticates with tokens from ``realm`` for ``service``."""

    realm: str
    service: str


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle for every client cost
    about half of a scan's CPU time (bench/scan_bench.py, profiled)."""
    return ssl.create_default_context()


class RegistryClient:
    """A client for one registry host, keeping its connections and tokens between calls.

    ``host`` is ``host[:port]`` as in image references (`ImageRef.api_host`); ``insecure``
    means plain http (for registries on loopback or a trusted network), otherwise https with
    verified certificates. ``credentials`` (user, password) are sent only when the registry
    asks: as Basic auth to the registry, or to its token server. ``before_request(host)`` runs
    before every HTTP request, with the host the request goes to (the registry, its token
    server, or a redirect target), so callers can plug in a shared rate limiter;
    ``after_request(host, status)`` runs after each, with the HTTP status code as text or
    ``"error"`` when no complete answer came, so callers can count them; ``requests`` counts
    them too. One client is meant for one thread at a time.
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: tuple[str, str] | None = None,
        timeout: float = 10.0,
        platform: str = "linux/amd64",
        before_request: Callable[[str], None] | None = None,
        after_request: Callable[[str, str], None] | None = None,
    ) -> None:
        if not host or any(c in host for c in "/@?# ") or host.startswith(":"):
            raise ValueError(f"registry host must be host[:port], got {host!r}")
        self.host = host
        self.insecure = insecure
        self.platform = platform
        self.requests = 0
        self._platform = _parse_platform(platform)
        self._credentials = credentials
        self._timeout = timeout
        self._before_request = before_request
        self._after_request = after_request
        self._base = httpx.URL(f"{'http' if insecure else 'https'}://{host}")
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            verify=_tls_context(),
        )
        self._tokens = TokenCache()
        self._scheme: _Bearer | Literal["basic"] | None = None
        """How the registry wants to be authenticated, once it has said so: a `_Bearer`,
        ``"basic"``, or ``None`` (not asked yet, or anonymous)."""

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- the API ------------------------------------------------------------------------------

    def list_tags(
        self, repository: str, page_size: int = 1000, *, max_tags: int = MAX_TAGS
    ) -> list[str]:
        """All tags of ``repository``, in the registry's order, following ``Link`` pagination.

        Tags that are not valid tag names are skipped (and logged with a count): a registry
        listing one odd tag should not stop updates to the valid ones, and no reference could
        name the odd one anyway. Raises `TooManyTags` past ``max_tags``.
        """
        check_repository(repository)
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        what = f"listing tags of {self.host}/{repository}"
        url: httpx.URL | None = self._url(f"/v2/{repository}/tags/list").copy_with(
            params={"n": page_size}
        )
        tags: dict[str, None] = {}
        invalid: list[object] = []
        visited: set[str] = set()
        while url is not None:
            visited.add(str(url))
            reply = self._call("GET", url, repository, what)
            page = _tag_page(reply, what)
            for tag in page:
                if isinstance(tag, str) and is_valid_tag(tag):
                    tags[tag] = None
                else:
                    invalid.append(tag)
            if len(tags) > max_tags:
                raise TooManyTags(
                    f"repository {self.host}/{repository} lists more than {max_tags} tags"
                )
            url = self._next_page(reply, what, visited, bool(page))
        if invalid:
            log.warning(
                "%s: skipped %d invalid tag name(s), e.g. %r", what, len(invalid), invalid[0]
            )
        return list(tags)

    def resolve(self, repository: str, reference: str) -> Resolved:
        """The digest ``reference`` (a tag or digest) points to and its platform image's config.

        For a manifest list or OCI index the image for the client's platform is fetched too
        (one more request); the returned ``digest`` is still the list's, since that is what
        the tag names and what a pinned reference should carry.
        """
        check_repository(repository)
        _check_reference(reference)
        what = f"resolving {self.host}/{repository}{_joiner(reference)}{reference}"
        reply = self._call(
            "GET", self._manifest_url(repository, reference), repository, what, ACCEPT_MANIFESTS
        )
        digest = _content_digest(reply, reference, what)
        media_type, manifest = _manifest(reply, what)
        if media_type in IMAGE_MANIFESTS:
            return Resolved(digest, _config_digest(manifest, what), media_type)
        if media_type not in MANIFEST_INDEXES:
            return Resolved(digest, None, media_type)
        child = _select_platform(manifest, self._platform, what)
        if child is None:
            log.info("%s: no %s image in the manifest list", what, self.platform)
            return Resolved(digest, None, media_type)
        child_what = f"{what} ({self.platform} image {child})"
        child_reply = self._call(
            "GET", self._manifest_url(repository, child), repository, child_what, ACCEPT_MANIFESTS
        )
        _content_digest(child_reply, child, child_what)
        child_type, child_manifest = _manifest(child_reply, child_what)
        if child_type not in IMAGE_MANIFESTS:
            return Resolved(digest, None, media_type)
        return Resolved(digest, _config_digest(child_manifest, child_what), media_type)

    def digest(self, repository: str, tag: str) -> str:
        """The digest ``tag`` points to, from one HEAD request: the cheap "has it moved?" check.

        Falls back to GET (hashing the manifest) for registries that omit
        ``Docker-Content-Digest`` on HEAD.
        """
        check_repository(repository)
        _check_reference(tag)
        what = f"checking the digest of {self.host}/{repository}{_joiner(tag)}{tag}"
        url = self._manifest_url(repository, tag)
        reply = self._call("HEAD", url, repository, what, ACCEPT_MANIFESTS)
        header = str(reply.headers.get("Docker-Content-Digest", ""))
        if is_digest(header):
            return header
        reply = self._call("GET", url, repository, what, ACCEPT_MANIFESTS)
        return _content_digest(reply, tag, what)

    def image_config(self, repository: str, config_digest: str) -> ImageConfig:
        """Creation time and labels from the config blob ``config_digest``.

        The blob is checked against its digest. A missing or unparseable ``created`` gives
        ``None`` (some builders omit it); a wrongly shaped config is garbage (`RegistryError`).
        """
        check_repository(repository)
        if not is_digest(config_digest):
            raise InvalidReference(f"invalid config digest {config_digest!r}")
        what = f"fetching image config {config_digest} of {self.host}/{repository}"
        reply = self._call(
            "GET", self._url(f"/v2/{repository}/blobs/{config_digest}"), repository, what
        )
        _verify_digest(reply, config_digest, what)
        data = _json_object(reply, what)
        config = data.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise _garbage(reply, what, "'config' is not an object")
        labels = config.get("Labels")
        if labels is None:
            labels = {}
        if not isinstance(labels, dict):
            raise _garbage(reply, what, "'config.Labels' is not an object")
        return ImageConfig(
            created=parse_created(data.get("created")),
            labels={k: v for k, v in labels.items() if isinstance(v, str)},
        )

    # --- requests and authentication ----------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        return self._base.join(path)

    def _manifest_url(self, repository: str, reference: str) -> httpx.URL:
        return self._url(f"/v2/{repository}/manifests/{reference}")

    def _call(
        self,
        method: str,
        url: httpx.URL,
        repository: str,
        what: str,
        accept: str | None = None,
    ) -> _Reply:
        """One registry request, authenticating as the registry asks; returns only a 2xx reply."""
        scope = f"repository:{repository}:pull"
        headers = {"Accept": accept} if accept else {}
        authorization = self._authorization(scope, what)
        if authorization:
            headers["Authorization"] = authorization
        reply = self._fetch(method, url, headers, what)
        if reply.status == 401:
            headers["Authorization"] = self._answer_challenge(reply, scope, what, authorization)
            reply = self._fetch(method, url, headers, what)
            if reply.status == 401:
                raise RegistryRefused(
                    f"{what}: {self.host} rejected {self._identity()}{_error_detail(reply)}"
                )
        _check_status(reply, what)
        return reply

    def _authorization(self, scope: str, what: str) -> str | None:
        """The Authorization header to send before being asked, once the registry has said how."""
        if self._scheme == "basic":
            return self._basic()
        if isinstance(self._scheme, _Bearer):
            key = TokenKey(self._scheme.realm, self._scheme.service, scope)
            return f"Bearer {self._tokens.get(key) or self._fetch_token(key, scope, what)}"
        return None

    def _answer_challenge(self, reply: _Reply, scope: str, what: str, sent: str | None) -> str:
        header = ", ".join(reply.headers.get_list("WWW-Authenticate"))
        challenges = {c.scheme: c for c in parse_challenges(header)}
        bearer = challenges.get("bearer")
        if bearer is not None and bearer.params.get("realm"):
            self._scheme = _Bearer(bearer.params["realm"], bearer.params.get("service", ""))
            key = TokenKey(
                self._scheme.realm, self._scheme.service, bearer.params.get("scope", scope)
            )
            self._tokens.drop(key)
            return f"Bearer {self._fetch_token(key, scope, what)}"
        if "basic" in challenges:
            if self._credentials is None:
                raise RegistryRefused(
                    f"{what}: authentication required for {self.host} (no credentials configured)"
                )
            if sent is not None and sent.startswith("Basic "):
                raise RegistryRefused(f"{what}: {self.host} rejected {self._identity()}")
            self._scheme = "basic"
            return self._basic()
        raise RegistryRefused(
            f"{what}: {self.host} answered 401 without a challenge this client can answer "
            f"(WWW-Authenticate: {header[:200]!r})"
        )

    def _fetch_token(self, key: TokenKey, scope: str, what: str) -> str:
        """A fresh token for ``key`` from its realm, cached for ``key`` and for ``scope`` too.

        Caching under the scope this client would ask for itself means the next request for the
        repository sends the token straight away, without first collecting another 401.
        """
        what = f"{what}: getting a token from {key.realm}"
        try:
            url = httpx.URL(key.realm)
        except httpx.InvalidURL:
            raise RegistryRefused(f"{what}: the realm is not a URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise RegistryRefused(f"{what}: the realm is not an http(s) URL")
        params: list[tuple[str, str | int | float | bool | None]] = (
            [("service", key.service)] if key.service else []
        )
        params += [("scope", part) for part in key.scope.split()]
        url = url.copy_merge_params(params)
        headers = {}
        if self._credentials is not None:
            if url.scheme != "https" and not self.insecure:
                raise RegistryRefused(
                    f"{what}: refusing to send credentials to a token server over plain http"
                )
            headers["Authorization"] = self._basic()
        reply = self._fetch("GET", url, headers, what)
        if reply.status in (401, 403):
            raise RegistryRefused(
                f"{what}: the token server refused {self._identity()} for scope "
                f"{key.scope!r} (HTTP {reply.status}){_error_detail(reply)}"
            )
        _check_status(reply, what)
        try:
            token, lifetime = parse_token_response(reply.body)
        except ValueError as exc:
            raise _garbage(reply, what, str(exc)) from None
        self._tokens.put(key, token, lifetime)
        self._tokens.put(TokenKey(key.realm, key.service, scope), token, lifetime)
        return token

    def _identity(self) -> str:
        if self._credentials is None:
            return "anonymous access"
        return f"the credentials of user {self._credentials[0]!r}"

    def _basic(self) -> str:
        if self._credentials is None:
            raise RegistryRefused(f"authentication required for {self.host}")
        user, password = self._credentials
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")

    def _fetch(self, method: str, url: httpx.URL, headers: dict[str, str], what: str) -> _Reply:
        """Send, following redirects; Authorization never leaves the origin it was meant for."""
        origin = (url.scheme, url.netloc)
        for _ in range(MAX_REDIRECTS + 1):
            reply = self._send(method, url, headers, what)
            location = reply.headers.get("Location")
            if reply.status not in _REDIRECTS or not location:
                return reply
            try:
                url = reply.url.join(location)
            except httpx.InvalidURL:
                raise _garbage(reply, what, f"bad redirect location {location[:200]!r}") from None
            if (url.scheme, url.netloc) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _send(self, method: str, url: httpx.URL, headers: dict[str, str], what: str) -> _Reply:
        netloc = url.netloc.decode("ascii", "replace")
        if self._before_request is not None:
            self._before_request(netloc)
        self.requests += 1
        status = "error"
        try:
            with self._http.stream(method, url, headers=headers) as response:
                body = b"" if method == "HEAD" else _read_capped(response, what)
                status = str(response.status_code)
                return _Reply(response.status_code, response.headers, response.url, body)
        except httpx.TimeoutException:
            raise RegistryError(
                f"{what}: {netloc} did not answer within {self._timeout:g}s"
            ) from None
        except httpx.RequestError as exc:
            raise RegistryError(
                f"{what}: cannot reach {netloc}: {exc or type(exc).__name__}"
            ) from None
        finally:
            if self._after_request is not None:
                self._after_request(netloc, status)

    def _next_page(
        self, reply: _Reply, what: str, visited: set[str], had_tags: bool
    ) -> httpx.URL | None:
        target = next_link(", ".join(reply.headers.get_list("Link")))
        if target is None:
            return None
        try:
            url = reply.url.join(target)
        except httpx.InvalidURL:
            raise _garbage(reply, what, f"bad pagination link {target[:200]!r}") from None
        if (url.scheme, url.netloc) != (self._base.scheme, self._base.netloc):
            raise _garbage(reply, what, f"pagination link leads to another host: {url}")
        if str(url) in visited or not had_tags:
            raise _garbage(reply, what, f"pagination does not advance (next page {url})")
        return url


# --- parsing answers --------------------------------------------------------------------------


def next_link(header: str) -> str | None:
    """The target of the ``rel="next"`` link in an RFC 5988 ``Link`` header, if any."""
    for match in re.finditer(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)", header):
        target, params = match.groups()
        for param in params.split(";"):
            name, _, value = param.partition("=")
            rels = value.strip().strip('"').lower().split()
            if name.strip().lower() == "rel" and "next" in rels:
                return target
    return None


def retry_after_seconds(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` value (delay seconds or an HTTP date).

    A missing or unreadable value gives `DEFAULT_RETRY_AFTER`; the result is capped at
    `MAX_RETRY_AFTER` and never negative.
    """
    if not value or not value.strip():
        return DEFAULT_RETRY_AFTER
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def parse_created(value: object) -> datetime | None:
    """An image's ``created`` (RFC 3339, nanoseconds allowed) as an aware datetime, else None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|z|[+-]\d\d:\d\d)?", text)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    fraction = (fraction or "")[:7]  # a dot and at most microseconds
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        created = datetime.fromisoformat(f"{base}{fraction}{zone}")
    except ValueError:
        return None
    return created.astimezone(UTC)


def _parse_platform(spec: str) -> tuple[str, str, str | None]:
    parts = spec.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must be os/arch[/variant], got {spec!r}")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _check_reference(reference: str) -> None:
    if not is_digest(reference):
        check_tag(reference)


def _joiner(reference: str) -> str:
    return "@" if is_digest(reference) else ":"


def _read_capped(response: httpx.Response, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RegistryError(
                f"{what}: garbage response from {response.url.netloc.decode('ascii', 'replace')}: "
                f"more than {MAX_BODY_BYTES} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _check_status(reply: _Reply, what: str) -> None:
    status = reply.status
    if 200 <= status < 300:
        return
    detail = _error_detail(reply)
    if status == 429:
        delay = retry_after_seconds(reply.headers.get("Retry-After"))
        raise RateLimited(f"{what}: rate limited by {reply.origin}, retry in {delay:g}s", delay)
    if status == 408 or status >= 500:
        raise RegistryError(f"{what}: {reply.origin} failed with HTTP {status}{detail}")
    if status in (401, 403):
        raise RegistryRefused(f"{what}: access denied by {reply.origin} (HTTP {status}){detail}")
    if status == 404:
        raise RegistryRefused(f"{what}: not found on {reply.origin} (HTTP 404){detail}")
    raise RegistryRefused(f"{what}: {reply.origin} refused the request (HTTP {status}){detail}")


def _error_detail(reply: _Reply) -> str:
    """The registry's own words about an error (its ``errors`` JSON), shortened, or nothing."""
    try:
        data = json.loads(reply.body)
    except (ValueError, RecursionError):
        return ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return ""
    words = [
        f"{e.get('code', '?')}: {e.get('message', '')}".strip(": ")
        for e in errors[:2]
        if isinstance(e, dict)
    ]
    return f": {'; '.join(words)[:300]}" if words else ""


def _garbage(reply: _Reply, what: str, problem: str) -> RegistryError:
    return RegistryError(f"{what}: garbage response from {reply.origin}: {problem}")


def _json_object(reply: _Reply, what: str) -> dict[str, Any]:
    try:
        data = json.loads(reply.body)
    except (ValueError, RecursionError):
        content_type = reply.headers.get("Content-Type", "no content type")
        raise _garbage(reply, what, f"not JSON ({content_type}: {reply.body[:80]!r})") from None
    if not isinstance(data, dict):
        raise _garbage(reply, what, f"expected a JSON object, got {type(data).__name__}")
    return data


def _tag_page(reply: _Reply, what: str) -> list[object]:
    data = _json_object(reply, what)
    if "tags" not in data:
        raise _garbage(reply, what, "no 'tags' in the answer")
    tags = data["tags"]
    if tags is None:
        return []
    if not isinstance(tags, list):
        raise _garbage(reply, what, f"'tags' is {type(tags).__name__}, not a list")
    return tags


def _manifest(reply: _Reply, what: str) -> tuple[str, dict[str, Any]]:
    """The manifest's media type (from its body, else the header, else its shape) and content."""
    data = _json_object(reply, what)
    declared = data.get("mediaType")
    header = reply.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if isinstance(declared, str) and declared in _KNOWN_MANIFESTS:
        return declared, data
    if header in _KNOWN_MANIFESTS:
        return header, data
    if isinstance(data.get("manifests"), list):
        return OCI_INDEX, data
    if isinstance(data.get("config"), dict):
        return OCI_MANIFEST, data
    if data.get("schemaVersion") == 1:
        return MANIFEST_V1, data
    raise _garbage(reply, what, f"not a manifest (content type {header or 'missing'!r})")


def _content_digest(reply: _Reply, reference: str, what: str) -> str:
    """The digest of the manifest in ``reply``: the one asked for (checked), else the header's."""
    if is_digest(reference):
        _verify_digest(reply, reference, what)
        return reference
    header = str(reply.headers.get("Docker-Content-Digest", ""))
    if is_digest(header):
        return header
    return "sha256:" + hashlib.sha256(reply.body).hexdigest()


def _verify_digest(reply: _Reply, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    actual = hashlib.new(algorithm, reply.body).hexdigest()
    if actual != expected:
        raise _garbage(
            reply, what, f"content does not match its digest (it is {algorithm}:{actual})"
        )


def _config_digest(manifest: dict[str, Any], what: str) -> str:
    config = manifest.get("config")
    digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(digest, str) or not is_digest(digest):
        raise RegistryError(f"{what}: garbage response: the image manifest has no config digest")
    return digest


def _platform_matches(platform: object, wanted: tuple[str, str, str | None]) -> bool:
    if not isinstance(platform, dict):
        return False
    os_name, architecture, variant = wanted
    if platform.get("os") != os_name or platform.get("architecture") != architecture:
        return False
    default = _DEFAULT_VARIANTS.get(architecture)
    return (platform.get("variant") or default) == (variant or default)


def _select_platform(
    manifest: dict[str, Any], wanted: tuple[str, str, str | None], what: str
) -> str | None:
    entries = manifest.get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"{what}: garbage response: the manifest list has no 'manifests' list")
    for entry in entries:
        if not isinstance(entry, dict):
            raise RegistryError(f"{what}: garbage response: a manifest list entry is not an object")
        digest = entry.get("digest")
        if _platform_matches(entry.get("platform"), wanted) and isinstance(digest, str):
            if not is_digest(digest):
                raise RegistryError(f"{what}: garbage response: bad digest {digest[:80]!r}")
            return digest
    return None
