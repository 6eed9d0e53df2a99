"""Read the children's state into the plain observations conditions.py works on."""

from __future__ import annotations

from typing import Any, Optional

from neuron_runtime import constants as runtime_constants
from neuron_runtime.compile_spec import CompileSpec

from . import constants as C
from .conditions import (JOB_FAILED, JOB_MISSING, JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED, CompileObservation,
                         RuntimeFailure, ServingObservation)
from .kube import KubeClient
from .plan import compile_spec_from_annotation

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _job_condition(job: dict, type_: str) -> Optional[dict]:
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def describe_pod_failure(pod: dict) -> str:
    """'OOMKilled (exit 137): <termination message>' from the pod's terminated container, else its reason."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            text = f"{terminated.get('reason') or 'Error'} (exit {terminated.get('exitCode')})"
            message = (terminated.get("message") or "").strip()
            if message:
                text += f": {message.splitlines()[-1][:300]}"
            return text
    status = pod.get("status", {})
    return status.get("reason") or status.get("message") or "pod failed"


def observe_compile(client: KubeClient, namespace: str, job_name: str, job: Optional[dict]) -> CompileObservation:
    if job is None or job["metadata"].get("deletionTimestamp"):
        return CompileObservation(job_name=job_name, state=JOB_MISSING)
    status = job.get("status") or {}
    failed_pods = int(status.get("failed") or 0)
    attempts = failed_pods + int(status.get("succeeded") or 0) + int(status.get("active") or 0)
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        return CompileObservation(job_name=job_name, state=JOB_SUCCEEDED, attempts=attempts)
    failure = ""
    if failed_pods:
        failure = _latest_pod_failure(client, namespace, job_name)
    failed_cond = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if failed_cond:
        if failed_cond.get("reason") == "DeadlineExceeded":
            failure = f"deadline of {job['spec'].get('activeDeadlineSeconds')}s exceeded" + (f"; last: {failure}" if failure else "")
        return CompileObservation(job_name=job_name, state=JOB_FAILED, attempts=failed_pods,
                                  failure=failure or failed_cond.get("message", "Job failed"))
    state = JOB_RUNNING if int(status.get("ready") or 0) > 0 else JOB_PENDING
    detail = f"retrying after: {failure}" if failure else ""
    if state == JOB_PENDING:
        # A compile pod that cannot be scheduled (devices held by serving pods, no node of the instance type)
        # would otherwise look like a silent hang.
        unschedulable = _unschedulable_detail(client, namespace, {JOB_NAME_LABEL: job_name})
        detail = "; ".join(d for d in (detail, unschedulable) if d)
    return CompileObservation(job_name=job_name, state=state, attempts=attempts, failure=detail)


def compile_summary(client: KubeClient, namespace: str, job_name: str) -> str:
    """What the succeeded compile pod reported (its termination message, e.g. "compiled 12 graphs ... in 310s")."""
    for pod in client.list("v1", "Pod", namespace, label_selector=f"{JOB_NAME_LABEL}={job_name}"):
        if pod.get("status", {}).get("phase") != "Succeeded":
            continue
        for status in pod["status"].get("containerStatuses") or []:
            message = ((status.get("state") or {}).get("terminated") or {}).get("message") or ""
            if message.strip():
                return " ".join(message.split())[:500]
    return ""


def _latest_pod_failure(client: KubeClient, namespace: str, job_name: str) -> str:
    pods = client.list("v1", "Pod", namespace, label_selector=f"{JOB_NAME_LABEL}={job_name}")
    failed = [p for p in pods if p.get("status", {}).get("phase") == "Failed"]
    if not failed:
        return ""
    failed.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    return describe_pod_failure(failed[-1])


# The runtime's exit codes that no restart can fix (runtime/neuron_runtime/constants.py): a serving pod that ends
# with one of them makes the service Stalled instead of leaving it to crash-loop unexplained.
PERMANENT_SERVING_EXIT_CODES = (runtime_constants.EXIT_BAD_SPEC, runtime_constants.EXIT_ARTIFACT_INVALID,
                                runtime_constants.EXIT_CACHE_MISS)


def serving_pod_failure(pod: dict) -> Optional[RuntimeFailure]:
    """The permanent runtime failure a serving pod's container last ended with, if any."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        for state in ((status.get("state") or {}).get("terminated"), (status.get("lastState") or {}).get("terminated")):
            if state and state.get("exitCode") in PERMANENT_SERVING_EXIT_CODES:
                message = " ".join((state.get("message") or "").split())[:600]
                return RuntimeFailure(pod=pod["metadata"]["name"], exit_code=int(state["exitCode"]), message=message)
    return None


def _pods(client: KubeClient, namespace: str, selector: dict[str, str]) -> list[dict]:
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return client.list("v1", "Pod", namespace, label_selector=label_selector)


def _unschedulable_detail(client: KubeClient, namespace: str, selector: dict[str, str],
                          pods: Optional[list[dict]] = None) -> str:
    for pod in pods if pods is not None else _pods(client, namespace, selector):
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("message"):
                return f"pod {pod['metadata']['name']} unschedulable: {cond['message']}"
    return ""


def observe_deployment(client: KubeClient, deployment: Optional[dict]) -> ServingObservation:
    if deployment is None or deployment["metadata"].get("deletionTimestamp"):
        return ServingObservation(exists=False)
    spec, status, meta = deployment.get("spec", {}), deployment.get("status") or {}, deployment["metadata"]
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    rolled_out = (int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
                  and updated == desired and int(status.get("replicas") or 0) == desired)
    detail, failure = "", None
    if available < desired or updated < desired:
        pods = _pods(client, meta["namespace"], spec["selector"]["matchLabels"])
        detail = _unschedulable_detail(client, meta["namespace"], {}, pods)
        failure = next((f for f in map(serving_pod_failure, pods) if f is not None), None)
    return ServingObservation(
        exists=True,
        artifact_key=meta.get("labels", {}).get(C.LABEL_ARTIFACT_KEY),
        desired=desired,
        ready=int(status.get("readyReplicas") or 0),
        available=available,
        updated=updated,
        rolled_out=rolled_out,
        unavailable_reason=detail,
        failure=failure,
    )


def serving_compile_spec(deployment: Optional[dict]) -> Optional[CompileSpec]:
    if deployment is None:
        return None
    return compile_spec_from_annotation(deployment["metadata"].get("annotations", {}).get(C.ANNOTATION_COMPILE_SPEC))


def serving_instance_type(deployment: Optional[dict]) -> Optional[str]:
    if deployment is None:
        return None
    selector: dict[str, Any] = deployment["spec"]["template"]["spec"].get("nodeSelector") or {}
    return selector.get(C.INSTANCE_TYPE_LABEL)
