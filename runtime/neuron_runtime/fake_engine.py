"""TEST HOOK: a stand-in for the engine, so multi-node groups can be tested as real processes without Neuron or vLLM.

Used only when NEURON_RUNTIME_TEST_MODE=1 and NEURON_RUNTIME_FAKE_ENGINE=1 (testhooks.engine_command); never in a
real pod. ``python -m neuron_runtime.fake_engine --role leader|worker --host H --port P -- <the real engine argv>``:

  - writes {"role", "argv", "env"} as JSON to $NEURON_RUNTIME_FAKE_ENGINE_RECORD when set (tests assert on the real
    argv and env the runtime would have used);
  - leader: serves GET /health (200 "ok"), /metrics and /v1/models on H:P, like vLLM's OpenAI server would;
  - worker: just stays alive (the runtime itself serves the worker's /health);
  - exits 0 on SIGTERM/SIGINT, by itself after $NEURON_RUNTIME_FAKE_ENGINE_EXIT="<seconds>:<code>", and when its
    parent (the runtime, --parent-pid) is gone, even if that happened before it started, so a test that SIGKILLs a
    runtime leaves no orphan behind;
  - vllm-neuron stacks (the engine argv carries --additional-config or the env VLLM_CACHE_ROOT): behaves like the
    plugin's compile cache. Its "graphs" are named from the engine-relevant argv (server-only flags, port, host and
    served name left out), so compile and serve agree exactly when the real engine would. Without
    VLLM_NEURON_DISABLE_WARMUP_COMPILE=1 it "compiles": it writes the graphs into the local cache
    ($VLLM_CACHE_ROOT/neuron/compile_cache/<32 hex>/) and promotes the first one into NEURON_LIBTORCH_REMOTE_CACHE
    (the runtime must promote the rest). With it, a graph missing from the local cache is a fatal RuntimeError, as
    the plugin's cache-hit-only mode reports it, and the process exits 1 before serving.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional

from neuron_runtime import constants

PLUGIN_GRAPHS = 3  # graphs one fake compile produces
_METRICS = {"text": "fake_engine_up 1\n"}


def plugin_graph_names(engine_argv: List[str]) -> List[str]:
    from neuron_runtime import vllm_neuron
    from neuron_runtime.stacks import NEURON_2_32_VLLM_NEURON_0_24 as profile

    ignored = set(profile.server_only_flags) | {"--port", "--host", "--served-model-name"}
    relevant = [t for flag, tokens in vllm_neuron.flag_groups(engine_argv[3:]) if flag not in ignored for t in tokens]
    seed = json.dumps(relevant)
    return [hashlib.md5(f"{seed}#{i}".encode(), usedforsecurity=False).hexdigest() for i in range(PLUGIN_GRAPHS)]


def plugin_cache(engine_argv: List[str]) -> int:
    """The compile-cache behaviour of the vllm-neuron plugin (see the module docstring). Returns an exit code."""
    cache_root = os.environ.get("VLLM_CACHE_ROOT")
    if not cache_root:
        return 0
    local = os.path.join(cache_root, "neuron", "compile_cache")
    names = plugin_graph_names(engine_argv)
    if os.environ.get("VLLM_NEURON_DISABLE_WARMUP_COMPILE") == "1":
        for name in names:
            if not os.path.isdir(os.path.join(local, name)):
                print(f"RuntimeError: VLLM_NEURON_DISABLE_WARMUP_COMPILE: local compile cache miss for key {name}. "
                      "All graphs must be pre-compiled when warmup compilation is disabled.", file=sys.stderr,
                      flush=True)
                return 1
        return 0
    for name in names:
        os.makedirs(os.path.join(local, name), exist_ok=True)
        with open(os.path.join(local, name, "model.neff"), "wb") as f:
            f.write(name.encode())
    remote = os.environ.get("NEURON_LIBTORCH_REMOTE_CACHE")
    if remote:
        os.makedirs(os.path.join(remote, names[0]), exist_ok=True)
        with open(os.path.join(remote, names[0], "model.neff"), "wb") as f:
            f.write(names[0].encode())
    _METRICS["text"] += "".join(f'vllm_neuron:compilation_time_seconds{{bucket_name="b{i}"}} 1.5\n'
                                for i in range(PLUGIN_GRAPHS))
    return 0


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._reply(200, "text/plain", "ok\n")
        elif path == "/metrics":
            self._reply(200, "text/plain", _METRICS["text"])
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

    if args.role == "leader":
        code = plugin_cache(engine_argv)
        if code:
            return code

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
