"""A threaded HTTP server on a free loopback port, for test-bed servers written in Python (the
registry front, the token server): started in a daemon thread, stopped and joined by `stop`."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gitops_pipeline.testbed.process import HOST


class LoopbackHTTP:
    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._server = ThreadingHTTPServer((HOST, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """`host:port` it listens on."""
        return f"{HOST}:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
