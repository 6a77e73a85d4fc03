"""A private, throw-away ``redis-server`` on a free loopback port."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import redis

from gitops_pipeline.testbed.process import HOST, ManagedProcess, free_port

READY_TIMEOUT = 30.0


@dataclass(eq=False)
class RedisServer:
    """A running private Redis. ``url`` points at database 0."""

    process: ManagedProcess
    port: int
    host: str = HOST

    @property
    def url(self) -> str:
        return self.url_for_db(0)

    def url_for_db(self, db: int) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()


def _ping(port: int) -> bool:
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        return bool(client.ping())
    finally:
        client.close()


def start_redis(workdir: Path, *, executable: str | None = None) -> RedisServer:
    """Start ``redis-server`` with no persistence and ``noeviction``, state in ``workdir``."""
    binary = executable or shutil.which("redis-server") or "/usr/bin/redis-server"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(HOST)
    argv = [
        binary,
        "--port", str(port),
        "--bind", HOST,
        "--save", "",
        "--appendonly", "no",
        "--maxmemory-policy", "noeviction",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    process = ManagedProcess("redis-server", argv, workdir).start()
    process.wait_until_ready(lambda: _ping(port), READY_TIMEOUT, what=f"PING on port {port}")
    return RedisServer(process=process, port=port)
