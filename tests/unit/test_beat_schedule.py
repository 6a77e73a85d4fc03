"""The periodic schedule built from the configured pipelines."""

from __future__ import annotations

import yaml

from beat_schedule import build_schedule
from gitops_pipeline.config import parse_settings


def test_every_pipeline_gets_its_ticks() -> None:
    settings = parse_settings(
        yaml.safe_dump(
            {
                "pipelines": [
                    {
                        "name": "a",
                        "git": {"url": "file:///a.git", "poll_interval": "30s"},
                        "sync": {"interval": "2m"},
                        "automation_interval": "10m",
                    },
                    {
                        "name": "b",
                        "git": {"url": "file:///b.git", "readonly": True},
                        "registry": {"scanning": False},
                    },
                ],
                "registry": {"dispatch_interval": "45s"},
            }
        ),
        "test",
        {},
    )
    schedule = build_schedule(settings)
    assert sorted(schedule) == [
        "automation-a",
        "poll-a",
        "poll-b",
        "scan-dispatch",
        "sync-a",
        "sync-b",
    ]
    assert schedule["sync-a"]["schedule"] == 120.0
    assert schedule["sync-a"]["kwargs"] == {"full": True}
    assert "kwargs" not in schedule["poll-a"]
    assert schedule["poll-a"]["schedule"] == 30.0
    assert schedule["automation-a"] == {
        "task": "automation.plan",
        "schedule": 600.0,
        "args": ["a"],
        "options": {"expires": 600.0},
    }
    assert schedule["scan-dispatch"]["schedule"] == 45.0


def test_no_scanning_no_dispatch() -> None:
    settings = parse_settings(
        yaml.safe_dump(
            {
                "pipelines": [
                    {"name": "a", "git": {"url": "file:///a.git"}, "registry": {"scanning": False}},
                ]
            }
        ),
        "test",
        {},
    )
    assert "scan-dispatch" not in build_schedule(settings)
