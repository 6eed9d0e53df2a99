"""A compile when every node of the type is serving, on the real scheduler: examples/llama.yaml's shape (TP 32 =
a whole trn1.32xlarge per replica, two replicas on the cluster's two trn1.32xlarge nodes), then the demo's own next
step, a maxModelLen change. With spec.runtime.lendReplicaToCompile the compile gets one replica's node and the
service rolls onto the new artifact at two replicas; without it, CompilePending says what to do."""

from __future__ import annotations

import pytest

from neuron_operator import constants as C

from . import nis
from .kube import kubectl, kubectl_json, wait_until

pytestmark = pytest.mark.usefixtures("operator")


def whole_node_service(name: str, lend: bool, **overrides):
    runtime = {"lendReplicaToCompile": True} if lend else {}
    return nis.service(name, tensorParallelSize=32, replicas=2, runtime=runtime, **overrides)


def patch_max_model_len(namespace: str, name: str, value: int) -> None:
    kubectl("patch", "-n", namespace, f"nis/{name}", "--type=merge",
            "-p", f'{{"spec":{{"engine":{{"maxModelLen":{value}}}}}}}')


def events(namespace: str, reason: str) -> list[dict]:
    return kubectl_json("get", "events", "-n", namespace, "--field-selector", f"reason={reason}")["items"]


def test_a_blocked_compile_borrows_a_replica_then_rolls_at_full_count(namespace, artifact_store):
    nis.apply(namespace, whole_node_service("llama", lend=True))
    old_key = nis.wait_ready(namespace, "llama", timeout=240)["status"]["artifact"]["key"]
    patch_max_model_len(namespace, "llama", 8192)

    lent = wait_until(lambda: events(namespace, "ReplicaLent"), timeout=120, message="a replica lent to the compile")
    assert "serving 1 of 2 replicas" in lent[0]["message"]
    during = nis.get(namespace, "llama")
    assert nis.deployment(namespace, "llama")["spec"]["replicas"] == 1
    assert during["status"]["servingArtifact"]["key"] == old_key

    def rolled():
        obj = nis.get(namespace, "llama")
        ready = nis.cond(obj, "Ready") or {}
        return (obj["status"].get("servingArtifact", {}).get("key") == obj["status"]["artifact"]["key"] != old_key
                and ready.get("status") == "True" and obj["status"].get("readyReplicas") == 2
                and obj["status"].get("phase") == "Ready" and obj)
    done = wait_until(rolled, timeout=300, message="the new artifact serving two replicas")
    dep = nis.deployment(namespace, "llama")
    assert dep["spec"]["replicas"] == 2 and C.ANNOTATION_LENT_TO_COMPILE not in dep["metadata"]["annotations"]
    assert nis.cond(done, "Reconciling")["status"] == "False"
    assert len(nis.compile_jobs(namespace)) == 2  # one compile per key, no retries


def test_without_lending_the_compile_waits_and_says_how_to_unblock_it(namespace, artifact_store):
    nis.apply(namespace, whole_node_service("llama", lend=False))
    nis.wait_ready(namespace, "llama", timeout=240)
    patch_max_model_len(namespace, "llama", 8192)
    obj = nis.wait_condition(namespace, "llama", "Compiled", "False", reason="CompilePending", timeout=120)
    message = nis.cond(obj, "Compiled")["message"]
    assert "Insufficient aws.amazon.com/neuron" in message
    assert "set spec.runtime.lendReplicaToCompile: true" in message
    assert nis.deployment(namespace, "llama")["spec"]["replicas"] == 2
    assert nis.cond(obj, "Ready")["status"] == "True"  # the previous artifact keeps serving both replicas
