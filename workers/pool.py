"""Starts a Celery worker for one pool after the config and Redis checks pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gitops_pipeline.celery_app import configure
from gitops_pipeline.config import Settings
from gitops_pipeline.startup import load_or_exit, parse_args


def run_pool(
    pool: str,
    queues: Sequence[str],
    concurrency: Callable[[Settings], int],
    argv: Sequence[str] | None = None,
) -> None:
    """Run the pool's worker; extra arguments go to `celery worker` unchanged."""
    args, extra = parse_args(argv, f"gitops-pipeline {pool} worker")
    settings = load_or_exit(args.config)
    app = configure(settings)
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(concurrency(settings)),
            "--hostname",
            f"{pool}@%h",
            "--task-events",
            "--loglevel",
            settings.log_level,
            *extra,
        ]
    )
