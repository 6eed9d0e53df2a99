"""spec.autoscaling on the real control plane.

* The HPA provider end to end: the real HPA controller (kube-controller-manager) reads vllm:num_requests_waiting
  per serving pod from a real custom metrics API server behind the aggregation layer (tests/e2e/autoscaling.py
  says what is simulated: only the values), writes the service's spec.replicas through its scale subresource, and
  the operator carries that to the Deployment: up with the queue, down after the stabilization window, without a
  recompile and without the operator ever writing spec.replicas.
* The KEDA provider: KEDA's own CRD (from its Go module, read from the module cache) validates the ScaledObjects we
  build, server side; a service's ScaledObject is applied and accepted; scaling to zero (what KEDA does through
  /scale) keeps the artifact, reports Ready/ScaledToZero, and scaling back up reuses the compile Job.
"""

from __future__ import annotations

import copy
import time
import uuid

import pytest
import yaml

from neuron_operator.catalog import load_catalog
from neuron_operator.config import OperatorConfig
from neuron_operator.render import render_documents

from . import kstatus
from .autoscaling import QUEUE_METRIC, QueueReporter, custom_metrics_adapter, keda_crd, log
from .conftest import ROOT, run_operator
from .kube import kubectl, kubectl_json, wait_until
from .nis import apply, compile_jobs, create_artifact_store, deployment, get, service, wait_condition, wait_ready

PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"  # KEDA's trigger target (no KEDA controller runs here)
SERVICE_LABEL = "inference.neuron-operator.io/service"


@pytest.fixture(scope="module")
def metrics_adapter(cluster):
    with custom_metrics_adapter(cluster["dir"]) as adapter:
        yield adapter


@pytest.fixture(scope="module")
def keda_crds(cluster):
    path = keda_crd()
    kubectl("apply", "--server-side", "-f", str(path))
    kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s")
    yield path
    kubectl("delete", "-f", str(path), "--ignore-not-found", "--wait=true", check=False, timeout=120)


@pytest.fixture(scope="module")
def keda_operator(cluster, crds, keda_crds):
    """An operator configured as a KEDA user would (provider keda, a Prometheus address), on iso-keda-* only."""
    env = {"NEURON_OPERATOR_AUTOSCALING_PROVIDER": "keda", "NEURON_OPERATOR_PROMETHEUS_SERVER_ADDRESS": PROMETHEUS}
    with run_operator("iso-keda-*", "operator-keda-e2e.log", env) as running:
        yield running


@pytest.fixture
def keda_namespace(keda_operator):
    name = f"iso-keda-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    pv = create_artifact_store(name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
    kubectl("delete", "pv", pv, "--wait=false", check=False)


def rendered(example_doc: dict, config: OperatorConfig, namespace: str) -> list[dict]:
    return list(yaml.safe_load_all(render_documents([example_doc], load_catalog(), config, namespace)))


def example(**spec_changes) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / "llama-autoscaling.yaml").read_text())
    doc["spec"].update(spec_changes)
    return doc


def server_dry_run(namespace: str, obj: dict, check: bool = True):
    return kubectl("apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", "-",
                   input=yaml.safe_dump(obj), check=check)


