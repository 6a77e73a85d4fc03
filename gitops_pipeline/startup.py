"""Start-up of every process: read `--config`, validate, check Redis, or stop with one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gitops_pipeline import runtime
from gitops_pipeline.config import Settings, load_settings
from gitops_pipeline.errors import ConfigError
from gitops_pipeline.logsetup import configure_logging
from gitops_pipeline.store import check_redis

EXIT_CONFIG = 2


def parse_args(
    argv: Sequence[str] | None, description: str
) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="config file (default: $GITOPS_CONFIG or gitops.yaml)")
    return parser.parse_known_args(argv)


def load_or_exit(config_path: str | None) -> Settings:
    """Settings ready to use, or exit 2 with `gitops-pipeline: error: <one line>` on stderr."""
    try:
        settings = load_settings(config_path)
        check_redis(settings.redis_url)
    except ConfigError as exc:
        print(f"gitops-pipeline: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(settings.log_format, settings.log_level)
    runtime.init(settings)
    return settings
