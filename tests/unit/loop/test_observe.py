"""Observations of the children, pure: the compile Job's states and failure detail, the Deployment's counts, the
runtime failures of serving pods, the compile pod's summary."""

from __future__ import annotations

from neuron_operator.conditions import (JOB_FAILED, JOB_MISSING, JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED,
                                        CompileResult)
from neuron_operator.observe import (compile_finished, compile_summary, observe_compile, observe_deployment,
                                     serving_pod_failure)


def job(status: dict, deleting: bool = False) -> dict:
    meta = {"name": "nis-compile-1", "namespace": "ml"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": meta, "spec": {"activeDeadlineSeconds": 14400}, "status": status}


def pod(phase: str, terminated: dict | None = None, unschedulable: str = "", created: str = "t1") -> dict:
    status: dict = {"phase": phase}
    if terminated:
        status["containerStatuses"] = [{"name": "compile", "state": {"terminated": terminated}}]
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "message": unschedulable}]
    return {"metadata": {"name": f"p-{phase}-{created}", "creationTimestamp": created}, "status": status}


def test_compile_states():
    assert observe_compile("j", None, []).state == JOB_MISSING
    assert observe_compile("j", job({}, deleting=True), []).state == JOB_MISSING
    assert observe_compile("j", job({"ready": 1, "active": 1}), []).state == JOB_RUNNING
    done = observe_compile("j", job({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}), [])
    assert (done.state, done.attempts) == (JOB_SUCCEEDED, 1)


def test_pending_compile_says_why_it_cannot_be_scheduled():
    obs = observe_compile("j", job({"active": 1}), [pod("Pending", unschedulable="0/9 nodes are available")])
    assert obs.state == JOB_PENDING and "unschedulable: 0/9 nodes are available" in obs.unschedulable


def test_failed_compile_reports_the_latest_pod_failure():
    pods = [pod("Failed", {"exitCode": 1, "reason": "Error", "message": "old"}, created="t1"),
            pod("Failed", {"exitCode": 137, "reason": "OOMKilled", "message": "raise compileResources"}, created="t2")]
    obs = observe_compile("j", job({"failed": 2, "conditions": [{"type": "Failed", "status": "True"}]}), pods)
    assert obs.state == JOB_FAILED and obs.failure == "OOMKilled (exit 137): raise compileResources"
    deadline = observe_compile("j", job({"conditions": [{"type": "Failed", "status": "True",
                                                         "reason": "DeadlineExceeded"}]}), [])
    assert deadline.failure.startswith("deadline of 14400s exceeded")


def test_compile_summary_is_the_succeeded_pods_message():
    pods = [pod("Failed", {"exitCode": 1, "message": "no"}), pod("Succeeded", {"exitCode": 0, "message": "compiled 3 graphs"})]
    assert compile_summary(pods) == "compiled 3 graphs"
    assert compile_summary([pod("Running")]) == ""


def deployment(replicas=2, available=2, updated=2, generation=3, observed=3) -> dict:
    return {"metadata": {"name": "llama", "namespace": "ml", "generation": generation,
                         "labels": {"inference.neuron-operator.io/artifact-key": "k1"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {}}},
            "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                       "readyReplicas": available, "availableReplicas": available}}


def test_deployment_rolled_out_only_when_the_controller_saw_the_latest_generation():
    assert observe_deployment(deployment(), []).rolled_out
    assert not observe_deployment(deployment(observed=2), []).rolled_out
    assert not observe_deployment(deployment(updated=1), []).rolled_out
    assert observe_deployment(None, []).exists is False


def test_a_first_rollout_coming_up_is_not_a_lost_replica():
    # Two replicas, one available: while the controller still says ReplicaSetUpdated the service is Deploying; once
    # it has said NewReplicaSetAvailable, the same counts mean a replica was lost (Degraded).
    from neuron_operator.conditions import JOB_SUCCEEDED, CompileObservation, StatusInputs, compute_status

    def phase(reason):
        obj = deployment(available=1)
        obj["status"]["conditions"] = [{"type": "Progressing", "status": "True", "reason": reason}]
        obs = observe_deployment(obj, [])
        inputs = StatusInputs(generation=1, replicas=2, key="k1", artifact_location="pvc://a/k1",
                              compile=CompileObservation("j", JOB_SUCCEEDED), serving=obs)
        return obs.rollout_complete, compute_status(inputs, None, "2026-12-01T00:00:00Z")["phase"]

    assert phase("ReplicaSetUpdated") == (False, "Deploying")
    assert phase("NewReplicaSetAvailable") == (True, "Degraded")
    assert observe_deployment(deployment(available=1), []).rollout_complete  # no condition: the counts decide


def test_unavailable_deployment_reads_its_pods_for_the_reason():
    crashing = {"metadata": {"name": "llama-x"}, "status": {"containerStatuses": [
        {"lastState": {"terminated": {"exitCode": 3, "message": "artifact   incomplete"}}}]}}
    obs = observe_deployment(deployment(available=1), [crashing, pod("Pending", unschedulable="Insufficient")])
    assert obs.failure.exit_code == 3 and obs.failure.message == "artifact incomplete"
    assert "unschedulable: Insufficient" in obs.unavailable_reason


def test_only_permanent_exit_codes_are_runtime_failures():
    def crashed(code):
        return {"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": code}}}]}}

    assert [serving_pod_failure(crashed(c)) is not None for c in (1, 2, 3, 4, 5, 6, 7, 137)] == [
        False, True, True, False, False, True, True, False]


