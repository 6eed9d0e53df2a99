"""spec.autoscaling through the reconciler and the recording fake API: the autoscaler is applied once something
serves, swapped when the operator's provider changes, deleted when spec.autoscaling goes; the operator never writes
spec.replicas (the autoscaler does, through /scale) and scaling down to zero and back up never recompiles."""

from __future__ import annotations

from neuron_operator import constants as C
from neuron_operator.api.status import Reason
from neuron_operator.cache import HPA, SCALED_OBJECT, STATEFULSET
from neuron_operator.config import OperatorConfig

from .conftest import World
from .fakes import deployment_available, job_complete

SCALING = {"minReplicas": 0, "maxReplicas": 4, "targetQueueDepth": 5, "scaleDownStabilizationSeconds": 60}
HPA_CONFIG = OperatorConfig(autoscaling_provider=C.AUTOSCALER_HPA)
KEDA_CONFIG = OperatorConfig(autoscaling_provider=C.AUTOSCALER_KEDA,
                             prometheus_server_address="http://prometheus.monitoring.svc:9090")


def converge(world: World, name: str = "llama") -> None:
    """Compile done and every replica available: Ready."""
    world.reconcile(name)
    for job in world.kube.of_kind("batch/v1", "Job"):
        job_complete(world.kube, job)
    world.watch()
    world.reconcile(name)
    deployment = world.kube.find("apps/v1", "Deployment", "ml", name)
    if deployment is not None:
        deployment_available(world.kube, deployment)
    world.watch()
    world.reconcile(name)
    world.watch()


def autoscaler_scales(world: World, replicas: int, name: str = "llama") -> None:
    """What the HPA controller or KEDA does through the scale subresource: a new spec.replicas (a new generation)."""
    world.update_spec(name, replicas=replicas)


def applied(world: World) -> list[str]:
    return sorted(k for v, k, *_ in world.kube.requests if v == "apply")


def test_the_hpa_is_applied_once_something_serves_and_targets_the_service():
    world = World(HPA_CONFIG)
    world.add_service(autoscaling=SCALING)
    world.reconcile()
    assert world.kube.of_kind(*HPA) == []  # compiling: nothing to scale yet
    converge(world)
    [hpa] = world.kube.of_kind(*HPA)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": C.GROUP_VERSION, "kind": C.KIND, "name": "llama"}
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 4  # an HPA cannot hold 0
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert world.kube.of_kind(*SCALED_OBJECT) == []
    world.reconcile()
    assert world.kube.requests == []  # idle with an autoscaler: no request at all


def test_the_autoscaler_drives_replicas_and_the_operator_only_carries_them_to_the_workload():
    world = World(HPA_CONFIG)
    world.add_service(autoscaling=SCALING)
    converge(world)
    key = world.service()["status"]["artifact"]["key"]
    autoscaler_scales(world, 3)
    world.reconcile()
    assert applied(world) == ["Deployment"]
    assert world.kube.find("apps/v1", "Deployment", "ml", "llama")["spec"]["replicas"] == 3
    # Every request was the Deployment apply or the status: nothing touched the service's spec.
    assert {(v, k) for v, k, *_ in world.kube.requests} <= {("apply", "Deployment"), ("patch", C.KIND),
                                                            ("create", "Event")}
    assert world.service()["spec"]["replicas"] == 3
    assert len(world.kube.of_kind("batch/v1", "Job")) == 1
    assert world.service()["status"]["artifact"]["key"] == key


def test_scaled_to_zero_keeps_the_artifacts_reports_it_and_scaling_up_never_recompiles():
    world = World(KEDA_CONFIG)
    world.add_service(autoscaling=SCALING)
    converge(world)
    [job] = world.kube.of_kind("batch/v1", "Job")
    key = world.service()["status"]["artifact"]["key"]

    autoscaler_scales(world, 0)
    world.reconcile()
    deployment = world.kube.find("apps/v1", "Deployment", "ml", "llama")
    assert deployment["spec"]["replicas"] == 0
    deployment_available(world.kube, deployment)
    world.watch()
    world.reconcile()
    status = world.service()["status"]
    assert (status["phase"], status["replicas"], status["readyReplicas"]) == ("Ready", 0, 0)
    assert world.condition("Ready")["reason"] == world.condition("Available")["reason"] == Reason.SCALED_TO_ZERO
    assert world.condition("Compiled")["status"] == "True" and world.condition("Reconciling")["status"] == "False"

    autoscaler_scales(world, 2)
    world.reconcile()
    assert not [r for r in world.kube.requests if r[:2] == ("create", "Job")]
    assert [j["metadata"]["uid"] for j in world.kube.of_kind("batch/v1", "Job")] == [job["metadata"]["uid"]]
    deployment = world.kube.find("apps/v1", "Deployment", "ml", "llama")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["labels"][C.LABEL_ARTIFACT_KEY] == key  # the same compiled artifact
    deployment_available(world.kube, deployment)
    world.watch()
    world.reconcile()
    assert world.service()["status"]["phase"] == "Ready" and world.service()["status"]["readyReplicas"] == 2