def managers_of_spec_replicas(managed_fields: list[dict]) -> list[tuple[str, str]]:
    """(manager, subresource) of every managedFields entry that owns spec.replicas."""
    return [(m["manager"], m.get("subresource", "")) for m in managed_fields
            if "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})]


# --- HPA provider: the real HPA controller drives the service ------------------------------------------------


def test_the_hpa_controller_scales_a_service_on_its_queue_and_back(operator, namespace, artifact_store,
                                                                   metrics_adapter):
    name = "queue"
    # The session operator runs with autoscaling.provider auto and no Prometheus address: it makes HPAs.
    apply(namespace, service(name, claim=artifact_store, autoscaling={
        "minReplicas": 1, "maxReplicas": 6, "targetQueueDepth": 5, "scaleDownStabilizationSeconds": 15}))
    wait_ready(namespace, name)
    hpa = wait_until(lambda: kubectl_json("get", "hpa", name, "-n", namespace), timeout=30, message="the HPA")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "inference.neuron-operator.io/v1alpha1",
                                             "kind": "NeuronInferenceService", "name": name}
    [job] = compile_jobs(namespace)
    key = get(namespace, name)["status"]["artifact"]["key"]
    selector = get(namespace, name)["status"]["selector"]

    with QueueReporter(metrics_adapter, namespace, name) as queue:
        queue.total = 20  # one replica with 20 waiting at a target of 5: ceil(20 / 5) = 4 replicas
        served = wait_until(lambda: metrics_adapter.read_pod_metrics(namespace, selector, QUEUE_METRIC)["items"],
                            timeout=30, message="the queue metric through the aggregation layer")
        assert served[0]["value"] == "20" and served[0]["describedObject"]["kind"] == "Pod"
        started = time.monotonic()
        wait_until(lambda: (o := get(namespace, name))["spec"]["replicas"] == 4
                   and o["status"].get("readyReplicas") == 4 and o["status"].get("phase") == "Ready" and o,
                   timeout=180, interval=1, message="the HPA scaling the service to 4 ready replicas")
        log(f"scaled up 1 -> 4 (ceil(20/5)) in {time.monotonic() - started:.0f}s")
        assert deployment(namespace, name)["spec"]["replicas"] == 4
        # 4 replicas at 5 waiting each is the target: it stays at 4, not at maxReplicas 6.
        time.sleep(20)
        assert get(namespace, name)["spec"]["replicas"] == 4
        hpa = kubectl_json("get", "hpa", name, "-n", namespace)
        assert hpa["status"]["currentMetrics"][0]["pods"]["current"]["averageValue"] == "5"
        assert set(queue.reported) == {p["metadata"]["name"] for p in kubectl_json(
            "get", "pods", "-n", namespace, "-l", f"{SERVICE_LABEL}={name}")["items"]}

        queue.total = 0
        started = time.monotonic()
        wait_until(lambda: (o := get(namespace, name))["spec"]["replicas"] == 1
                   and o["status"].get("readyReplicas") == 1 and o,
                   timeout=180, interval=1, message="the HPA scaling the service back to minReplicas")
        log(f"scaled down 4 -> 1 in {time.monotonic() - started:.0f}s (stabilization window 15s)")

    final = get(namespace, name)
    assert [j["metadata"]["uid"] for j in compile_jobs(namespace)] == [job["metadata"]["uid"]]  # never recompiled
    assert final["status"]["artifact"]["key"] == final["status"]["servingArtifact"]["key"] == key
    # spec.replicas was written by the HPA controller through /scale; the operator only ever wrote the status.
    fields = kubectl_json("get", "nis", name, "-n", namespace, "--show-managed-fields")["metadata"]["managedFields"]
    assert ("kube-controller-manager", "scale") in managers_of_spec_replicas(fields)
    assert [m.get("subresource") for m in fields if m["manager"] == "neuron-operator"] == ["status"]


