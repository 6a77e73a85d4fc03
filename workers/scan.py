"""The scanner pool: registry scans (queue `scan`); add processes anywhere to scale out."""

from workers.pool import run_pool


def main() -> None:
    run_pool("scan", ["scan"], lambda s: s.workers.scan_concurrency)


if __name__ == "__main__":
    main()
