"""What every benchmark program shares: progress logging and how a run is stopped."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

T = TypeVar("T")


def log(message: str) -> None:
    """Progress goes to stderr; the report goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_interruptibly(run: Callable[[], None]) -> int:
    """Run a benchmark so that SIGTERM and Ctrl-C unwind it (its cleanups stop everything it
    started); the exit code: 0, or 130 when interrupted."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run()
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    return 0


def poll(
    what: str,
    probe: Callable[[], T | None],
    *,
    alive: Callable[[], None],
    every: float,
    limit: float,
) -> T:
    """Call `probe` every `every` seconds until it returns something, checking with `alive`
    that the processes under test still run; RuntimeError after `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        alive()
        time.sleep(every)
    raise RuntimeError(f"gave up waiting for {what} after {limit:.0f} s")
