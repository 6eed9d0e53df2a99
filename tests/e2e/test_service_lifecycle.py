"""NeuronInferenceService end to end on the real control plane: compile once, serve from artifacts, roll only
after a recompile, share compiles, report failures, scale, and clean up."""

from __future__ import annotations

import json

import pytest

from . import nis
from .kube import kubectl, kubectl_json, wait_until

pytestmark = pytest.mark.usefixtures("operator")


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_single_node_service_compiles_then_serves(namespace, artifact_store):
    nis.apply(namespace, nis.service("llama", replicas=2, tensorParallelSize=32))
    # kubectl wait is what users run; it must work against our status.
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "nis/llama", "--timeout=180s", timeout=190)
    obj = nis.wait_ready(namespace, "llama")
    status = obj["status"]
    key = status["artifact"]["key"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "Compiled": "True", "Available": "True", "Reconciling": "False", "Stalled": "False"}
    assert status["artifact"]["location"] == f"pvc://artifacts/{key}"
    assert status["servingArtifact"]["key"] == key
    assert status["endpoint"] == f"http://llama.{namespace}.svc.cluster.local:8000/v1"
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)

    [job] = nis.compile_jobs(namespace)
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
    assert job["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"] == key

    dep = nis.deployment(namespace, "llama")
    pod_spec = dep["spec"]["template"]["spec"]
    engine = pod_spec["containers"][0]
    assert engine["resources"]["limits"]["aws.amazon.com/neuron"] == "16"  # TP 32 on trn1: 16 devices
    assert pod_spec["nodeSelector"]["node.kubernetes.io/instance-type"] == "trn1.32xlarge"
    assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in pod_spec["tolerations"]
    env = env_of(engine)
    assert env["NEURON_COMPILED_ARTIFACTS"] == f"/var/lib/neuron-operator/artifacts/{key}"
    assert json.loads(env["NEURON_OPERATOR_COMPILE_SPEC"])["tp_degree"] == 32
    assert engine["startupProbe"]["httpGet"]["path"] == "/health"
    mounts = {m["name"]: m for m in engine["volumeMounts"]}
    assert mounts["artifacts"]["readOnly"] is True and mounts["dshm"]["mountPath"] == "/dev/shm"
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}

    pods = kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=serving")["items"]
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(pods) == 2 and all(n.startswith("trn1-32xlarge-") for n in nodes)
    svc = kubectl_json("get", "service", "llama", "-n", namespace)
    assert svc["spec"]["ports"][0]["port"] == 8000
    kubectl("get", "pdb", "llama", "-n", namespace)
    events = kubectl_json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=llama")["items"]
    assert {"CompileStarted", "Compiled", "Ready"} <= {e["reason"] for e in events}


def test_identical_compile_inputs_share_one_job(namespace, artifact_store):
    nis.apply(namespace, nis.service("alpha", replicas=1))
    nis.apply(namespace, nis.service("beta", replicas=2, runtime={"podLabels": {"team": "b"}}))
    a, b = nis.wait_ready(namespace, "alpha"), nis.wait_ready(namespace, "beta")
    assert a["status"]["artifact"]["key"] == b["status"]["artifact"]["key"]
    [job] = nis.compile_jobs(namespace)
    owners = {ref["name"] for ref in job["metadata"]["ownerReferences"]}
    assert owners == {"alpha", "beta"}


def test_non_compile_changes_never_recompile(namespace, artifact_store):
    nis.apply(namespace, nis.service("stable", replicas=1))
    key = nis.wait_ready(namespace, "stable")["status"]["artifact"]["key"]
    nis.apply(namespace, nis.service("stable", replicas=2, runtime={
        "podLabels": {"tier": "gold"}, "resources": {"requests": {"cpu": "64"}}}))
    obj = nis.wait_ready(namespace, "stable")
    assert obj["status"]["artifact"]["key"] == key
    assert len(nis.compile_jobs(namespace)) == 1
    dep = nis.deployment(namespace, "stable")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["metadata"]["labels"]["tier"] == "gold"
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "64"


def test_compile_input_change_compiles_before_rolling(namespace, artifact_store):
    slow = {"podAnnotations": nis.SLOW_COMPILE}
    nis.apply(namespace, nis.service("roll", runtime=slow))
    old_key = nis.wait_ready(namespace, "roll", timeout=240)["status"]["artifact"]["key"]
    nis.apply(namespace, nis.service("roll", runtime=slow, engine={"maxNumSeqs": 8, "maxModelLen": 8192}))

    compiling = nis.wait_condition(namespace, "roll", "Compiled", "False", timeout=60)
    new_key = compiling["status"]["artifact"]["key"]
    assert new_key != old_key
    # While the new artifact compiles, the old one keeps serving and the service stays Ready.
    assert nis.cond(compiling, "Ready")["status"] == "True"
    assert nis.cond(compiling, "Reconciling")["status"] == "True"
    assert compiling["status"]["servingArtifact"]["key"] == old_key
    dep = nis.deployment(namespace, "roll")
    assert dep["spec"]["template"]["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"] == old_key
    assert len(nis.compile_jobs(namespace)) == 2

    done = nis.wait_ready(namespace, "roll", timeout=240)
    assert done["status"]["servingArtifact"]["key"] == new_key
    dep = nis.deployment(namespace, "roll")
    assert dep["spec"]["template"]["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"] == new_key
    assert json.loads(env_of(dep["spec"]["template"]["spec"]["containers"][0])["NEURON_OPERATOR_COMPILE_SPEC"])[
        "max_model_len"] == 8192


