"""What the autoscaling e2e tests run next to the control plane: a real custom metrics API server behind the
kube-apiserver's aggregation layer, the queue depth each serving pod "reports" through it, and KEDA's CRDs.

Where the simulation starts: kwok pods run no vLLM, so nothing serves /metrics and no Prometheus could scrape it.
The custom metrics server (metrics_adapter/, built from sigs.k8s.io/custom-metrics-apiserver, the library
prometheus-adapter is made of, with its own test provider) is real, and so is everything from it on: the
APIService, the aggregation layer (front-proxy client certificate, delegated authentication and authorization),
the HPA controller in kube-controller-manager, the service's scale subresource, the operator and the Deployment
controller. The values are the simulated part: QueueReporter writes, for each serving pod, the share of a queue
depth the test chooses, as prometheus-adapter would serve vllm:num_requests_waiting scraped from that pod.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from typing import Iterator, Optional

import yaml

from .kube import free_port, kubectl, kubectl_json, wait_until

HERE = pathlib.Path(__file__).resolve().parent
ADAPTER_MODULE = HERE / "metrics_adapter"
CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "neuron-operator" / "testenv"
# KEDA's CRDs come from its Go module at this version (the newest the module proxy served with go 1.26); the CRD
# file is read from the module cache, never committed.
KEDA_VERSION = "v2.21.0"
KEDA_MODULE = "github.com/kedacore/keda/v2"
METRICS_GROUP, METRICS_VERSION = "custom.metrics.k8s.io", "v1beta2"
ADAPTER_SERVICE, ADAPTER_NAMESPACE = "neuron-e2e-custom-metrics", "kube-system"
QUEUE_METRIC = "vllm:num_requests_waiting"


def log(message: str) -> None:
    print(f"[autoscaling e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _go_env() -> dict[str, str]:
    # The same build settings as hack/testenv-build.sh, so the k8s.io packages come out of the Go build cache.
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath -buildvcs=false"}


def adapter_binary() -> pathlib.Path:
    """Build the metrics adapter once per go.sum (cold: module downloads plus a few minutes on 2 cores)."""
    stamp = hashlib.sha256((ADAPTER_MODULE / "go.sum").read_bytes() + (ADAPTER_MODULE / "main.go").read_bytes())
    binary = CACHE / f"metrics-adapter-{stamp.hexdigest()[:12]}" / "metrics-adapter"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        log(f"building {binary} (once)")
        subprocess.run(["go", "build", "-ldflags", "-s -w", "-o", f"{binary}.tmp", "."], cwd=ADAPTER_MODULE,
                       env=_go_env(), check=True, timeout=1800)
        os.replace(f"{binary}.tmp", binary)
        log(f"built the metrics adapter in {time.monotonic() - started:.0f}s")
    return binary


def keda_crd(name: str = "keda.sh_scaledobjects.yaml") -> pathlib.Path:
    """A CRD file of KEDA's Go module, from the module cache (downloaded on first use)."""
    out = subprocess.run(["go", "mod", "download", "-json", f"{KEDA_MODULE}@{KEDA_VERSION}"], cwd=tempfile.gettempdir(),
                         env={**_go_env(), "GOFLAGS": "-mod=mod"}, capture_output=True, text=True, timeout=900,
                         check=True).stdout
    return pathlib.Path(json.loads(out)["Dir"]) / "config" / "crd" / "bases" / name


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def serving_certificate(directory: pathlib.Path, dns_name: str) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A CA of its own and a serving certificate for ``dns_name``, the name the aggregator verifies
    (<service>.<namespace>.svc). Returns (ca, cert, key)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=neuron-e2e-metrics-ca", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "serving.key", "-out", "serving.csr",
             "-subj", f"/CN={dns_name}", cwd=directory)
    (directory / "serving.ext").write_text(f"subjectAltName=DNS:{dns_name}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "serving.ext", "-out", "serving.crt", cwd=directory)
    return directory / "ca.crt", directory / "serving.crt", directory / "serving.key"


class MetricsAdapter:
    """The running adapter: POST a value for one pod's metric to its loopback write endpoint."""

    def __init__(self, write_url: str) -> None:
        self.write_url = write_url

    def write_pod_metric(self, namespace: str, pod: str, metric: str, value: float) -> None:
        request = urllib.request.Request(f"{self.write_url}/write-metrics/namespaces/{namespace}/pods/{pod}/{metric}",
                                         data=json.dumps(f"{value:g}").encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5):
            pass

    def read_pod_metrics(self, namespace: str, selector: str, metric: str) -> dict:
        """What the HPA controller reads: the custom metrics API through the kube-apiserver."""
        path = f"/apis/{METRICS_GROUP}/{METRICS_VERSION}/namespaces/{namespace}/pods/*/{metric}?labelSelector={selector}"
        return json.loads(kubectl("get", "--raw", path).stdout)


@contextlib.contextmanager
def custom_metrics_adapter(log_dir: pathlib.Path) -> Iterator[MetricsAdapter]:
    """Start the adapter on 127.0.0.1 and register it as the v1beta2.custom.metrics.k8s.io APIService: an
    ExternalName Service pointing the aggregator at 127.0.0.1 (no kube-proxy here), its CA as the caBundle."""
    binary = adapter_binary()
    kubeconfig = os.environ["KUBECONFIG"]
    secure_port, write_port = free_port(), free_port()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="neuron-e2e-metrics-"))
    ca, cert, key = serving_certificate(workdir, f"{ADAPTER_SERVICE}.{ADAPTER_NAMESPACE}.svc")
    log_path = log_dir / "metrics-adapter.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([
            str(binary), f"--secure-port={secure_port}", "--bind-address=127.0.0.1",
            f"--tls-cert-file={cert}", f"--tls-private-key-file={key}", f"--cert-dir={workdir}",
            f"--lister-kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", f"--write-address=127.0.0.1:{write_port}", "--v=2",
        ], stdout=out, stderr=subprocess.STDOUT)
    api_service = f"{METRICS_VERSION}.{METRICS_GROUP}"
    try:
        wait_until(lambda: proc.poll() is None and _answers(f"http://127.0.0.1:{write_port}/"), timeout=60,
                   message=f"metrics adapter up (log {log_path})")
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": ADAPTER_SERVICE, "namespace": ADAPTER_NAMESPACE},
             "spec": {"type": "ExternalName", "externalName": "127.0.0.1"}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": api_service},
             "spec": {"group": METRICS_GROUP, "version": METRICS_VERSION, "groupPriorityMinimum": 100,
                      "versionPriority": 200, "caBundle": _b64(ca.read_bytes()),
                      "service": {"namespace": ADAPTER_NAMESPACE, "name": ADAPTER_SERVICE, "port": secure_port}}},
        ]))
        wait_until(lambda: _available(api_service), timeout=90, message=f"APIService {api_service} Available")
        log(f"custom metrics API served by pid {proc.pid} on 127.0.0.1:{secure_port}")
        yield MetricsAdapter(f"http://127.0.0.1:{write_port}")
    finally:
        kubectl("delete", "apiservice", api_service, "--ignore-not-found", check=False)
        kubectl("delete", "service", ADAPTER_SERVICE, "-n", ADAPTER_NAMESPACE, "--ignore-not-found", check=False)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 404 from the write endpoint's router: it is listening
    except OSError:
        return False
    return True


