"""`python -m gitops_pipeline.api`: the web process."""

from __future__ import annotations

import uvicorn

from gitops_pipeline.api.app import create_app
from gitops_pipeline.startup import load_or_exit, parse_args


def main() -> None:
    args, _ = parse_args(None, "gitops-pipeline web (REST API)")
    settings = load_or_exit(args.config)
    host, _, port = settings.api.listen.rpartition(":")
    uvicorn.run(create_app(settings), host=host, port=int(port), log_config=None)


if __name__ == "__main__":
    main()
