"""Git remote URLs reduced to one key, so webhooks find the pipelines that follow a repository."""

from __future__ import annotations

import pytest

from gitops_pipeline.git.urls import repo_key


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:acme/deploy.git",
        "git@github.com:acme/deploy",
        "github.com:acme/deploy.git",
        "ssh://git@github.com/acme/deploy.git",
        "ssh://git@github.com:22/acme/deploy",
        "https://github.com/acme/deploy.git",
        "https://github.com/acme/deploy",
        "https://github.com/acme/deploy/",
        "https://github.com/acme/deploy.git/",
        "https://bot:s3cret@github.com/acme/deploy.git",
        "http://github.com:80/acme/deploy",
        "git://github.com/acme/deploy.git",
        "https://GitHub.COM/acme/deploy.git",
        "https://github.com/Acme/Deploy",
        "  https://github.com/acme/deploy.git\n",
    ],
)
def test_every_spelling_of_a_remote_has_one_key(url: str) -> None:
    assert repo_key(url) == "github.com/acme/deploy"


def test_nested_groups_and_non_standard_ssh_ports() -> None:
    assert repo_key("ssh://git@git.example.com:2222/ops/infra/cluster.git") == (
        "git.example.com/ops/infra/cluster"
    )
    assert repo_key("https://git.example.com/ops/infra/cluster") == (
        "git.example.com/ops/infra/cluster"
    )


def test_local_paths_and_file_urls_have_no_host() -> None:
    assert repo_key("file:///srv/git/app.git") == "/srv/git/app"
    assert repo_key("/srv/git/app.git") == "/srv/git/app"
    assert repo_key("file:///srv/git/app.git") == repo_key("/srv/git/app")


def test_an_absolute_scp_path_matches_the_ssh_url() -> None:
    assert repo_key("git@git.example.com:/srv/app.git") == repo_key(
        "ssh://git@git.example.com/srv/app.git"
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("git@github.com:acme/deploy.git", "git@github.com:acme/deploy-staging.git"),
        ("git@github.com:acme/deploy.git", "git@gitlab.com:acme/deploy.git"),
        ("https://github.com/acme/deploy", "https://github.com/other/deploy"),
        ("https://git.example.com/a/b/c", "https://git.example.com/b/c"),
    ],
)
def test_different_repositories_keep_different_keys(one: str, other: str) -> None:
    assert repo_key(one) != repo_key(other)


def test_an_unparsable_url_is_compared_as_written() -> None:
    assert repo_key("https://[::1/acme/deploy") == "/https://[::1/acme/deploy"
