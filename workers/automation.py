"""The automation pool: plans and commit-bumps (queue `automation`)."""

from workers.pool import run_pool


def main() -> None:
    run_pool("automation", ["automation"], lambda s: s.workers.automation_concurrency)


if __name__ == "__main__":
    main()
