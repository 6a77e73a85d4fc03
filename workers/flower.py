"""Flower, the Celery monitor, for the worker pools; always behind basic auth."""

from __future__ import annotations

import sys

from gitops_pipeline.celery_app import configure
from gitops_pipeline.startup import EXIT_CONFIG, load_or_exit, parse_args


def main() -> None:
    args, extra = parse_args(None, "Flower for the gitops-pipeline workers")
    settings = load_or_exit(args.config)
    if settings.flower.basic_auth is None:
        print(
            "gitops-pipeline: error: flower.basic_auth is not set (user:password)", file=sys.stderr
        )
        raise SystemExit(EXIT_CONFIG)
    host, _, port = settings.flower.listen.rpartition(":")
    app = configure(settings)
    app.start(
        [
            "flower",
            f"--address={host}",
            f"--port={port}",
            f"--basic-auth={settings.flower.basic_auth.get_secret_value()}",
            *extra,
        ]
    )


if __name__ == "__main__":
    main()
