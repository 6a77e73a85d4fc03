"""The sync pool: fetch, verify, generate and apply (queues `sync` and `default`)."""

from workers.pool import run_pool


def main() -> None:
    run_pool("sync", ["sync", "default"], lambda s: s.workers.sync_concurrency)


if __name__ == "__main__":
    main()