def test_a_provider_change_swaps_the_autoscaler_kind():
    world = World(KEDA_CONFIG)
    world.add_service(autoscaling=SCALING)
    converge(world)
    [scaled_object] = world.kube.of_kind(*SCALED_OBJECT)
    assert scaled_object["spec"]["minReplicaCount"] == 0
    world.config = HPA_CONFIG  # the operator restarted with another provider
    world.restart()
    world.reconcile()
    assert ("delete", C.SCALED_OBJECT_KIND, "ml", "llama") in world.kube.requests
    assert applied(world) == [C.HPA_KIND]
    assert world.kube.of_kind(*SCALED_OBJECT) == [] and len(world.kube.of_kind(*HPA)) == 1


def test_removing_spec_autoscaling_deletes_the_autoscaler_and_keeps_the_replicas():
    world = World(HPA_CONFIG)
    world.add_service(autoscaling=SCALING)
    converge(world)
    autoscaler_scales(world, 3)
    world.reconcile()
    world.watch()
    obj = world.service()
    del obj["spec"]["autoscaling"]
    obj["metadata"]["generation"] += 1
    world.cache.upsert(("inference.neuron-operator.io/v1alpha1", C.KIND), world.kube.replace(obj))
    world.reconcile()
    assert [r for r in world.kube.requests if r[0] == "delete"] == [("delete", C.HPA_KIND, "ml", "llama")]
    assert world.kube.find("apps/v1", "Deployment", "ml", "llama")["spec"]["replicas"] == 3


def test_an_autoscaler_we_did_not_create_is_never_taken_over():
    world = World(HPA_CONFIG)
    theirs = {"apiVersion": C.HPA_API_VERSION, "kind": C.HPA_KIND,
              "metadata": {"name": "llama", "namespace": "ml", "labels": {}},
              "spec": {"scaleTargetRef": {"kind": C.KIND, "name": "llama"}, "maxReplicas": 2}}
    world.cache.upsert(HPA, world.kube.put(theirs))
    world.add_service(autoscaling=SCALING)
    world.reconcile()
    assert world.condition("Stalled")["reason"] == Reason.CHILD_CONFLICT
    assert "HorizontalPodAutoscaler ml/llama" in world.condition("Stalled")["message"]
    assert {(v, k) for v, k, *_ in world.kube.requests} == {("patch", C.KIND), ("create", "Event")}  # nothing else


def test_someone_elses_hpa_is_left_alone_when_we_make_a_scaled_object_or_none():
    for config, scaling in ((KEDA_CONFIG, SCALING), (HPA_CONFIG, None)):
        world = World(config)
        theirs = {"apiVersion": C.HPA_API_VERSION, "kind": C.HPA_KIND,
                  "metadata": {"name": "llama", "namespace": "ml"}, "spec": {"maxReplicas": 2}}
        world.cache.upsert(HPA, world.kube.put(theirs))
        world.add_service(**({"autoscaling": scaling} if scaling else {}))
        converge(world)
        assert world.service()["status"]["phase"] == "Ready"
        assert len(world.kube.of_kind(*HPA)) == 1 and not [r for r in world.kube.requests if r[0] == "delete"]


def test_a_multi_node_service_scales_by_whole_groups_down_to_zero_and_back_without_recompiling():
    world = World(HPA_CONFIG)
    world.add_service(tensorParallelSize=64, nodesPerReplica=2, replicas=2, autoscaling=SCALING)
    converge(world)
    assert sorted(s["metadata"]["name"] for s in world.kube.of_kind("apps/v1", "StatefulSet")) == [
        "llama-g0", "llama-g1"]
    status = world.service()["status"]
    # The HPA counts leaders only: one pod per group, so its replica arithmetic is in groups.
    assert status["selector"] == (f"{C.LABEL_COMPONENT}={C.COMPONENT_SERVING},{C.LABEL_POD_INDEX}=0,"
                                  f"{C.LABEL_SERVICE}=llama")
    [job] = world.kube.of_kind("batch/v1", "Job")

    autoscaler_scales(world, 0)
    world.reconcile()
    assert sorted(r for r in world.kube.requests if r[0] == "delete") == [
        ("delete", "StatefulSet", "ml", "llama-g0"), ("delete", "StatefulSet", "ml", "llama-g1")]
    assert world.condition("Reconciling")["status"] == "True"  # until the groups are gone
    for name in ("llama-g0", "llama-g1"):  # their DELETED watch events
        world.cache.remove(STATEFULSET, "ml", name)
    world.reconcile()
    assert world.kube.find("v1", "Service", "ml", "llama-peers") is not None
    assert world.condition("Ready")["reason"] == Reason.SCALED_TO_ZERO
    assert world.service()["status"]["phase"] == "Ready" and world.service()["status"]["replicas"] == 0

    autoscaler_scales(world, 1)
    world.reconcile()
    assert [r[3] for r in world.kube.requests if r[:2] == ("apply", "StatefulSet")] == ["llama-g0"]
    assert [j["metadata"]["uid"] for j in world.kube.of_kind("batch/v1", "Job")] == [job["metadata"]["uid"]]
