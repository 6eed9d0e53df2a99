"""The reconcile pass end to end against the recording fake API: what it writes, that it reads nothing, and the
cases the e2e tier covers plus the ones it cannot (an object we do not own, conflicts, deletion mid-pass, a stale
cache, a restarted operator)."""

from __future__ import annotations

import pytest

from neuron_operator import constants as C
from neuron_operator.api.status import Reason
from neuron_operator.cache import DEPLOYMENT, SERVICE
from neuron_operator.executor import RetryLater

from .fakes import (deployment_available, job_complete, job_complete_after_success_criteria,
                    job_success_criteria_met)


def the_job(world):
    [job] = world.kube.of_kind("batch/v1", "Job")
    return job


def the_deployment(world):
    return world.kube.find("apps/v1", "Deployment", "ml", "llama")


def converge(world) -> None:
    """Compile done, Deployment available: the service ends Ready."""
    world.add_service()
    world.reconcile()
    job_complete(world.kube, the_job(world))
    world.watch()
    world.reconcile()
    deployment_available(world.kube, the_deployment(world))
    world.watch()
    world.reconcile()


def test_a_new_service_creates_its_compile_job_first_and_reads_nothing(world):
    world.add_service()
    result = world.reconcile()
    assert world.kube.reads() == 0
    assert [(v, k) for v, k, *_ in world.kube.requests] == [("create", "Job"), ("create", "Event"), ("patch", C.KIND)]
    assert result.compile_started and result.phase == "Compiling"
    assert the_deployment(world) is None  # nothing serves before the artifact exists
    job = the_job(world)
    assert job["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert world.condition("Compiled")["reason"] == Reason.COMPILING


def test_compiled_then_served_then_ready(world):
    world.add_service()
    world.reconcile()
    job_complete(world.kube, the_job(world))
    world.watch()
    result = world.reconcile()
    assert world.kube.reads() == 0
    assert sorted(k for v, k, *_ in world.kube.requests if v == "apply") == ["Deployment", "PodDisruptionBudget",
                                                                              "Service"]
    assert result.phase == "Deploying"
    assert world.condition("Reconciling")["status"] == "True"  # just applied: not rolled out, whatever it says
    events = [o["reason"] for o in world.kube.of_kind("v1", "Event")]
    assert "Compiled" in events
    deployment_available(world.kube, the_deployment(world))
    world.watch()
    result = world.reconcile()
    assert result.phase == "Ready" and world.kube.writes() == 2  # the status, and the Ready Event
    assert {o["reason"] for o in world.kube.of_kind("v1", "Event")} >= {"CompileStarted", "Compiled", "Ready"}


def test_one_status_write_per_step_even_as_the_job_controller_finishes_in_two(world):
    # Compiling -> Deploying -> Ready is three status writes: the pass that creates the Deployment reports it
    # (replicas, serving artifact, lastCompile) at once, and neither the Complete that follows SuccessCriteriaMet
    # nor the watch event of our own Deployment costs another write.
    def status_writes() -> int:
        return sum(1 for verb, kind, *_ in world.kube.requests if verb == "patch" and kind == C.KIND)

    world.add_service()
    world.reconcile()
    written = status_writes()
    job_success_criteria_met(world.kube, the_job(world))
    world.watch()
    result = world.reconcile()
    written += status_writes()
    status = world.service()["status"]
    assert result.phase == "Deploying" and result.status_written
    assert status["replicas"] == the_deployment(world)["spec"]["replicas"]
    assert status["servingArtifact"]["key"] == status["artifact"]["key"]
    assert status["lastCompile"]["finishedAt"] == "2026-12-01T00:05:00Z"
    job_complete_after_success_criteria(world.kube, the_job(world))
    world.watch()
    result = world.reconcile()
    assert not result.status_written and world.kube.writes() == 0
    world.watch()  # the status write's own watch event
    assert not world.reconcile().status_written
    deployment_available(world.kube, the_deployment(world))
    world.watch()
    assert world.reconcile().phase == "Ready"
    assert written + status_writes() == 3


def test_children_lost_with_a_terminating_namespace_are_not_recreated_or_reported(world):
    # Deleting a namespace deletes the children before the service: the API server refuses to recreate them
    # (403, cause NamespaceTerminating). The pass stops there: no retry, no status write.
    converge(world)
    world.kube.delete("apps/v1", "Deployment", "ml", "llama")
    world.cache.remove(DEPLOYMENT, "ml", "llama")  # the watch's DELETED event
    world.kube.fail_next("apply", "Deployment", 403, 'deployments.apps "llama" is forbidden: unable to create new '
                         "content in namespace ml because it is being terminated", causes=("NamespaceTerminating",))
    status = world.service()["status"]
    result = world.reconcile()
    assert result.requeue_after is None and not result.status_written
    assert [(v, k) for v, k, *_ in world.kube.requests] == [("apply", "Deployment")]
    assert world.service()["status"] == status


def test_any_other_forbidden_apply_is_not_swallowed(world):
    converge(world)
    world.kube.delete("apps/v1", "Deployment", "ml", "llama")
    world.cache.remove(DEPLOYMENT, "ml", "llama")  # the watch's DELETED event
    world.kube.fail_next("apply", "Deployment", 403, "RBAC says no")
    with pytest.raises(Exception, match="RBAC says no"):
        world.reconcile()


def test_an_idle_pass_costs_nothing(world):
    converge(world)
    world.watch()
    world.reconcile()
    assert world.kube.requests == []


def test_a_restarted_operator_applies_nothing_already_in_place(world):
    converge(world)
    world.restart()
    world.reconcile()
    assert world.kube.requests == []


def test_a_non_compile_change_rolls_without_a_new_job(world):
    converge(world)
    world.update_spec(replicas=3)
    world.reconcile()
    assert [k for v, k, *_ in world.kube.requests if v in ("apply", "create")] == ["Deployment"]
    assert len(world.kube.of_kind("batch/v1", "Job")) == 1
    assert the_deployment(world)["spec"]["replicas"] == 3


def test_a_compile_input_change_compiles_before_the_pods_roll(world):
    converge(world)
    old_key = the_deployment(world)["metadata"]["labels"][C.LABEL_ARTIFACT_KEY]
    world.update_spec(engine={"maxModelLen": 8192})
    world.reconcile()
    jobs = world.kube.of_kind("batch/v1", "Job")
    assert len(jobs) == 2
    assert the_deployment(world)["metadata"]["labels"][C.LABEL_ARTIFACT_KEY] == old_key  # still the old artifact
    assert world.condition("Ready")["reason"] == Reason.SERVING_OLD_ARTIFACT
    new_job = next(j for j in jobs if j["metadata"]["labels"][C.LABEL_ARTIFACT_KEY] != old_key)
    job_complete(world.kube, new_job)
    world.watch()
    world.reconcile()
    assert the_deployment(world)["metadata"]["labels"][C.LABEL_ARTIFACT_KEY] == new_job["metadata"]["labels"][
        C.LABEL_ARTIFACT_KEY]


def test_a_deployment_we_do_not_own_is_never_taken_over(world):
    world.kube.put({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "llama", "namespace": "ml", "labels": {"team": "theirs"}},
                    "spec": {"replicas": 1}})
    world.watch()
    world.add_service()
    result = world.reconcile()
    stalled = world.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", Reason.CHILD_CONFLICT)
    assert "Deployment ml/llama" in stalled["message"]
    assert world.kube.writes() == 2 and not result.applied  # the status and its Stalled Event, nothing else
    assert the_deployment(world)["metadata"]["labels"] == {"team": "theirs"}
    assert world.kube.of_kind("batch/v1", "Job") == []