def _available(api_service: str) -> Optional[dict]:
    obj = kubectl_json("get", "apiservice", api_service)
    ok = any(c["type"] == "Available" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))
    return obj if ok else None


class QueueReporter:
    """Every ``interval`` seconds, give each Running serving pod of a service its share of ``total`` waiting
    requests, as each pod's /metrics would say with a balanced load (what a scrape plus prometheus-adapter serve)."""

    def __init__(self, adapter: MetricsAdapter, namespace: str, service: str, interval: float = 2.0) -> None:
        self.adapter, self.namespace, self.service, self.interval = adapter, namespace, service, interval
        self.total = 0.0
        self.reported: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"queue-{service}", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> "QueueReporter":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.report_once()
            except (AssertionError, OSError, ValueError) as exc:  # a transient kubectl/HTTP failure: next round
                self.errors.append(str(exc)[:300])
            self._stop.wait(self.interval)

    def report_once(self) -> None:
        pods = kubectl_json("get", "pods", "-n", self.namespace, "-l",
                            f"inference.neuron-operator.io/service={self.service},app.kubernetes.io/component=serving")
        running = [p["metadata"]["name"] for p in pods["items"]
                   if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        share = self.total / len(running) if running else 0.0
        for pod in running:
            self.adapter.write_pod_metric(self.namespace, pod, QUEUE_METRIC, share)
        self.reported = {pod: share for pod in running}
