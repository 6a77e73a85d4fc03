"""Which remote URLs git reaches over ssh (and so need the pipeline's deploy key)."""

from __future__ import annotations

import pytest

from gitops_pipeline.identity import uses_ssh


@pytest.mark.parametrize(
    ("url", "ssh"),
    [
        ("git@github.com:org/repo.git", True),
        ("ssh://git@host:2222/org/repo.git", True),
        ("git+ssh://host/repo", True),
        ("host:repo", True),
        ("https://host/org/repo.git", False),
        ("file:///srv/repo.git", False),
        ("/srv/repo.git", False),
        ("./repo:with-colon", False),
    ],
)
def test_which_urls_use_ssh(url: str, ssh: bool) -> None:
    assert uses_ssh(url) is ssh
