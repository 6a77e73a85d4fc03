"""``python -m bench``: the sync benchmark (see ``bench/sync_bench.py``)."""

from bench.sync_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
