"""Pure parsing of what registries send: challenges, token answers, Retry-After, Link, created."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from gitops_pipeline.registry.auth import (
    Challenge,
    TokenCache,
    TokenKey,
    parse_challenges,
    parse_token_response,
)
from gitops_pipeline.registry.client import (
    DEFAULT_RETRY_AFTER,
    MAX_RETRY_AFTER,
    next_link,
    parse_created,
    retry_after_seconds,
)


def test_bearer_challenge_with_quoted_commas() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/app:pull,push",error="insufficient_scope"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example.com/token",
                "service": "registry.example.com",
                "scope": "repository:team/app:pull,push",
                "error": "insufficient_scope",
            },
        )
    ]


def test_several_challenges_spaces_escapes_and_unquoted_values() -> None:
    header = (
        'Basic realm="say \\"hi\\", friend" , BEARER Realm=https://a.example/t , '
        'service = svc ,scope="a b"'
    )
    assert parse_challenges(header) == [
        Challenge("basic", {"realm": 'say "hi", friend'}),
        Challenge("bearer", {"realm": "https://a.example/t", "service": "svc", "scope": "a b"}),
    ]


@pytest.mark.parametrize("header", ["", ",,", "=", 'realm="x"', "Negotiate abc=="])
def test_odd_challenges_do_not_crash(header: str) -> None:
    parse_challenges(header)


def test_token_answers() -> None:
    assert parse_token_response(b'{"token": "t1", "expires_in": 300}') == ("t1", 300.0)
    assert parse_token_response(b'{"access_token": "t2"}') == ("t2", 60.0)
    assert parse_token_response(b'{"token": "t3", "expires_in": "soon"}') == ("t3", 60.0)
    for garbage, message in [
        (b"<html>", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"token": ""}', "no 'token'"),
        (b'{"token": 5}', "no 'token'"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_token_response(garbage)


def test_token_cache_expires_tokens_early() -> None:
    now = [1000.0]
    cache = TokenCache(clock=lambda: now[0])
    key = TokenKey("https://auth.example/token", "svc", "repository:a:pull")
    cache.put(key, "tok", 60)
    assert cache.get(key) == "tok"
    assert cache.get(TokenKey(key.realm, key.service, "repository:b:pull")) is None
    now[0] += 53
    assert cache.get(key) == "tok"
    now[0] += 2  # still within the lifetime, but inside the safety margin
    assert cache.get(key) is None
    cache.put(key, "tok2", 60)
    cache.drop(key)
    assert cache.get(key) is None


def test_retry_after() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds(None) == DEFAULT_RETRY_AFTER
    assert retry_after_seconds("soon") == DEFAULT_RETRY_AFTER
    assert retry_after_seconds("nan") == DEFAULT_RETRY_AFTER
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("99999999") == MAX_RETRY_AFTER
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 115 <= retry_after_seconds(later) <= 120
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds(past) == 0.0


def test_next_link() -> None:
    assert next_link('</v2/app/tags/list?last=b&n=2>; rel="next"') == "/v2/app/tags/list?last=b&n=2"
    assert (
        next_link('<https://r.example/first>; rel="first", <https://r.example/p2>; rel=next')
        == "https://r.example/p2"
    )
    assert next_link('<https://r.example/p3>; title="a;b"; rel="prev next"') == (
        "https://r.example/p3"
    )
    assert next_link('</v2/app/tags/list?last=b>; rel="prev"') is None
    assert next_link("") is None


def test_parse_created() -> None:
    assert parse_created("2024-03-01T12:30:45.123456789Z") == datetime(
        2024, 3, 1, 12, 30, 45, 123456, tzinfo=UTC
    )
    assert parse_created("2024-03-01T12:30:45Z") == datetime(2024, 3, 1, 12, 30, 45, tzinfo=UTC)
    assert parse_created("2024-03-01T14:30:45.5+02:00") == datetime(
        2024, 3, 1, 12, 30, 45, 500000, tzinfo=UTC
    )
    assert parse_created("2024-03-01T12:30:45") == datetime(2024, 3, 1, 12, 30, 45, tzinfo=UTC)
    for bad in (None, "", 17, "yesterday", "2024-13-01T00:00:00Z", "2024-03-01"):
        assert parse_created(bad) is None
