"""An HTTP front for a real registry that injects faults and can paginate tag lists.

Requests are forwarded unchanged to the upstream registry, except those a test has scripted a
fault for (a 429 with ``Retry-After``, a 500, a garbage body, a redirect): the registry
protocol stays the real registry's; only the failures a real one rarely shows on demand are
staged.

``paginate_tags`` exists because docker-registry 2.8 ignores ``n`` on ``/tags/list`` and sends
every tag in one answer; registries since distribution 3 (and Docker Hub, Quay, GHCR) split the
list and link the next page with ``Link: </v2/<name>/tags/list?last=<tag>&n=<n>>;
rel="next"``. The front does the same over the upstream's real tag list (sorted, as
distribution 3 sorts it).
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit

from gitops_pipeline.testbed.loopback_http import LoopbackHTTP

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)


@dataclass
class Fault:
    """An answer given instead of forwarding, to the next ``times`` matching requests."""

    status: int
    headers: dict[str, str]
    body: bytes
    path_contains: str
    times: int


@dataclass(eq=False)
class RegistryFront:
    """A loopback HTTP server in front of ``upstream`` (``host:port`` of a plain-http registry)."""

    upstream: str
    paginate_tags: bool = False
    seen: list[str] = field(default_factory=list)
    """``METHOD path?query`` of every request received, in order."""
    _faults: list[Fault] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _http: LoopbackHTTP | None = field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        if self._http is None:
            raise RuntimeError("registry front not started")
        return self._http.address

    def inject(
        self,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        path_contains: str = "",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path_contains`` so."""
        with self._lock:
            self._faults.append(Fault(status, dict(headers or {}), body, path_contains, times))

    def start(self) -> Self:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without this, Nagle's algorithm and the
            # client's delayed ACK add about 40 ms to every answer.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                self._handle()

            def do_HEAD(self) -> None:
                self._handle()

            def _handle(self) -> None:
                front.seen.append(f"{self.command} {self.path}")
                request_headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                status, headers, body = front._answer(self.command, self.path, request_headers)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = LoopbackHTTP(Handler, "registry-front")
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path_contains in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        fault = self._take_fault(path)
        if fault is not None:
            return fault.status, list(fault.headers.items()), fault.body
        split = urlsplit(path)
        if self.paginate_tags and method == "GET" and split.path.endswith("/tags/list"):
            return self._tag_page(split.path, parse_qs(split.query), headers)
        return self._forward(method, path, headers)

    def _forward(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            answer_headers = response.getheaders()
            return response.status, answer_headers, b"" if method == "HEAD" else body
        finally:
            connection.close()

    def _tag_page(
        self, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        status, upstream_headers, body = self._forward("GET", path, headers)
        if status != 200:
            return status, upstream_headers, body
        listing = json.loads(body)
        tags = sorted(listing.get("tags") or [])
        last = query.get("last", [""])[0]
        if last:
            tags = [tag for tag in tags if tag > last]
        size = int(query.get("n", [str(len(tags) or 1)])[0])
        page, rest = tags[:size], tags[size:]
        answer: list[tuple[str, str]] = [("Content-Type", "application/json")]
        if rest:
            link = f"{path}?last={quote(page[-1])}&n={size}"
            answer.append(("Link", f'<{link}>; rel="next"'))
        return 200, answer, json.dumps({"name": listing.get("name"), "tags": page}).encode()
