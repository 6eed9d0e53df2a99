"""TEST HOOK: a stand-in for the engine, so multi-node groups can be tested as real processes without Neuron or vLLM.

Used only when NEURON_RUNTIME_TEST_MODE=1 and NEURON_RUNTIME_FAKE_ENGINE=1 (multinode.engine_command); never in a
real pod. ``python -m neuron_runtime.fake_engine --role leader|worker --host H --port P -- <the real engine argv>``:

  - writes {"role", "argv", "env"} as JSON to $NEURON_RUNTIME_FAKE_ENGINE_RECORD when set (tests assert on the real
    argv and env the runtime would have used);
  - leader: serves GET /health (200 "ok"), /metrics and /v1/models on H:P, like vLLM's OpenAI server would;
  - worker: just stays alive (the runtime itself serves the worker's /health);
  - exits 0 on SIGTERM/SIGINT, by itself after $NEURON_RUNTIME_FAKE_ENGINE_EXIT="<seconds>:<code>", and when its
    parent (the runtime, --parent-pid) is gone, even if that happened before it started, so a test that SIGKILLs a
    runtime leaves no orphan behind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional

from neuron_runtime import constants


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._reply(200, "text/plain", "ok\n")
        elif path == "/metrics":
            self._reply(200, "text/plain", "fake_engine_up 1\n")
        elif path == "/v1/models":
            self._reply(200, "application/json", json.dumps({"object": "list", "data": [{"id": "fake"}]}))
        else:
            self._reply(404, "text/plain", "not found\n")

    def _reply(self, code: int, content_type: str, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        return


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="neuron_runtime.fake_engine", description="TEST HOOK: fake engine")
    parser.add_argument("--role", choices=("leader", "worker"), required=True)
    parser.add_argument("--host", default="")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit once this is no longer the parent")
    parser.add_argument("engine_argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    engine_argv = args.engine_argv[1:] if args.engine_argv[:1] == ["--"] else args.engine_argv
    parent = args.parent_pid if args.parent_pid is not None else os.getppid()
    if os.getppid() != parent:
        return 0  # the runtime died while we were starting

    record = os.environ.get(constants.ENV_FAKE_ENGINE_RECORD)
    if record:
        tmp = record + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"role": args.role, "argv": engine_argv, "env": dict(os.environ)}, f)
        os.replace(tmp, record)

    stop = threading.Event()
    result = {"code": 0}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.role == "leader":
        server = ThreadingHTTPServer((args.host, args.port), _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    exit_after = os.environ.get(constants.ENV_FAKE_ENGINE_EXIT, "")
    deadline = None
    if exit_after:
        seconds, _, code = exit_after.partition(":")
        deadline = time.monotonic() + float(seconds)
        result["code"] = int(code or 0)
    print(f"fake engine ({args.role}) running", file=sys.stderr, flush=True)
    while not stop.wait(0.2):
        if os.getppid() != parent:
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            return result["code"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
