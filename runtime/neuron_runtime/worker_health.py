"""The /health endpoint of a multi-node worker pod. Workers run no vLLM HTTP server, so the runtime serves GET
/health itself (200 while the given state says healthy, 503 with the reason otherwise, 404 elsewhere), which lets
the operator give every pod of a group the same startup, readiness and liveness probes.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Tuple


class HealthServer:
    """A tiny HTTP server for a worker pod's probes: GET /health is 200 while ``state()`` says healthy, else 503."""

    def __init__(self, host: str, port: int, state: Callable[[], Tuple[bool, str]]) -> None:
        self.state = state
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.split("?", 1)[0] != "/health":
                    self._reply(404, "not found")
                    return
                ok, text = outer.state()
                self._reply(200 if ok else 503, text)

            def _reply(self, code: int, text: str) -> None:
                body = (text + "\n").encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # probes every few seconds: keep the log quiet
                return

        server_cls = ThreadingHTTPServer
        if host == "" and socket.has_dualstack_ipv6():

            class DualStack(ThreadingHTTPServer):
                address_family = socket.AF_INET6

                def server_bind(self) -> None:
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    super().server_bind()

            server_cls = DualStack
        self.server = server_cls((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="worker-health", daemon=True)

    def start(self) -> "HealthServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
