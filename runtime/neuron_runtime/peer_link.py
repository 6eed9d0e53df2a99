"""One framed, heart-beaten TCP connection between two members of a multi-node group: JSON objects, one per line
(UTF-8, at most 64 KiB), a thread-safe send, a receive that turns EOF, silence past a timeout and garbage into
LinkClosed, a dual-stack listener, and the pinger thread that keeps every open link's heartbeat going.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Callable, Dict, List, Mapping, Optional

MAX_LINE_BYTES = 64 * 1024


class LinkClosed(Exception):
    """The peer closed the connection, went silent for too long, or sent garbage."""


class Link:
    """A JSON-lines TCP connection. send() is thread-safe; recv() raises LinkClosed on EOF/timeout/garbage."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self._buffer = b""
        # Re-entrant: a SIGTERM handler may abort() (send) while the main thread is inside send().
        self._send_lock = threading.RLock()
        self.closed = threading.Event()

    def send(self, message: Mapping[str, object]) -> bool:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
        with self._send_lock:
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False  # the reader notices the broken connection and reports it

    def recv(self, timeout: Optional[float]) -> Dict[str, object]:
        self.sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                raise LinkClosed(f"no heartbeat for {timeout:g}s") from None
            except ConnectionResetError:
                # A peer that dies with unread data in its receive buffer resets the connection instead of closing
                # it (RFC 1122 4.2.2.13): the same event as an EOF here, so the same words.
                raise LinkClosed("connection closed (reset by peer)") from None
            except OSError as e:
                raise LinkClosed(f"connection error: {e}") from None
            if not chunk:
                raise LinkClosed("connection closed")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE_BYTES:
                raise LinkClosed("protocol error: line too long")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line.decode("utf-8"))
        except ValueError:
            raise LinkClosed("protocol error: not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise LinkClosed("protocol error: not a message")
        return message

    def close(self) -> None:
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` ("" = every interface, IPv4 and IPv6 when the kernel allows)."""
    if host == "" and socket.has_dualstack_ipv6():
        sock = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=False)
    else:
        sock = socket.create_server((host, port))
    sock.settimeout(0.5)  # so the accept loop notices close()
    return sock


class Pinger(threading.Thread):
    """Sends {"type": "ping"} on every link ``links()`` returns, every ``interval`` s, until ``stop`` is set."""

    def __init__(self, links: Callable[[], List[Link]], interval: float, stop: threading.Event) -> None:
        super().__init__(name="rendezvous-ping", daemon=True)
        self.links, self.interval, self.stop = links, interval, stop

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            for link in self.links():
                link.send({"type": "ping"})
