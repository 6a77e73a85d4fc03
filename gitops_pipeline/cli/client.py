"""What every gitopsctl command shares: the REST client, error exits, output and options.

Exit codes: 0 ok, 1 the operation failed (including every API or network error), 2 usage
(click's own code for bad options and arguments). Errors are one line on stderr, `Error: ...`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
import httpx
from rich.console import Console

TIMEOUT = 10.0
"""Seconds for one HTTP request (connect, read, write)."""
POLL_INTERVAL = 1.0
DETAIL_LIMIT = 300
"""Characters of a non-JSON error body quoted in an error line."""

T = TypeVar("T")
console = Console()
if not console.is_terminal:
    # Piped or captured output: tables at their natural width, never cut to 80 columns.
    console = Console(width=1000)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `Error: <message>` on stderr and exit `code` (1; 2 for a usage error)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class Api:
    """The REST API, with every failure turned into a one-line `fail`.

    The HTTP client is built on the first request, so a command that needs no API (completion,
    install) runs whatever `--url` and `--token` say; a bad one is a usage error (exit 2) then.
    """

    def __init__(self, url: str, token: str | None) -> None:
        self._url = url
        self._token = token
        self._http: httpx.Client | None = None

    @property
    def _client(self) -> httpx.Client:
        if self._http is None:
            token = self._token
            if token and not (token.isascii() and token.isprintable()):
                # It goes into an HTTP header, which httpx would refuse with a traceback.
                fail("--token (GITOPS_TOKEN) must be printable ASCII", code=2)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                self._http = httpx.Client(
                    base_url=self._url.rstrip("/"), headers=headers, timeout=TIMEOUT
                )
            except httpx.InvalidURL as exc:
                fail(f"--url (GITOPS_URL) {self._url!r} is not a valid URL: {exc}", code=2)
        return self._http

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """The decoded JSON body of a successful response (None when it has none)."""
        try:
            response = self._client.request(method, path, params=params, json=body)
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:  # IDNA: a bad host
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            fail(f"cannot reach the API at {self._url}: {reason}")
        if not response.is_success:
            fail(_explain(response, method, path))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            fail(f"the API answered {method} {path} with something that is not JSON")

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body=body)

    def poll(
        self,
        path: str,
        done: Callable[[Any], T | None],
        *,
        timeout: float,
        interval: float = POLL_INTERVAL,
    ) -> T | None:
        """GET `path` until `done(body)` returns something other than None, and return that;
        None once `timeout` seconds passed without."""
        deadline = time.monotonic() + timeout
        while True:
            result = done(self.get(path))
            if result is not None:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(interval, remaining))


def _detail(response: httpx.Response) -> str:
    """FastAPI's `detail` (a string, or a list of validation errors), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:DETAIL_LIMIT] if response.text.strip() else ""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg', '')}"
            for item in detail
            if isinstance(item, dict)
        )
    if detail is not None:
        return str(detail)
    return json.dumps(body)[:DETAIL_LIMIT]


def _explain(response: httpx.Response, method: str, path: str) -> str:
    status = response.status_code
    detail = _detail(response)
    if status == 401:
        return "the API refused the token (set --token or GITOPS_TOKEN)"
    if status == 403:
        return "the token is read-only (this needs an admin token)"
    if status == 404 and detail in ("", "Not Found"):
        return f"{method} {path}: not found (is this a gitops-pipeline API of this version?)"
    if status >= 500:
        return f"the API failed ({status} {response.reason_phrase}): {detail or 'no detail'}"
    return detail or f"{status} {response.reason_phrase}"


@contextmanager
def spinner(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner with `message` while the block runs; yields a function that changes it.

    Only on a terminal: piped or redirected output gets no control characters.
    """
    if not console.is_terminal:
        yield lambda _: None
        return
    with console.status(message) as status:
        yield lambda text: status.update(text)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def short(sha: str | None) -> str:
    """The 7-character form of a commit SHA, as git and fluxctl print them."""
    return (sha or "")[:7]


pipeline_option = click.option(
    "--pipeline",
    "-p",
    envvar="GITOPS_PIPELINE",
    required=True,
    help="pipeline name (env GITOPS_PIPELINE)",
)

output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["tab", "json"]),
    default="tab",
    show_default=True,
    help="output format",
)
