"""The periodic schedule, built from the configured pipelines, run by RedBeat.

RedBeat keeps the schedule in Redis behind a lock, so a second beat process waits as a hot
standby instead of sending every tick twice.

Per pipeline: `sync-<name>` every `sync.interval` (apply everything: drift correction) and
`poll-<name>` every `git.poll_interval` (apply what changed in new commits when no webhook
arrives). Both start the one entry point, `sync.trigger`, which coalesces them. And, when any
pipeline scans registries, `automation-<name>` every `automation_interval` (writable repos), and
`scan-dispatch` every `registry.dispatch_interval`, which enqueues
each due image repository once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gitops_pipeline.celery_app import configure
from gitops_pipeline.config import Settings
from gitops_pipeline.startup import load_or_exit, parse_args


def build_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery `beat_schedule` entries for every pipeline; expiring so ticks never pile up."""
    schedule: dict[str, dict[str, Any]] = {}
    for pipeline in settings.pipelines:
        schedule[f"sync-{pipeline.name}"] = {
            "task": "sync.trigger",
            "schedule": pipeline.sync.interval,
            "args": [pipeline.name],
            "kwargs": {"full": True},
            "options": {"expires": pipeline.sync.interval},
        }
        schedule[f"poll-{pipeline.name}"] = {
            "task": "sync.trigger",
            "schedule": pipeline.git.poll_interval,
            "args": [pipeline.name],
            "options": {"expires": pipeline.git.poll_interval},
        }
        if not pipeline.git.readonly:
            schedule[f"automation-{pipeline.name}"] = {
                "task": "automation.plan",
                "schedule": pipeline.automation_interval,
                "args": [pipeline.name],
                "options": {"expires": pipeline.automation_interval},
            }
    if any(pipeline.registry.scanning for pipeline in settings.pipelines):
        interval = settings.registry.dispatch_interval
        schedule["scan-dispatch"] = {
            "task": "scan.dispatch",
            "schedule": interval,
            "options": {"expires": interval},
        }
    return schedule


def main(argv: Sequence[str] | None = None) -> None:
    args, extra = parse_args(argv, "gitops-pipeline beat (RedBeat)")
    settings = load_or_exit(args.config)
    app = configure(settings)
    app.conf.beat_schedule = build_schedule(settings)
    app.start(
        [
            "beat",
            "--scheduler",
            "redbeat.RedBeatScheduler",
            "--loglevel",
            settings.log_level,
            *extra,
        ]
    )


if __name__ == "__main__":
    main()