def test_leftovers_of_a_deleted_same_named_service_are_waited_for_not_stalled(world):
    world.kube.put({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "llama", "namespace": "ml", "ownerReferences": [
                        {"apiVersion": C.GROUP_VERSION, "kind": C.KIND, "name": "llama", "uid": "old-uid",
                         "controller": True}]},
                    "spec": {"replicas": 1}})
    world.watch()
    world.add_service()
    result = world.reconcile()
    assert world.condition("Stalled")["status"] == "False"
    assert result.requeue_after is not None
    job_complete(world.kube, the_job(world))
    world.watch()
    world.reconcile()
    assert not any(v == "apply" and k == "Deployment" for v, k, *_ in world.kube.requests)


def test_a_shared_job_another_service_created_is_adopted(world):
    """The cache has not seen the Job yet (stale): create answers 409, the one live read finds it, we co-own it."""
    world.add_service()
    world.add_service(name="twin", uid="twin-uid")
    world.reconcile(name="twin")  # twin creates the shared Job; llama's cache never sees it (no watch)
    world.cache.remove(("batch/v1", "Job"), "ml", the_job(world)["metadata"]["name"])
    world.reconcile()
    verbs = [(v, k) for v, k, *_ in world.kube.requests]
    assert ("create", "Job") in verbs and ("get", "Job") in verbs and ("patch", "Job") in verbs
    assert world.kube.reads() == 1  # the named live read, nothing else
    owners = {r["uid"] for r in the_job(world)["metadata"]["ownerReferences"]}
    assert owners == {"svc-uid", "twin-uid"} and len(world.kube.of_kind("batch/v1", "Job")) == 1


def test_a_status_conflict_retries_from_the_newer_object(world):
    world.add_service()
    world.kube.fail_next("patch", C.KIND, 409)
    with pytest.raises(RetryLater):
        world.reconcile()


def test_a_service_deleted_mid_pass_ends_the_pass_quietly(world):
    world.add_service()
    world.kube.objects[(C.GROUP_VERSION, C.KIND)].clear()  # gone from the API, the cache has not heard yet
    result = world.reconcile()
    assert not result.status_written  # the 404 on the status patch is "nothing left to report on"


