"""Read the children's state into the plain observations conditions.py works on. Pure: objects in, observations
out (the objects come from the watch cache, see snapshot.py)."""

from __future__ import annotations

import datetime
from typing import Any, Iterable, Mapping, Optional

from neuron_runtime import constants as runtime_constants
from neuron_runtime.compile_spec import CompileSpec

from . import constants as C
from .api.status import CompileOutcome
from .conditions import (JOB_FAILED, JOB_MISSING, JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED, CompileObservation,
                         CompileResult, RuntimeFailure, ServingObservation)
from .plan import compile_spec_from_annotation

Obj = Mapping[str, Any]

# Deployment condition Progressing's reason once a rollout has finished (k8s.io/kubernetes
# pkg/controller/deployment/util/deployment_util.go NewRSAvailableReason).
DEPLOYMENT_ROLLOUT_COMPLETE = "NewReplicaSetAvailable"

# The runtime's exit codes that no restart can fix (runtime/neuron_runtime/constants.py): a serving pod that ends
# with one of them makes the service Stalled instead of leaving it to crash-loop unexplained.
PERMANENT_SERVING_EXIT_CODES = (runtime_constants.EXIT_BAD_SPEC, runtime_constants.EXIT_ARTIFACT_INVALID,
                                runtime_constants.EXIT_CACHE_MISS, runtime_constants.EXIT_FABRIC_UNAVAILABLE)


def _job_condition(job: Obj, type_: str) -> Optional[Obj]:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def _parse_time(value: Any) -> Optional[datetime.datetime]:
    """An RFC 3339 timestamp as the API server writes it ("2026-12-01T00:00:00Z"), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))  # 3.10's fromisoformat lacks "Z"
    except ValueError:
        return None


def job_outcome(job: Obj) -> tuple[Optional[str], Optional[Obj]]:
    """The Job's outcome (a CompileOutcome, or None while it runs) and the condition that first told it.

    The Job controller (Kubernetes >= 1.31) first adds an interim condition (SuccessCriteriaMet, FailureTarget),
    terminates what is left, then adds the terminal one (Complete with status.completionTime, Failed) and keeps
    both; an API server without interim conditions sets only the terminal one.
    """
    success = _job_condition(job, "SuccessCriteriaMet") or _job_condition(job, "Complete")
    if success is not None:
        return CompileOutcome.SUCCEEDED, success
    failure = _job_condition(job, "FailureTarget") or _job_condition(job, "Failed")
    if failure is not None:
        return CompileOutcome.FAILED, failure
    return None, None


def compile_finished(job: Obj) -> Optional[CompileResult]:
    """The outcome and timing of a compile Job that has reached its outcome (job_outcome), else None.

    Timed by the condition that first told the outcome, which the Job keeps once the terminal one follows: the pass
    that sees the interim condition already acts on it (observe_compile), so status.lastCompile is written once,
    with the rollout it starts, not once more when Complete arrives. Read from the Job alone, so every pass and every
    operator process computes the same result, and the compile-duration metric observes the value the status shows.
    """
    outcome, told = job_outcome(job)
    if outcome is None or told is None:
        return None
    status, meta = job.get("status") or {}, job.get("metadata") or {}
    finished_at = told.get("lastTransitionTime")
    if told.get("type") == "Complete":  # no interim condition: completionTime is the Job's own finish time
        finished_at = status.get("completionTime") or finished_at
    started = _parse_time(status.get("startTime") or meta.get("creationTimestamp"))
    finished = _parse_time(finished_at)
    duration = max(0, round((finished - started).total_seconds())) if started and finished else None
    return CompileResult(job_name=meta.get("name", ""), outcome=outcome,
                         key=(meta.get("labels") or {}).get(C.LABEL_ARTIFACT_KEY), duration_seconds=duration,
                         finished_at=finished_at if finished else None)


def describe_pod_failure(pod: Obj) -> str:
    """'OOMKilled (exit 137): <termination message>' from the pod's terminated container, else its reason."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            text = f"{terminated.get('reason') or 'Error'} (exit {terminated.get('exitCode')})"
            message = (terminated.get("message") or "").strip()
            if message:
                text += f": {message.splitlines()[-1][:300]}"
            return text
    status = pod.get("status") or {}
    return status.get("reason") or status.get("message") or "pod failed"


def unschedulable_detail(pods: Iterable[Obj]) -> str:
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("message"):
                return f"pod {pod['metadata']['name']} unschedulable: {cond['message']}"
    return ""


