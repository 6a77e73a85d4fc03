"""Registry authentication: ``WWW-Authenticate`` challenges and cached bearer tokens.

Pure parsing and bookkeeping; the HTTP exchanges themselves live in `client`. A registry
answers 401 with a challenge saying how to authenticate: ``Basic`` (send credentials on every
request) or ``Bearer realm=...,service=...,scope=...`` (get a short-lived token from the realm,
per scope, as distribution's token authentication specifies).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_TOKEN_LIFETIME = 60.0
"""Seconds a token lives when the token server does not say (the spec's default)."""

EXPIRY_MARGIN = 0.1
"""Fraction of a token's lifetime given up, so a token never expires in flight."""


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: lowercase scheme, lowercase param names."""

    scheme: str
    params: dict[str, str]


@dataclass(frozen=True)
class TokenKey:
    """What a bearer token is good for: one scope at one service of one token server."""

    realm: str
    service: str
    scope: str


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges (RFC 7235).

    Quoted values may hold commas, ``=`` and backslash escapes (a scope such as
    ``"repository:a:pull,push"`` does); unquoted values end at a comma or a space. Text that
    fits no challenge is skipped rather than rejected, so one odd challenge does not hide a
    usable one next to it.
    """
    challenges: list[Challenge] = []
    pos, end = 0, len(header)
    while pos < end:
        while pos < end and header[pos] in " \t,":
            pos += 1
        start = pos
        while pos < end and header[pos] not in " \t,=":
            pos += 1
        word = header[start:pos]
        if not word:
            pos += 1  # a stray "=": skip it
            continue
        after = _skip_spaces(header, pos)
        if after < end and header[after] == "=" and challenges:
            value, pos = _read_value(header, _skip_spaces(header, after + 1))
            challenges[-1].params[word.lower()] = value
        else:
            challenges.append(Challenge(word.lower(), {}))
    return challenges


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _read_value(text: str, pos: int) -> tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        chars: list[str] = []
        pos += 1
        while pos < len(text) and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            chars.append(text[pos])
            pos += 1
        return "".join(chars), pos + 1
    start = pos
    while pos < len(text) and text[pos] not in " \t,":
        pos += 1
    return text[start:pos], pos


def parse_token_response(body: bytes) -> tuple[str, float]:
    """The token and its lifetime in seconds from a token server's JSON answer.

    Accepts ``token`` and the OAuth2 name ``access_token`` (the spec allows either); raises
    `ValueError` saying what is wrong with anything else.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"not JSON: {body[:120]!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    token = data.get("token") or data.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("no 'token' or 'access_token' string in the answer")
    lifetime = data.get("expires_in", DEFAULT_TOKEN_LIFETIME)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return token, float(lifetime)


class TokenCache:
    """Bearer tokens by `TokenKey`, each dropped when its lifetime (less a margin) is over."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[TokenKey, tuple[str, float]] = {}

    def get(self, key: TokenKey) -> str | None:
        entry = self._tokens.get(key)
        if entry is None:
            return None
        token, expires_at = entry
        if self._clock() >= expires_at:
            del self._tokens[key]
            return None
        return token

    def put(self, key: TokenKey, token: str, lifetime: float) -> None:
        self._tokens[key] = (token, self._clock() + lifetime * (1 - EXPIRY_MARGIN))

    def drop(self, key: TokenKey) -> None:
        self._tokens.pop(key, None)