def test_a_service_gone_from_the_cache_costs_nothing(world):
    world.add_service()
    world.cache.remove(SERVICE, "ml", "llama")
    world.reconcile()
    assert world.kube.requests == []


def test_a_stale_cached_deployment_is_applied_again_harmlessly(world):
    converge(world)
    stale = the_deployment(world)
    world.update_spec(replicas=2)
    world.reconcile()
    world.cache.upsert(DEPLOYMENT, {**stale, "metadata": {**stale["metadata"], "resourceVersion": "1"}})
    world.reconcile()
    assert the_deployment(world)["spec"]["replicas"] == 2


def test_an_edit_of_a_field_we_own_is_put_back(world):
    converge(world)
    live = world.kube.objects[("apps/v1", "Deployment")][("ml", "llama")]
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest"
    world.watch()
    world.reconcile()
    assert [k for v, k, *_ in world.kube.requests if v == "apply"] == ["Deployment"]
    assert the_deployment(world)["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "public.ecr.aws/neuron-operator/neuron-runtime")


def test_a_field_we_stopped_setting_triggers_an_apply(world):
    converge(world)
    world.update_spec(runtime={"podAnnotations": {"team": "a"}})
    world.reconcile()
    world.update_spec(runtime={})
    world.watch()
    world.reconcile()
    # The live object still holds the old annotation (contains() alone would call it unchanged); the hash differs.
    assert [k for v, k, *_ in world.kube.requests if v == "apply"] == ["Deployment"]


def test_a_child_the_api_server_rejects_is_reported_and_the_rest_goes_on(world):
    world.add_service()
    world.reconcile()
    job_complete(world.kube, the_job(world))
    world.watch()
    world.kube.fail_next("apply", "Service", 422, "spec.ports[1].name: Duplicate value")
    world.reconcile()
    stalled = world.condition("Stalled")
    assert stalled["reason"] == Reason.CHILD_REJECTED and "Duplicate value" in stalled["message"]
    assert the_deployment(world) is not None and world.kube.find("policy/v1", "PodDisruptionBudget", "ml", "llama")


def test_an_invalid_spec_creates_nothing_and_says_what_to_change(world):
    world.add_service(tensorParallelSize=3)
    world.reconcile()
    stalled = world.condition("Stalled")
    assert stalled["status"] == "True" and "spec.tensorParallelSize" in stalled["message"]
    assert world.kube.of_kind("batch/v1", "Job") == [] and the_deployment(world) is None


def test_an_invalid_update_leaves_what_serves_alone(world):
    converge(world)
    before = the_deployment(world)
    world.update_spec(tensorParallelSize=3)
    world.reconcile()
    assert the_deployment(world) == before
    assert world.condition("Ready")["status"] == "True" and world.condition("Stalled")["status"] == "True"
    assert world.service()["status"]["endpoint"]  # the previous endpoint is still reported


def test_a_cache_miss_on_a_serving_pod_is_stalled(world):
    converge(world)
    world.kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "llama-abc", "namespace": "ml",
        "labels": {C.LABEL_SERVICE: "llama", C.LABEL_COMPONENT: C.COMPONENT_SERVING, C.LABEL_MANAGED_BY: C.MANAGED_BY}},
        "status": {"phase": "Running", "containerStatuses": [{"name": "engine", "lastState": {"terminated": {
            "exitCode": 6, "message": "compile-cache miss serving artifact k"}}}]}})
    dep = the_deployment(world)
    world.kube.set_status("apps/v1", "Deployment", "ml", "llama", {**dep["status"], "availableReplicas": 0,
                                                                    "readyReplicas": 0})
    world.watch()
    world.reconcile()
    assert world.condition("Stalled")["reason"] == Reason.ARTIFACT_CACHE_MISS


def test_the_written_status_goes_through_the_status_model(world):
    world.add_service()
    world.reconcile()
    status = world.service()["status"]
    from neuron_operator.api.status import NeuronInferenceServiceStatus

    model = NeuronInferenceServiceStatus.model_validate(status)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == status


def test_multi_node_on_the_2_23_stack_warns_once_in_status_and_an_event(world):
    world.add_service(tensorParallelSize=64, nodesPerReplica=2)
    world.reconcile()
    [warning] = world.service()["status"]["warnings"]
    assert "multi-node tensor parallelism on neuron-2.23-vllm-0.7.2 is experimental upstream" in warning
    events = [(o["type"], o["reason"]) for o in world.kube.of_kind("v1", "Event")]
    assert events.count(("Warning", "ExperimentalFeature")) == 1
    world.watch()
    world.reconcile()  # the same warning again: no second Event, no status write
    assert [(o["type"], o["reason"]) for o in world.kube.of_kind("v1", "Event")].count(
        ("Warning", "ExperimentalFeature")) == 1


def test_single_node_services_carry_no_warnings(world):
    converge(world)
    assert "warnings" not in world.service()["status"]
    assert not any(o["reason"] == "ExperimentalFeature" for o in world.kube.of_kind("v1", "Event"))
