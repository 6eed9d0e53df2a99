"""Benchmark: time from `kubectl apply` to children created and to Ready, and API writes per service.

Runs against the local control plane (started if needed) with its own operator process watching bench-*
namespaces, creates N services one after another (each in a fresh namespace with its own artifact PVC), and prints
the median/min/max times and the operator's API requests per service by verb (from its metrics endpoint).
Measures, never asserts: `make bench` or `python -m tests.bench.bench_converge --services 7`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.kube import free_port
from tests.e2e.nis import artifact_store_manifests

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTENV = pathlib.Path(os.environ.get("TESTENV_DIR", ROOT / ".testenv"))
WRITE_VERBS = ("create", "apply", "patch", "update", "delete")


def sh(*args: str, input: str | None = None) -> str:
    return subprocess.run(args, input=input, capture_output=True, text=True, check=True).stdout


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "neuron_operator_api_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    verb = sample.labels["verb"]
                    out[verb] = out.get(verb, 0) + sample.value
    return out


def requests_between(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {v: int(after.get(v, 0) - before.get(v, 0)) for v in sorted(set(after) | set(before))}


def store_manifests(namespace: str) -> str:
    return artifact_store_manifests(namespace, f"bench-{namespace}")


def cluster_with_crds() -> None:
    """Start (or reuse) the local control plane, point kubectl at it and install the CRD."""
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), "up"], check=True)
    bin_dir = sh(str(ROOT / "hack" / "testenv-build.sh")).strip().splitlines()[-1]
    os.environ["KUBECONFIG"] = str(TESTENV / "kubeconfig")
    os.environ["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    sh("kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "neuroninferenceservices.yaml"))


def start_operator(name: str) -> tuple[subprocess.Popen, int, object]:
    """The operator as users run it, watching bench-* namespaces; returns (process, metrics port, log file)
    once its metrics endpoint answers."""
    metrics_port, health_port = free_port(), free_port()
    log = open(TESTENV / f"operator-{name}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuron_operator.cli", "run", "--namespace=bench-*", "--standalone",
         f"--liveness=http://127.0.0.1:{health_port}/healthz"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NEURON_OPERATOR_METRICS_PORT": str(metrics_port),
                                                   "NEURON_OPERATOR_METRICS_ADDRESS": "127.0.0.1"})
    deadline = time.monotonic() + 60
    while True:
        try:
            scrape(metrics_port)
            return proc, metrics_port, log
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"operator did not start; see {log.name}") from None
            time.sleep(0.2)


def service_manifest(namespace: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "inference.neuron-operator.io/v1alpha1", "kind": "NeuronInferenceService",
        "metadata": {"name": "llama", "namespace": namespace},
        "spec": {"model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "instanceType": "trn1.32xlarge",
                 "tensorParallelSize": 8, "replicas": 2, "artifacts": {"pvc": {"claimName": "artifacts"}}},
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=5)
    args = parser.parse_args()

    cluster_with_crds()

    from neuron_operator.kube import KubeClient  # the operator's own client: fast polling without kubectl forks

    client = KubeClient()
    operator, metrics_port, log = start_operator("bench")
    try:
        to_children, to_ready, writes, requests, teardown = [], [], [], [], []
        for i in range(args.services):
            ns = f"bench-{uuid.uuid4().hex[:6]}"
            sh("kubectl", "create", "namespace", ns)
            sh("kubectl", "apply", "-f", "-", input=store_manifests(ns))
            before = scrape(metrics_port)
            start = time.monotonic()
            sh("kubectl", "apply", "-f", "-", input=service_manifest(ns))
            children_at = ready_at = None
            while time.monotonic() - start < 120:
                if children_at is None and client.list("batch/v1", "Job", ns):
                    children_at = time.monotonic() - start
                obj = client.get("inference.neuron-operator.io/v1alpha1", "NeuronInferenceService", ns, "llama")
                status = (obj or {}).get("status") or {}
                if status.get("phase") == "Ready" and status.get("observedGeneration") == obj["metadata"]["generation"]:
                    ready_at = time.monotonic() - start
                    break
                time.sleep(0.05)
            time.sleep(3)  # let trailing events settle, then count what converging cost
            after = scrape(metrics_port)
            delta = requests_between(before, after)
            to_children.append(children_at)
            to_ready.append(ready_at)
            writes.append(sum(delta.get(v, 0) for v in WRITE_VERBS))
            requests.append(delta)
            print(f"service {i + 1}: children after {children_at:.2f}s, Ready after {ready_at:.2f}s, "
                  f"API requests {delta}", flush=True)
            # Wait for the namespace to go, so what its deletion costs the operator (children lost before the service,
            # refused with NamespaceTerminating) is counted here, not against the next service.
            before = scrape(metrics_port)
            sh("kubectl", "delete", "namespace", ns, "--wait=true", "--timeout=120s")
            time.sleep(1)
            teardown.append({v: n for v, n in requests_between(before, scrape(metrics_port)).items()
                             if v in WRITE_VERBS and n})
            sh("kubectl", "delete", "pv", f"bench-{ns}", "--wait=false")
        print()
        print(f"apply -> first child (compile Job): median {statistics.median(to_children):.2f}s "
              f"(min {min(to_children):.2f}, max {max(to_children):.2f}) over {args.services} services")
        print(f"apply -> Ready:                     median {statistics.median(to_ready):.2f}s "
              f"(min {min(to_ready):.2f}, max {max(to_ready):.2f})")
        print(f"API writes to converge one service: median {statistics.median(writes)} "
              f"(min {min(writes)}, max {max(writes)}); verbs of the median run: {requests[writes.index(sorted(writes)[len(writes) // 2])]}")
        print(f"API writes while its namespace is deleted: {teardown}")
    finally:
        operator.terminate()
        operator.wait(timeout=20)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
