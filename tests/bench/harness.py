"""Black-box harness shared by the benchmarks and the failure suite (tests/chaos): the local control plane, the
operator as users run it in a child process that can be SIGKILLed and restarted by pid, its own metrics and RSS,
and list+watch trackers that time what happens in the cluster without polling it.

Nothing here imports the operator's internals: the operator is `python -m neuron_operator.cli run`, its figures
come from its metrics endpoint and /proc, and the cluster is read with the kubernetes client.
"""

from __future__ import annotations

import json
import os
import re
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlencode

import urllib3
from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTENV = pathlib.Path(os.environ.get("TESTENV_DIR", ROOT / ".testenv"))
GROUP_VERSION = "inference.neuron-operator.io/v1alpha1"
READ_VERBS = ("get", "list")
WRITE_VERBS = ("create", "apply", "patch", "update", "delete")
TRACEBACK = "Traceback (most recent call last)"


def sh(*args: str, input: Optional[str] = None, check: bool = True, timeout: float = 600) -> str:
    proc = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the control plane -----------------------------------------------------------------------------------

def cluster_up(env: Optional[dict[str, str]] = None) -> bool:
    """Start (or reuse) the local control plane, export KUBECONFIG/PATH to it and install the CRD.
    Returns whether it was already running (then the caller must not stop it)."""
    cluster = str(ROOT / "hack" / "cluster.sh")
    full_env = {**os.environ, **(env or {})}
    reused = subprocess.run([cluster, "status"], capture_output=True, env=full_env).returncode == 0
    subprocess.run([cluster, "up"], check=True, env=full_env)
    bin_dir = sh(str(ROOT / "hack" / "testenv-build.sh")).strip().splitlines()[-1]
    os.environ["KUBECONFIG"] = str(TESTENV / "kubeconfig")
    if bin_dir not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    sh("kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "neuroninferenceservices.yaml"))
    sh("kubectl", "wait", "--for=condition=Established", "crd/neuroninferenceservices.inference.neuron-operator.io",
       "--timeout=60s")
    return reused


def cluster_down() -> None:
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), "down"], check=False)


def kill_apiserver() -> None:
    """SIGKILL kube-apiserver now (by its pid file), without waiting for anything."""
    os.kill(int((TESTENV / "kube-apiserver.pid").read_text().split()[0]), signal.SIGKILL)


def restart_apiserver(downtime: float = 0) -> None:
    """SIGKILL kube-apiserver (if still alive), keep it down ``downtime`` s, start it with the same flags, wait."""
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), "restart-apiserver", str(downtime)], check=True)


def node_manifests(spec: str, tag: str) -> str:
    """Extra simulated Neuron nodes ('inf2.xlarge=100'), named with ``tag`` so they add to the default ones."""
    return sh(sys.executable, str(ROOT / "hack" / "fake_nodes.py"), "--nodes", spec, "--cpu-nodes", "0", "--tag", tag)


def apply_nodes(spec: str, tag: str) -> str:
    manifests = node_manifests(spec, tag)
    # Forced: a rerun on a running cluster re-applies nodes whose ttl annotation kube-controller-manager now manages.
    sh("kubectl", "apply", "--server-side", "--force-conflicts", "-f", "-", input=manifests)
    return manifests


def wait_nodes_ready(timeout: float = 300) -> None:
    """Every node Ready (one LIST per second: `kubectl wait nodes --all` takes minutes with 1,000 nodes)."""
    api = Api()
    deadline = time.monotonic() + timeout
    while True:
        nodes, _ = api.list("v1", "nodes", None)
        pending = [n["metadata"]["name"] for n in nodes if (condition(n, "Ready") or {}).get("status") != "True"]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} nodes not Ready after {timeout:.0f}s, e.g. {pending[:5]}")
        time.sleep(1)


def delete_nodes(tag: str) -> None:
    names = [n for n in sh("kubectl", "get", "nodes", "-o", "name").split() if f"-{tag}" in n]
    if names:
        sh("kubectl", "delete", "--wait=false", *names, check=False)


def artifact_store(namespace: str, pv_name: str, claim: str = "artifacts") -> None:
    """A bound RWX claim (static PV) in ``namespace``: the artifact store the services name."""
    from tests.e2e.nis import artifact_store_manifests

    sh("kubectl", "apply", "-f", "-", input=artifact_store_manifests(namespace, pv_name, claim))
    sh("kubectl", "wait", "-n", namespace, f"pvc/{claim}", "--for=jsonpath={.status.phase}=Bound", "--timeout=60s")


# --- the operator's own figures ---------------------------------------------------------------------------