def test_failed_compile_retries_then_stalls_and_old_revision_keeps_serving(namespace, artifact_store):
    nis.apply(namespace, nis.service("fragile"))
    old_key = nis.wait_ready(namespace, "fragile")["status"]["artifact"]["key"]
    failing = {"podAnnotations": nis.failing_compile("OOMKilled", 137, "neuronx-cc was killed")}
    nis.apply(namespace, nis.service("fragile", runtime=failing, engine={"maxNumSeqs": 16, "maxModelLen": 4096}))

    stalled = nis.wait_condition(namespace, "fragile", "Stalled", "True", reason="CompileFailed", timeout=240)
    message = nis.cond(stalled, "Stalled")["message"]
    assert "OOMKilled (exit 137)" in message and "neuronx-cc was killed" in message
    assert "3 attempt" in message  # backoffLimit 2: the Job controller retried twice with backoff
    assert "raise spec.runtime.compileResources.limits.memory (now 108Gi)" in message  # an OOM kill says what to raise
    assert nis.cond(stalled, "Ready")["status"] == "True"
    assert stalled["status"]["servingArtifact"]["key"] == old_key
    assert stalled["status"]["phase"] == "Degraded"
    dep = nis.deployment(namespace, "fragile")
    assert dep["spec"]["template"]["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"] == old_key
    assert dep["status"].get("availableReplicas") == 1


def test_a_compile_that_cannot_fit_its_memory_fails_at_once_naming_the_field(namespace, artifact_store):
    # The runtime's preflight exit code (the checkpoint exceeds the pod's memory limit) is permanent: the Job's
    # podFailurePolicy fails it on the first attempt instead of spending the backoff.
    text = ("the checkpoint to compile is 130.4 GiB but the compile pod's memory limit is 108.0 GiB; set "
            "spec.runtime.compileResources.limits.memory (and requests.memory) to at least 277Gi")
    failing = {"podAnnotations": nis.failing_compile("Error", 8, text)}
    nis.apply(namespace, nis.service("tight", runtime=failing))
    stalled = nis.wait_condition(namespace, "tight", "Stalled", "True", reason="CompileFailed", timeout=120)
    message = nis.cond(stalled, "Stalled")["message"]
    assert "failed after 1 attempt(s): Error (exit 8)" in message and "at least 277Gi" in message
    [job] = nis.compile_jobs(namespace)
    assert job["status"].get("failed") == 1
    assert any(c["type"] == "Failed" and c["reason"] == "PodFailurePolicy" for c in job["status"]["conditions"])
    assert kubectl_json("get", "deployments", "-n", namespace)["items"] == []


def test_scale_subresource_and_cleanup(namespace, artifact_store):
    nis.apply(namespace, nis.service("scaled"))
    nis.wait_ready(namespace, "scaled")
    kubectl("scale", "-n", namespace, "nis/scaled", "--replicas=3")
    obj = wait_until(lambda: (o := nis.get(namespace, "scaled"))["status"].get("readyReplicas") == 3 and o,
                     timeout=120, message="3 ready replicas")
    assert obj["spec"]["replicas"] == 3
    assert nis.deployment(namespace, "scaled")["spec"]["replicas"] == 3
    assert len(nis.compile_jobs(namespace)) == 1

    kubectl("delete", "-n", namespace, "nis/scaled", "--wait=true", timeout=60)

    def children_gone():
        left = kubectl_json("get", "deployments,services,pdb,jobs,pods", "-n", namespace,
                            "-l", "app.kubernetes.io/managed-by=neuron-operator")["items"]
        return not left
    wait_until(children_gone, timeout=90, message="garbage collection of every child")
    # the artifact store (a cache) is untouched
    kubectl("get", "pvc", artifact_store, "-n", namespace)


def test_manual_edits_to_children_are_reverted(namespace, artifact_store):
    nis.apply(namespace, nis.service("drift"))
    nis.wait_ready(namespace, "drift")
    kubectl("label", "deployment", "drift", "-n", namespace, "app.kubernetes.io/name=someone-else",
            "--overwrite")
    kubectl("patch", "pdb", "drift", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxUnavailable":5}}')
    wait_until(lambda: nis.deployment(namespace, "drift")["metadata"]["labels"]["app.kubernetes.io/name"]
               == "neuron-inference-service", timeout=60, message="Deployment label restored")
    wait_until(lambda: kubectl_json("get", "pdb", "drift", "-n", namespace)["spec"]["maxUnavailable"] == 1,
               timeout=60, message="PDB restored")
    kubectl("delete", "service", "drift", "-n", namespace)
    wait_until(lambda: kubectl("get", "service", "drift", "-n", namespace, check=False).returncode == 0,
               timeout=60, message="Service recreated")
