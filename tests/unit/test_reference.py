"""Image references: Docker's grammar, canonical names, clear refusals."""

from __future__ import annotations

import pytest

from gitops_pipeline.errors import PermanentError
from gitops_pipeline.registry.reference import (
    ImageRef,
    InvalidReference,
    check_repository,
    is_digest,
    is_valid_tag,
    parse_image,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("ref", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("library/nginx", "docker.io", "library/nginx", "latest", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("docker.io/library/nginx:1.25-alpine", "docker.io", "library/nginx", "1.25-alpine", None),
        ("index.docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("gitopsbook/sample-app:v0.1", "docker.io", "gitopsbook/sample-app", "v0.1", None),
        ("quay.io/org/app:v1", "quay.io", "org/app", "v1", None),
        ("ghcr.io/org/team/app:1.0.0_rc.1", "ghcr.io", "org/team/app", "1.0.0_rc.1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app", "localhost:5000", "app", "latest", None),
        ("registry.example.com:443/a/b", "registry.example.com:443", "a/b", "latest", None),
        (
            f"127.0.0.1:5000/team/app:v0.1@{DIGEST}",
            "127.0.0.1:5000",
            "team/app",
            "v0.1",
            DIGEST,
        ),
        (f"nginx@{DIGEST}", "docker.io", "library/nginx", None, DIGEST),
        ("Registry.Example.COM/app", "registry.example.com", "app", "latest", None),
        ("my-registry/app", "docker.io", "my-registry/app", "latest", None),
        ("a__b/c.d/e-f--g:TAG_1", "docker.io", "a__b/c.d/e-f--g", "TAG_1", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
    ],
)
def test_parses(
    ref: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    image = parse_image(ref)
    assert image == ImageRef(registry, repository, tag, digest)


def test_canonical_forms_and_names() -> None:
    assert str(parse_image("nginx")) == "docker.io/library/nginx:latest"
    assert str(parse_image(f"nginx@{DIGEST}")) == f"docker.io/library/nginx@{DIGEST}"
    pinned = parse_image(f"127.0.0.1:5000/team/app:v0.1@{DIGEST}")
    assert str(pinned) == f"127.0.0.1:5000/team/app:v0.1@{DIGEST}"
    assert parse_image(str(pinned)) == pinned
    # One repository, one cache key, however it is spelled.
    names = {parse_image(r).name for r in ("nginx", "docker.io/nginx:1", "library/nginx@" + DIGEST)}
    assert names == {"docker.io/library/nginx"}
    assert parse_image("quay.io/org/app:v1").name == "quay.io/org/app"


def test_api_host_and_reference() -> None:
    assert parse_image("nginx").api_host == "registry-1.docker.io"
    assert parse_image("localhost:5000/app").api_host == "localhost:5000"
    assert parse_image("quay.io/org/app").api_host == "quay.io"
    assert parse_image("app:v2").reference == "v2"
    assert parse_image(f"app:v2@{DIGEST}").reference == DIGEST


def test_with_tag_drops_the_digest() -> None:
    image = parse_image(f"quay.io/org/app:v1@{DIGEST}").with_tag("v2")
    assert str(image) == "quay.io/org/app:v2"
    with pytest.raises(InvalidReference):
        image.with_tag("-bad")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "empty"),
        (" nginx", "spaces"),
        ("Nginx", "uppercase letters are not allowed"),
        ("quay.io/Org/app", "uppercase letters are not allowed"),
        ("nginx:v1!", "invalid tag 'v1!'"),
        ("nginx:-v1", "does not start with '.' or '-'"),
        ("nginx:.v1", "invalid tag"),
        ("nginx:", "invalid tag ''"),
        ("nginx:" + "a" * 129, "129 characters long, at most 128"),
        ("nginx@sha256:abc", "invalid digest 'sha256:abc'"),
        ("nginx@" + DIGEST.upper(), "invalid digest"),
        ("nginx@md5:" + "0" * 32, "invalid digest"),
        ("nginx@", "invalid digest ''"),
        ("quay.io/", "invalid repository name ''"),
        ("quay.io//app", "invalid repository name"),
        ("team/app/", "invalid repository name"),
        ("app-/x", "invalid repository name"),
        ("-bad.example.com/app", "invalid registry host '-bad.example.com'"),
        ("bad_host.example.com/app", "invalid registry host 'bad_host.example.com'"),
        ("quay.io:notaport/app", "invalid registry host"),
        ("a/" + "b" * 260, "longer than 255"),
        ("nginx:v1:v2", "invalid"),
    ],
)
def test_refuses_invalid_references(ref: str, message: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_image(ref)
    assert message in str(info.value)
    # Callers may catch it either way: as bad input or as a permanent operator error.
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, PermanentError)


def test_longest_tag_is_allowed() -> None:
    assert parse_image("app:" + "a" * 128).tag == "a" * 128


def test_helpers() -> None:
    assert is_valid_tag("v1.2.3-rc_1")
    assert not is_valid_tag("v1/2")
    assert not is_valid_tag("")
    assert not is_valid_tag("ünïcode")
    assert is_digest(DIGEST)
    assert not is_digest("v1")
    assert check_repository("team/app") == "team/app"
    with pytest.raises(InvalidReference, match=r"invalid repository name '\.\./etc'"):
        check_repository("../etc")