def test_the_real_api_server_accepts_our_hpa_and_would_refuse_minimum_zero(namespace):
    config = OperatorConfig(autoscaling_provider="hpa")
    [hpa] = [d for d in rendered(example(), config, namespace) if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["minReplicas"] == 1  # the example asks for 0
    server_dry_run(namespace, hpa)
    raw = copy.deepcopy(hpa)
    raw["spec"]["minReplicas"] = 0
    refused = server_dry_run(namespace, raw, check=False)
    # Kubernetes 1.37: "must specify at least one Object or External metric to support scaling to zero replicas".
    assert refused.returncode != 0 and "scaling to zero" in refused.stderr, refused.stderr


# --- KEDA provider: KEDA's CRD schema is the judge ------------------------------------------------------------


def test_keda_crds_accept_the_scaled_objects_we_build(keda_crds, namespace):
    config = OperatorConfig(autoscaling_provider="keda", prometheus_server_address=PROMETHEUS)
    multinode = yaml.safe_load((ROOT / "examples" / "llama-405b-multinode.yaml").read_text())
    multinode["spec"]["autoscaling"] = {"maxReplicas": 2}
    variants = {
        "example (min 0)": example(),
        "min above zero": example(autoscaling={"minReplicas": 2, "maxReplicas": 8, "targetQueueDepth": 1,
                                               "scaleDownStabilizationSeconds": 0}),
        "multi-node groups": multinode,
    }
    for what, doc in variants.items():
        [scaled_object] = [d for d in rendered(doc, config, namespace) if d["kind"] == "ScaledObject"]
        result = server_dry_run(namespace, scaled_object, check=False)
        assert result.returncode == 0, f"{what}: {result.stderr}"
    # The schema really is enforced: what it forbids is refused (so the acceptances above mean something).
    broken = copy.deepcopy(scaled_object)
    broken["spec"]["minReplicaCount"] = -1
    broken["spec"]["triggers"] = []
    refused = server_dry_run(namespace, broken, check=False)
    assert refused.returncode != 0 and "minReplicaCount" in refused.stderr and "triggers" in refused.stderr


def test_a_keda_service_gets_its_scaled_object_scales_to_zero_and_back_without_recompiling(keda_namespace):
    ns, name = keda_namespace, "idle"
    apply(ns, service(name, autoscaling={"minReplicas": 0, "maxReplicas": 3, "targetQueueDepth": 4}))
    wait_ready(ns, name)
    scaled_object = wait_until(lambda: kubectl_json("get", "scaledobject", name, "-n", ns), timeout=30,
                               message="the ScaledObject")
    spec = scaled_object["spec"]
    assert spec["scaleTargetRef"]["kind"] == "NeuronInferenceService" and spec["minReplicaCount"] == 0
    assert spec["triggers"][0]["metadata"]["query"] == (
        f'sum(vllm:num_requests_waiting{{namespace="{ns}",model_name="meta-llama/Llama-3.1-8B-Instruct"}})')
    assert kubectl("get", "hpa", "-n", ns, "-o", "name").stdout.strip() == ""  # one autoscaler, KEDA's kind
    [job] = compile_jobs(ns)

    # What KEDA does once the queue has been empty for cooldownPeriod: spec.replicas 0 through /scale.
    kubectl("scale", "nis", name, "-n", ns, "--replicas=0")
    zero = wait_condition(ns, name, "Ready", reason="ScaledToZero", timeout=60)
    wait_until(lambda: not kubectl_json("get", "pods", "-n", ns, "-l", f"{SERVICE_LABEL}={name}")["items"],
               timeout=60, message="no serving pod left")
    zero = wait_until(lambda: (o := get(ns, name))["status"].get("phase") == "Ready" and o, timeout=30,
                      message="phase Ready at zero")
    assert deployment(ns, name)["spec"]["replicas"] == 0
    assert (zero["status"]["replicas"], zero["status"]["readyReplicas"]) == (0, 0)
    assert next(c for c in zero["status"]["conditions"] if c["type"] == "Compiled")["status"] == "True"
    assert kstatus.compute(zero).status == kstatus.CURRENT  # Flux/kpt: done, nothing in progress

    kubectl("scale", "nis", name, "-n", ns, "--replicas=2")
    back = wait_until(lambda: (o := get(ns, name))["status"].get("readyReplicas") == 2
                      and o["status"].get("phase") == "Ready" and o, timeout=90, message="2 ready replicas again")
    assert [j["metadata"]["uid"] for j in compile_jobs(ns)] == [job["metadata"]["uid"]]  # no recompile
    assert back["status"]["servingArtifact"]["key"] == zero["status"]["artifact"]["key"]