def observe_compile(job_name: str, job: Optional[Obj], pods: Iterable[Obj]) -> CompileObservation:
    """The compile Job's state; ``pods`` are its pods (failure detail, scheduling messages)."""
    if job is None or job["metadata"].get("deletionTimestamp"):
        return CompileObservation(job_name=job_name, state=JOB_MISSING)
    pods = list(pods)
    status = job.get("status") or {}
    failed_pods = int(status.get("failed") or 0)
    attempts = failed_pods + int(status.get("succeeded") or 0) + int(status.get("active") or 0)
    finished = compile_finished(job)
    memory_limit = _compile_memory_limit(job)
    outcome, failed_cond = job_outcome(job)
    if outcome == CompileOutcome.SUCCEEDED:
        return CompileObservation(job_name=job_name, state=JOB_SUCCEEDED, attempts=attempts, finished=finished)
    failure = _latest_pod_failure(pods) if failed_pods else ""
    if outcome == CompileOutcome.FAILED and failed_cond is not None:
        if failed_cond.get("reason") == "DeadlineExceeded":
            failure = f"deadline of {job['spec'].get('activeDeadlineSeconds')}s exceeded" + (f"; last: {failure}" if failure else "")
        return CompileObservation(job_name=job_name, state=JOB_FAILED, attempts=failed_pods,
                                  failure=failure or failed_cond.get("message", "Job failed"), finished=finished,
                                  memory_limit=memory_limit)
    state = JOB_RUNNING if int(status.get("ready") or 0) > 0 else JOB_PENDING
    detail = f"retrying after: {failure}" if failure else ""
    # A compile pod that cannot be scheduled (devices held by serving pods, no node of the instance type) would
    # otherwise look like a silent hang.
    unschedulable = unschedulable_detail(pods) if state == JOB_PENDING else ""
    return CompileObservation(job_name=job_name, state=state, attempts=attempts, failure=detail,
                              unschedulable=unschedulable)


def _compile_memory_limit(job: Obj) -> str:
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return str(((containers[0].get("resources") or {}).get("limits") or {}).get("memory") or "")


def compile_summary(pods: Iterable[Obj]) -> str:
    """What the succeeded compile pod reported (its termination message, e.g. "compiled 12 graphs ... in 310s")."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Succeeded":
            continue
        for status in pod["status"].get("containerStatuses") or []:
            message = ((status.get("state") or {}).get("terminated") or {}).get("message") or ""
            if message.strip():
                return " ".join(message.split())[:500]
    return ""


def _latest_pod_failure(pods: list[Obj]) -> str:
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if not failed:
        return ""
    failed.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    return describe_pod_failure(failed[-1])


def serving_pod_failure(pod: Obj) -> Optional[RuntimeFailure]:
    """The permanent runtime failure a serving pod's container last ended with, if any."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in ((status.get("state") or {}).get("terminated"), (status.get("lastState") or {}).get("terminated")):
            if state and state.get("exitCode") in PERMANENT_SERVING_EXIT_CODES:
                message = " ".join((state.get("message") or "").split())[:600]
                return RuntimeFailure(pod=pod["metadata"]["name"], exit_code=int(state["exitCode"]), message=message)
    return None


def first_failure(pods: Iterable[Obj]) -> Optional[RuntimeFailure]:
    return next((f for f in map(serving_pod_failure, pods) if f is not None), None)


def observe_deployment(deployment: Optional[Obj], pods: Iterable[Obj]) -> ServingObservation:
    """The Deployment's replica counts; ``pods`` are its serving pods (scheduling and runtime failures)."""
    if deployment is None or deployment["metadata"].get("deletionTimestamp"):
        return ServingObservation(exists=False)
    spec, status, meta = deployment.get("spec") or {}, deployment.get("status") or {}, deployment["metadata"]
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    rolled_out = (int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
                  and updated == desired and int(status.get("replicas") or 0) == desired)
    detail, failure = "", None
    if available < desired or updated < desired:
        pods = list(pods)
        detail = unschedulable_detail(pods)
        failure = first_failure(pods)
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None)
    return ServingObservation(
        exists=True,
        artifact_key=(meta.get("labels") or {}).get(C.LABEL_ARTIFACT_KEY),
        # The Deployment controller says NewReplicaSetAvailable once every replica of the new template has been
        # available, and keeps it when a pod is lost later; without the condition (none written yet, or an object
        # not from the controller) fall back to the replica counts alone.
        rollout_complete=progressing is None or progressing.get("reason") == DEPLOYMENT_ROLLOUT_COMPLETE,
        desired=desired,
        ready=int(status.get("readyReplicas") or 0),
        available=available,
        updated=updated,
        rolled_out=rolled_out,
        unavailable_reason=detail,
        failure=failure,
    )


def serving_compile_spec(workload: Optional[Obj]) -> Optional[CompileSpec]:
    if workload is None:
        return None
    return compile_spec_from_annotation((workload["metadata"].get("annotations") or {}).get(C.ANNOTATION_COMPILE_SPEC))


def serving_instance_type(workload: Optional[Obj]) -> Optional[str]:
    if workload is None:
        return None
    selector: dict[str, Any] = ((workload.get("spec") or {}).get("template") or {}).get("spec", {}).get("nodeSelector") or {}
    return selector.get(C.INSTANCE_TYPE_LABEL)
