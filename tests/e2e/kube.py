"""Small helpers for e2e tests: kubectl and a Kubernetes API client bound to the test cluster, and polling."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def kubectl(*args: str, input: Optional[str] = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run kubectl against the test cluster (KUBECONFIG and PATH are exported by the cluster fixture)."""
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def wait_until(predicate: Callable[[], Optional[T]], timeout: float = 60, interval: float = 0.5,
               message: str = "condition") -> T:
    """Poll until predicate() returns a truthy value, which is returned; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except AssertionError as exc:  # a kubectl call that failed (e.g. object not created yet)
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")
        time.sleep(interval)


def condition(obj: dict, type_: str) -> Optional[dict]:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def free_port() -> int:
    """A free TCP port on loopback for a server a test starts."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kubeconfig() -> str:
    return os.environ["KUBECONFIG"]
