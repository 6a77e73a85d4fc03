"""Run a real service as a subprocess in its own session and stop it again by process id."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

LOG_TAIL_LINES = 40
"""How many lines of a service's log an error message quotes."""


HOST = "127.0.0.1"
"""Every test-bed service listens on loopback only."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (one that only awaits its reaper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_pidfile(pid_path: Path, *, expect: str | None = None, timeout: float = 10.0) -> bool:
    """Stop a service left behind by an earlier run, given the pid file it wrote.

    Only a process that still leads its own process group (as every :class:`ManagedProcess`
    does) is signalled, and, if ``expect`` is given, only if the basename of its ``argv[0]`` starts
    with ``expect``; this guards against a recycled pid. Sends SIGTERM to the group, then SIGKILL
    after ``timeout`` seconds. Removes the pid file. Returns whether a process was stopped.
    """
    try:
        pid = int(pid_path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        pid_path.unlink(missing_ok=True)
        return False
    stopped = False
    try:
        if os.getpgid(pid) == pid and _argv0_matches(pid, expect):
            os.killpg(pid, signal.SIGTERM)
            stopped = True
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_path.unlink(missing_ok=True)
    return stopped


def _argv0_matches(pid: int, expect: str | None) -> bool:
    if expect is None:
        return True
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(argv0.decode(errors="replace")).startswith(expect)


@dataclass(eq=False)
class ManagedProcess:
    """A service subprocess with a log file and a pid file in ``workdir``.

    ``env`` is the complete environment of the child (``None`` inherits ours). The child runs
    in a new session, so :meth:`stop` can signal it and anything it spawned as one process
    group. Use :meth:`start`, then :meth:`wait_for_port` or :meth:`wait_until_ready`; both stop
    the process and raise :class:`RuntimeError` with the tail of its log if it exits early or
    is not ready in time.
    """

    name: str
    argv: Sequence[str]
    workdir: Path
    env: Mapping[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

    def start(self) -> Self:
        """Start the command; returns ``self`` so calls can be chained."""
        if self.popen is not None:
            raise RuntimeError(f"{self.name} already started (pid {self.popen.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self.popen = subprocess.Popen(
                    list(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=None if self.env is None else dict(self.env),
                    start_new_session=True,
                    close_fds=True,
                )
            except FileNotFoundError as exc:
                raise RuntimeError(f"{self.name}: executable not found: {self.argv[0]}") from exc
        self.pid_path.write_text(f"{self.popen.pid}\n")
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, reason: str) -> RuntimeError:
        self.stop()
        return RuntimeError(
            f"{self.name} {reason}\ncommand: {' '.join(self.argv)}\n"
            f"log {self.log_path} (last {LOG_TAIL_LINES} lines):\n{self.log_tail()}"
        )

    def wait_until_ready(
        self,
        probe: Callable[[], bool],
        timeout: float,
        *,
        interval: float = 0.1,
        what: str = "readiness probe",
    ) -> float:
        """Call ``probe`` until it returns true; an exception from it counts as "not yet".

        Returns the seconds waited. On early exit or timeout, stops the process and raises
        :class:`RuntimeError` quoting the log tail.
        """
        started = time.monotonic()
        deadline = started + timeout
        last_error = ""
        while True:
            if self.popen is None:
                raise RuntimeError(f"{self.name} was never started")
            code = self.popen.poll()
            if code is not None:
                raise self._fail(f"exited early with code {code} (waiting for {what})")
            try:
                if probe():
                    return time.monotonic() - started
                last_error = ""
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                detail = f"; last probe error: {last_error}" if last_error else ""
                raise self._fail(f"not ready after {timeout:.0f}s ({what}{detail})")
            time.sleep(interval)

    def wait_for_port(self, host: str, port: int, timeout: float = 30.0) -> float:
        """Wait until ``host:port`` accepts TCP connections; see :meth:`wait_until_ready`."""
        return self.wait_until_ready(
            lambda: port_open(host, port), timeout, what=f"TCP port {host}:{port}"
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds, reap the child.

        Idempotent. Returns the exit code (``None`` if never started).
        """
        popen = self.popen
        if popen is None:
            return None
        if popen.returncode is None:
            self._signal_group(signal.SIGTERM)
            if not self._wait_exited_unreaped(timeout):
                self._signal_group(signal.SIGKILL)
            # The leader has exited but is not reaped yet, so its pid (= the group id) cannot
            # have been recycled: sweep anything it left in its group, then reap it.
            self._signal_group(signal.SIGKILL)
            popen.wait()
        self.pid_path.unlink(missing_ok=True)
        return popen.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def _wait_exited_unreaped(self, timeout: float) -> bool:
        """Wait for the child to exit without reaping it (``WNOWAIT``)."""
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while True:
            try:
                if os.waitid(os.P_PID, self.popen.pid, flags) is not None:
                    return True
            except ChildProcessError:
                return True  # already reaped elsewhere
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