@dataclass
class Metrics:
    """One scrape of the operator's metrics: API requests by (verb, code) and reconcile passes."""

    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    passes: Optional[float] = None  # None: the operator does not export neuron_operator_reconcile_duration_seconds
    errors: dict[str, float] = field(default_factory=dict)  # failed passes by reason (reconcile_errors_total)

    def __sub__(self, other: "Metrics") -> "Metrics":
        keys = set(self.requests) | set(other.requests)
        passes = None if self.passes is None or other.passes is None else self.passes - other.passes
        errors = {k: self.errors.get(k, 0) - other.errors.get(k, 0) for k in set(self.errors) | set(other.errors)}
        return Metrics({k: self.requests.get(k, 0) - other.requests.get(k, 0) for k in keys}, passes,
                       {k: v for k, v in errors.items() if v})

    def by_verb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (verb, _), n in self.requests.items():
            out[verb] = out.get(verb, 0) + n
        return dict(sorted(out.items()))

    def failed(self) -> dict[str, float]:
        """Requests that did not succeed, by 'verb code' (e.g. 409 conflicts, 0 for no answer)."""
        return {f"{v} {c}": n for (v, c), n in sorted(self.requests.items()) if n and not c.startswith("2")}

    @property
    def reads(self) -> float:
        return sum(n for (v, _), n in self.requests.items() if v in READ_VERBS)

    @property
    def writes(self) -> float:
        return sum(n for (v, _), n in self.requests.items() if v in WRITE_VERBS)

    @property
    def total(self) -> float:
        return sum(self.requests.values())


def parse_metrics(text: str) -> Metrics:
    metrics = Metrics()
    for family in text_string_to_metric_families(text):
        if family.name == "neuron_operator_api_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    key = (s.labels.get("verb", "?"), s.labels.get("code", "?"))
                    metrics.requests[key] = metrics.requests.get(key, 0) + s.value
        elif family.name == "neuron_operator_reconcile_errors":
            for s in family.samples:
                if s.name.endswith("_total") and s.value:
                    reason = s.labels.get("reason", "?")
                    metrics.errors[reason] = metrics.errors.get(reason, 0) + s.value
        elif family.name == "neuron_operator_reconcile_duration_seconds":
            for s in family.samples:
                if s.name.endswith("_count"):
                    metrics.passes = (metrics.passes or 0) + s.value
    return metrics


class OperatorProcess:
    """`neuron-operator run` as users run it, in a child process this harness alone starts and stops by pid.

    The log file collects every incarnation (a restart appends), so a traceback from any of them is found.
    """

    def __init__(self, name: str, namespaces: Iterable[str], env: Optional[dict[str, str]] = None):
        self.name = name
        self.namespaces = list(namespaces)
        self.env = env or {}
        self.log_path = TESTENV / f"operator-{name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.metrics_port = 0
        self.health_port = 0
        self.starts = 0
        self.kills = 0
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")

    # lifecycle
    def start(self, timeout: float = 90) -> "OperatorProcess":
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {**os.environ, "NEURON_OPERATOR_METRICS_PORT": str(self.metrics_port),
               "NEURON_OPERATOR_METRICS_ADDRESS": "127.0.0.1", **self.env}
        with open(self.log_path, "ab") as log:
            log.write(f"===== start {self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "neuron_operator.cli", "run", "--standalone",
                 *(f"--namespace={ns}" for ns in self.namespaces),
                 f"--liveness=http://127.0.0.1:{self.health_port}/healthz"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2).read()
                self.scrape()
                return
            except OSError:
                if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"operator {self.name} did not start; log tail:\n{self.log_tail()}") from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no cleanup handler runs, whatever the operator was doing is cut off."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.kills += 1

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def restart(self, timeout: float = 90) -> None:
        self.kill()
        self.start(timeout)

    def __enter__(self) -> "OperatorProcess":
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    # observation
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def scrape(self) -> Metrics:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return parse_metrics(text)

    def healthy(self) -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=3).read()
            return True
        except OSError:
            return False

    def rss_kib(self) -> int:
        """VmRSS of the operator process (`neuron-operator run` execs kopf in place: same pid)."""
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def tracebacks(self) -> list[str]:
        """Every Python traceback in the log of any incarnation: the log record that announced it plus the whole
        chain ("The above exception was the direct cause ..."), up to the next log record."""
        out: list[str] = []
        block: Optional[list[str]] = None
        previous = ""
        for line in self.log_text().splitlines():
            if block is not None:
                if re.match(r"^\[\d{4}-\d\d-\d\d ", line) or line.startswith("====="):
                    out.append("\n".join(block))
                    block = None
                else:
                    block.append(line)
            if block is None and TRACEBACK in line:
                block = [previous, line]
            previous = line
        if block is not None:
            out.append("\n".join(block))
        return out


def wait_settled(operator: OperatorProcess, quiet: float = 5.0, timeout: float = 120.0) -> Metrics:
    """Wait until the operator's request counter has not moved for ``quiet`` seconds; returns the last scrape."""
    deadline = time.monotonic() + timeout
    last = operator.scrape()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = operator.scrape()
        if now.total != last.total:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


# --- reading the cluster ------------------------------------------------------------------------------------