# --- compile outcome and duration (status.lastCompile and the compile-duration metric) -------------------------

def timed_job(conditions: list[dict], **status) -> dict:
    obj = job({"conditions": conditions, **status})
    obj["metadata"].update(creationTimestamp="2026-12-01T00:00:00Z",
                           labels={"inference.neuron-operator.io/artifact-key": "k1"})
    return obj


def test_a_succeeded_job_is_timed_to_its_first_success_condition_which_it_keeps():
    # The Job controller adds SuccessCriteriaMet, then Complete (with completionTime) once the pod is gone: both
    # readings give one result, so status.lastCompile is written once, with the rollout the first one starts.
    interim = timed_job([{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-12-01T00:21:40Z"}],
                        startTime="2026-12-01T00:00:05Z", succeeded=1)
    final = timed_job([{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-12-01T00:21:40Z"},
                       {"type": "Complete", "status": "True", "lastTransitionTime": "2026-12-01T00:21:45Z"}],
                      startTime="2026-12-01T00:00:05Z", completionTime="2026-12-01T00:21:45Z", succeeded=1)
    result = CompileResult(job_name="nis-compile-1", outcome="Succeeded", key="k1", duration_seconds=1295,
                           finished_at="2026-12-01T00:21:40Z")
    assert compile_finished(interim) == compile_finished(final) == result
    assert observe_compile("nis-compile-1", interim, []).finished == result
    assert observe_compile("nis-compile-1", interim, []).state == "Succeeded"


def test_without_interim_conditions_complete_times_the_compile():
    obj = timed_job([{"type": "Complete", "status": "True", "lastTransitionTime": "2026-12-01T00:30:00Z"}],
                    startTime="2026-12-01T00:00:05Z", completionTime="2026-12-01T00:21:45Z", succeeded=1)
    assert compile_finished(obj).duration_seconds == 1300  # completionTime, not the condition's time


def test_a_failed_job_is_timed_to_its_failure_target_which_it_keeps():
    interim = [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                "lastTransitionTime": "2026-12-01T00:09:00Z"}]
    final = interim + [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                        "lastTransitionTime": "2026-12-01T00:10:00Z"}]
    for conditions in (interim, final):
        obj = timed_job(conditions, startTime="2026-12-01T00:00:00Z", failed=3)
        result = compile_finished(obj)
        assert (result.outcome, result.duration_seconds, result.finished_at) == ("Failed", 540, "2026-12-01T00:09:00Z")
        assert observe_compile("j", obj, []).finished == result
    only_failed = timed_job(final[1:], startTime="2026-12-01T00:00:00Z", failed=3)
    assert compile_finished(only_failed).duration_seconds == 600


def test_a_compile_without_an_outcome_condition_has_not_finished():
    assert compile_finished(timed_job([])) is None
    assert compile_finished(timed_job([{"type": "Complete", "status": "False"}])) is None
    assert compile_finished(timed_job([{"type": "SuccessCriteriaMet", "status": "False"}])) is None
    assert observe_compile("j", timed_job([], active=1), []).finished is None


def test_a_job_without_start_time_is_timed_from_its_creation_and_bad_times_give_no_duration():
    created = timed_job([{"type": "Failed", "status": "True", "lastTransitionTime": "2026-12-01T00:00:42Z"}])
    assert compile_finished(created).duration_seconds == 42
    garbled = timed_job([{"type": "Complete", "status": "True"}], completionTime="yesterday")
    assert compile_finished(garbled) == CompileResult(job_name="nis-compile-1", outcome="Succeeded", key="k1")
