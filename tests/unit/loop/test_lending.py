"""spec.runtime.lendReplicaToCompile through the reconciler and the fake API: a compile blocked by serving pods gets
one replica's node, the lending holds until the compile ends (even across an operator restart), then the service
rolls onto the new artifact at the full count; off, CompilePending says how to unblock it."""

from __future__ import annotations

from neuron_operator import constants as C
from neuron_operator.api.status import Reason
from neuron_operator.cache import JOB_NAME_LABEL

from .fakes import deployment_available, job_complete

OLD_LEN, NEW_LEN = 4096, 8192


def deployment(world):
    return world.kube.find("apps/v1", "Deployment", "ml", "llama")


def serve_replicas(world, lend: bool, replicas: int = 2) -> None:
    runtime = {"lendReplicaToCompile": True} if lend else {}
    world.add_service(replicas=replicas, tensorParallelSize=32, engine={"maxModelLen": OLD_LEN}, runtime=runtime)
    world.reconcile()
    [job] = world.kube.of_kind("batch/v1", "Job")
    job_complete(world.kube, job)
    world.watch()
    world.reconcile()
    deployment_available(world.kube, deployment(world))
    world.watch()
    world.reconcile()
    assert world.service()["status"]["phase"] == "Ready"


def new_compile_job(world) -> dict:
    old = deployment(world)["metadata"]["labels"][C.LABEL_ARTIFACT_KEY]
    return next(j for j in world.kube.of_kind("batch/v1", "Job") if j["metadata"]["labels"][C.LABEL_ARTIFACT_KEY] != old)


def compile_pod(world, job: dict, *, unschedulable: bool) -> dict:
    scheduled = ({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                  "message": "0/9 nodes are available: 2 Insufficient aws.amazon.com/neuron."} if unschedulable
                 else {"type": "PodScheduled", "status": "True"})
    name = job["metadata"]["name"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{name}-abcde", "namespace": "ml", "uid": "compile-pod",
                        "labels": {JOB_NAME_LABEL: name}},
           "status": {"phase": "Pending" if unschedulable else "Running", "conditions": [scheduled]}}
    found = world.kube.find("v1", "Pod", "ml", pod["metadata"]["name"])
    return world.kube.replace({**pod, "metadata": {**pod["metadata"], "resourceVersion": found["metadata"][
        "resourceVersion"]}}) if found else world.kube.put(pod)


def change_a_compile_input(world) -> dict:
    world.update_spec(engine={"maxModelLen": NEW_LEN})
    world.reconcile()
    job = new_compile_job(world)
    compile_pod(world, job, unschedulable=True)
    world.watch()
    return job


def test_a_blocked_compile_borrows_one_replica_then_the_service_rolls_at_full_count(world):
    serve_replicas(world, lend=True)
    job = change_a_compile_input(world)
    world.reconcile()
    dep = deployment(world)
    assert dep["spec"]["replicas"] == 1  # one replica's node for the compile
    assert dep["metadata"]["annotations"][C.ANNOTATION_LENT_TO_COMPILE] == job["metadata"]["name"]
    assert dep["metadata"]["labels"][C.LABEL_ARTIFACT_KEY] != job["metadata"]["labels"][C.LABEL_ARTIFACT_KEY]
    [lent] = [e for e in world.kube.of_kind("v1", "Event") if e["reason"] == "ReplicaLent"]
    assert "serving 1 of 2 replicas" in lent["message"]
    deployment_available(world.kube, dep)
    world.watch()
    world.reconcile()
    assert world.condition("Ready")["status"] == "True"  # meant to serve one fewer: still Ready, on the old artifact
    assert world.condition("Ready")["reason"] == Reason.SERVING_OLD_ARTIFACT
    compiled = world.condition("Compiled")
    assert compiled["reason"] == Reason.COMPILING
    assert "one serving replica's node is lent to it (1 of 2 replicas serve the previous artifact" in compiled["message"]
    assert world.service()["status"]["phase"] == "Compiling"

    # the compile pod is placed on the freed node: the lending holds (also for a restarted operator)
    compile_pod(world, job, unschedulable=False)
    world.watch()
    world.restart()
    world.reconcile()
    assert deployment(world)["spec"]["replicas"] == 1
    assert [e["reason"] for e in world.kube.of_kind("v1", "Event")].count("ReplicaLent") == 1

    job_complete(world.kube, job)
    world.watch()
    world.reconcile()
    dep = deployment(world)
    assert dep["spec"]["replicas"] == 2 and C.ANNOTATION_LENT_TO_COMPILE not in dep["metadata"]["annotations"]
    assert dep["metadata"]["labels"][C.LABEL_ARTIFACT_KEY] == job["metadata"]["labels"][C.LABEL_ARTIFACT_KEY]


def test_a_failed_compile_gives_the_node_back(world):
    serve_replicas(world, lend=True)
    job = change_a_compile_input(world)
    world.reconcile()
    assert deployment(world)["spec"]["replicas"] == 1
    meta = job["metadata"]
    world.kube.set_status("batch/v1", "Job", meta["namespace"], meta["name"], {
        "failed": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
    world.watch()
    world.reconcile()
    assert deployment(world)["spec"]["replicas"] == 2
    assert world.condition("Stalled")["reason"] == Reason.COMPILE_FAILED


def test_off_the_compile_waits_and_says_how_to_unblock_it(world):
    serve_replicas(world, lend=False)
    change_a_compile_input(world)
    world.reconcile()
    assert deployment(world)["spec"]["replicas"] == 2
    compiled = world.condition("Compiled")
    assert compiled["reason"] == Reason.COMPILE_PENDING
    assert "Insufficient aws.amazon.com/neuron" in compiled["message"]
    assert "set spec.runtime.lendReplicaToCompile: true" in compiled["message"]


def test_the_last_replica_is_never_lent(world):
    serve_replicas(world, lend=True, replicas=1)
    change_a_compile_input(world)
    world.reconcile()
    assert deployment(world)["spec"]["replicas"] == 1
    assert world.condition("Compiled")["reason"] == Reason.COMPILE_PENDING


def test_a_pending_replica_is_not_what_gets_lent(world):
    # 3 wanted, 2 running (the third has no node): lending must free a node, so 1 serves meanwhile.
    serve_replicas(world, lend=True)
    world.update_spec(replicas=3)
    world.reconcile()
    dep = deployment(world)
    meta = dep["metadata"]
    world.kube.set_status("apps/v1", "Deployment", "ml", "llama", {
        "observedGeneration": meta["generation"], "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2,
        "availableReplicas": 2})
    world.watch()
    change_a_compile_input(world)
    world.reconcile()
    assert deployment(world)["spec"]["replicas"] == 1
    assert "serving 1 of 3 replicas" in next(e for e in world.kube.of_kind("v1", "Event")
                                              if e["reason"] == "ReplicaLent")["message"]