class Api:
    """Raw JSON GET/LIST/WATCH on API paths with the kubeconfig's credentials (the kubernetes client's transport)."""

    def __init__(self) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        self._api = client.ApiClient(configuration)

    @staticmethod
    def path(api_version: str, plural: str, namespace: Optional[str], name: Optional[str] = None) -> str:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        parts = [base] + ([f"namespaces/{namespace}"] if namespace else []) + [plural] + ([name] if name else [])
        return "/".join(parts)

    def request(self, method: str, path: str, query: Optional[dict] = None, body: Any = None,
                content_type: str = "application/json", timeout: Any = 30) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, _, _ = self._api.param_serialize(method, path, header_params=headers,
                                                          auth_settings=["BearerToken"])
        if query:
            url = f"{url}?{urlencode(query)}"
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        except ApiException as exc:
            return exc.status or 0, _json_or_text(exc.body)
        data = response.read()
        return response.status, _json_or_text(data)

    def get(self, api_version: str, plural: str, namespace: Optional[str], name: str) -> Optional[dict]:
        status, body = self.request("GET", self.path(api_version, plural, namespace, name))
        if status == 404:
            return None
        if status >= 400:
            raise RuntimeError(f"GET {plural}/{name}: {status} {body}")
        return body

    def list(self, api_version: str, plural: str, namespace: Optional[str], **query: str) -> tuple[list[dict], str]:
        status, body = self.request("GET", self.path(api_version, plural, namespace), query or None, timeout=120)
        if status >= 400:
            raise RuntimeError(f"LIST {plural}: {status} {body}")
        return body.get("items") or [], body["metadata"].get("resourceVersion", "")

    def watch_lines(self, api_version: str, plural: str, namespace: Optional[str], resource_version: str,
                    timeout_seconds: int = 60):
        """Yield the raw events of one watch request (ends when the server closes it)."""
        query = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds)}
        headers = {"Accept": "application/json"}
        _, url, headers, _, _ = self._api.param_serialize(
            "GET", self.path(api_version, plural, namespace), header_params=headers, auth_settings=["BearerToken"])
        response = self._api.rest_client.pool_manager.request(
            "GET", f"{url}?{urlencode(query)}", headers=headers, preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 30))
        try:
            if response.status >= 400:
                raise RuntimeError(f"WATCH {plural}: {response.status} {response.data[:300]!r}")
            buffer = b""
            for chunk in response.stream(1 << 16):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()


def _json_or_text(data: Any) -> Any:
    if isinstance(data, bytes):
        data = data.decode(errors="replace")
    try:
        return json.loads(data) if data else None
    except (TypeError, ValueError):
        return data


Callback = Callable[[str, dict, float], None]  # (event type, object, monotonic time seen)


class Tracker:
    """The latest state of one collection, kept by list+watch in a thread; calls ``on_event`` for every change.

    Survives an API server restart: a failed watch is re-listed (a relist reports every object as MODIFIED, and
    objects that disappeared meanwhile as DELETED).
    """

    def __init__(self, api: Api, api_version: str, plural: str, namespace: Optional[str],
                 on_event: Optional[Callback] = None):
        self.api, self.api_version, self.plural, self.namespace = api, api_version, plural, namespace
        self.on_event = on_event
        self.objects: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self.relists = 0
        self._thread = threading.Thread(target=self._run, name=f"track-{plural}", daemon=True)

    def start(self) -> "Tracker":
        self._thread.start()
        if not self.synced.wait(60):
            raise RuntimeError(f"tracker for {self.plural} did not sync")
        return self

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.objects.values())

    def _emit(self, kind: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            if kind == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj
        if self.on_event:
            self.on_event(kind, obj, time.monotonic())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items, rv = self.api.list(self.api_version, self.plural, self.namespace)
            except Exception:  # noqa: BLE001 - API server down or restarting: try again
                time.sleep(0.5)
                continue
            if self.synced.is_set():
                self.relists += 1
            live = {o["metadata"]["name"] for o in items}
            for name in [n for n in list(self.objects) if n not in live]:
                self._emit("DELETED", self.objects[name])
            for obj in items:
                self._emit("MODIFIED" if obj["metadata"]["name"] in self.objects else "ADDED", obj)
            self.synced.set()
            try:
                while not self._stop.is_set():
                    for event in self.api.watch_lines(self.api_version, self.plural, self.namespace, rv):
                        if self._stop.is_set():
                            return
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise RuntimeError(obj.get("message", "watch error"))  # e.g. 410 Gone: relist
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if kind != "BOOKMARK":
                            self._emit(kind, obj)
            except Exception:  # noqa: BLE001 - connection lost or expired: relist
                time.sleep(0.2)


def condition(obj: dict, type_: str) -> Optional[dict]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def nis_ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    ready = condition(obj, "Ready")
    return (status.get("phase") == "Ready" and status.get("observedGeneration") == obj["metadata"].get("generation")
            and ready is not None and ready.get("status") == "True")


def job_complete(obj: dict) -> bool:
    cond = condition(obj, "Complete")
    return cond is not None and cond.get("status") == "True"


def deployment_available(obj: dict) -> bool:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    cond = condition(obj, "Available")
    return (status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)
            and (status.get("availableReplicas") or 0) >= spec.get("replicas", 1)
            and (status.get("updatedReplicas") or 0) >= spec.get("replicas", 1)
            and cond is not None and cond.get("status") == "True")
