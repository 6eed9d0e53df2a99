"""Pure status computation: observations of the children in, the next status document out.

Readiness comes from the children's own state (the compile Job's conditions, the Deployment's replica counts
and Available condition), never invented. Conditions keep their lastTransitionTime when their status does not
change, so recomputing an unchanged world yields an identical status and the operator writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from neuron_runtime import compile_memory as runtime_compile_memory
from neuron_runtime import constants as runtime_constants

from .api.status import ConditionStatus as S
from .api.status import ConditionType as T
from .api.status import Phase, Reason
from .validation import Problem

JOB_MISSING = "Missing"
JOB_PENDING = "Pending"
JOB_RUNNING = "Running"
JOB_SUCCEEDED = "Succeeded"
JOB_FAILED = "Failed"


@dataclass(frozen=True)
class CompileResult:
    """A compile Job that finished (Complete or Failed), with its timing read from the Job's own status."""

    job_name: str
    outcome: str  # CompileOutcome.*
    key: Optional[str] = None  # the Job's artifact-key label
    duration_seconds: Optional[int] = None  # status.startTime to completionTime (or the Failed condition's time)
    finished_at: Optional[str] = None  # RFC 3339, as the Job controller wrote it

    def as_status(self) -> dict[str, Any]:
        """The status.lastCompile document (absent values left out, as the status model renders them)."""
        doc = {"job": self.job_name, "key": self.key, "outcome": self.outcome,
               "durationSeconds": self.duration_seconds, "finishedAt": self.finished_at}
        return {k: v for k, v in doc.items() if v is not None}


@dataclass(frozen=True)
class CompileObservation:
    job_name: str
    state: str  # JOB_*
    attempts: int = 0
    failure: str = ""  # e.g. "OOMKilled (exit 137): <termination message>"
    finished: Optional[CompileResult] = None  # set once the Job has its terminal condition
    unschedulable: str = ""  # the scheduler's message for a compile pod it cannot place
    memory_limit: str = ""  # the compile container's memory limit (for what to raise after an OOM kill)


@dataclass(frozen=True)
class RuntimeFailure:
    """A serving pod's engine container ended with one of the runtime's permanent exit codes: restarting the pod
    cannot fix it (a compile-cache miss, a missing artifact, a spec the image rejects)."""

    pod: str
    exit_code: int
    message: str  # the container's termination message (one line)


@dataclass(frozen=True)
class ServingObservation:
    exists: bool
    artifact_key: Optional[str] = None  # the key the workload's pod template uses
    desired: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    rolled_out: bool = False  # controller observed the latest template and every replica is updated
    # The controller finished rolling out this template once (Deployment Progressing=NewReplicaSetAvailable): fewer
    # available replicas after that are a loss (Degraded); before it, pods still coming up (Deploying).
    rollout_complete: bool = True
    unavailable_reason: str = ""  # e.g. scheduling failure detail
    failure: Optional[RuntimeFailure] = None  # a pod that ended with a permanent runtime exit code


@dataclass
class StatusInputs:
    generation: int
    replicas: int
    problems: list[Problem] = field(default_factory=list)
    key: Optional[str] = None
    artifact_location: Optional[str] = None
    stack: Optional[str] = None
    compile: Optional[CompileObservation] = None
    serving: ServingObservation = field(default_factory=lambda: ServingObservation(exists=False))
    endpoint: Optional[str] = None
    selector: Optional[str] = None
    warnings: tuple[str, ...] = ()  # advisories that do not stop the service (ServicePlan.warnings)
    lent_to_compile: Optional[str] = None  # one serving replica's node is lent to this compile Job
    lending_would_help: bool = False  # a blocked compile spec.runtime.lendReplicaToCompile would unblock


def set_condition(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
                  generation: int, now: str) -> None:
    """Insert or update one condition in place; lastTransitionTime moves only when status flips."""
    for cond in conditions:
        if cond["type"] == type_:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now
            cond.update(status=status, reason=reason, message=message, observedGeneration=generation)
            return
    conditions.append({"type": type_, "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": now, "observedGeneration": generation})


def _ordered(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {t: i for i, t in enumerate(T.ALL)}
    return sorted(conditions, key=lambda c: order.get(c["type"], len(order)))


def compute_status(inputs: StatusInputs, previous: Optional[dict[str, Any]], now: str) -> dict[str, Any]:
    prev = previous or {}
    conditions = [dict(c) for c in prev.get("conditions") or [] if c.get("type") in T.ALL]
    gen = inputs.generation
    serving = inputs.serving
    status: dict[str, Any] = {"observedGeneration": gen}

    def cond(type_: str, value: str, reason: str, message: str) -> None:
        set_condition(conditions, type_, value, reason, message, gen, now)

    desired = inputs.replicas
    # While a replica's node is lent to the compile, the service is meant to serve one fewer: that is available.
    serving_desired = min(desired, serving.desired) if inputs.lent_to_compile else desired
    serving_available = serving.exists and (serving.available >= max(1, serving_desired) or desired == 0)
    serving_some = serving.exists and serving.available > 0

    # --- Stalled: the spec cannot be acted on -----------------------------------------------------------
    if inputs.problems:
        first = inputs.problems[0]
        message = "; ".join(p.message for p in inputs.problems)
        cond(T.STALLED, S.TRUE, first.reason, message)
        cond(T.RECONCILING, S.FALSE, first.reason, "waiting for a spec change")
        cond(T.COMPILED, S.UNKNOWN, first.reason, "the spec is invalid; nothing was compiled for it")
        _serving_conditions(cond, serving, desired, serving_available, compiled_current=False, key=None)
        status["phase"] = Phase.DEGRADED if serving_some else Phase.FAILED
        return _finish(status, conditions, inputs, serving, prev)

    compile_ = inputs.compile
    compiled = compile_ is not None and compile_.state == JOB_SUCCEEDED
    failed = compile_ is not None and compile_.state == JOB_FAILED

    # --- Compiled -----------------------------------------------------------------------------------
    if compiled:
        cond(T.COMPILED, S.TRUE, Reason.ARTIFACTS_READY, f"artifact {inputs.key} is at {inputs.artifact_location}")
    elif failed:
        cond(T.COMPILED, S.FALSE, Reason.COMPILE_FAILED,
             f"compile Job {compile_.job_name} failed after {compile_.attempts} attempt(s): {compile_.failure}")
    elif compile_ is not None and compile_.state in (JOB_RUNNING, JOB_PENDING) and (
            not compile_.unschedulable or inputs.lent_to_compile):
        # A Job whose pod is starting counts as compiling: "pending" is only worth saying (and a status write) when
        # the scheduler cannot place the pod and nothing is being done about it.
        lent = (f"; one serving replica's node is lent to it ({serving_desired} of {desired} replicas serve the "
                "previous artifact until it finishes)") if inputs.lent_to_compile else ""
        cond(T.COMPILED, S.FALSE, Reason.COMPILING, f"compile Job {compile_.job_name} is compiling artifact {inputs.key}"
             + (f" ({compile_.failure})" if compile_.failure else "") + lent)
    else:
        detail = "; ".join(d for d in (compile_.unschedulable, compile_.failure) if d) if compile_ else ""
        hint = ("; set spec.runtime.lendReplicaToCompile: true to let it use one serving replica's node, or add a "
                "node") if inputs.lending_would_help else ""
        cond(T.COMPILED, S.FALSE, Reason.COMPILE_PENDING,
             f"compile Job {compile_.job_name if compile_ else ''} for artifact {inputs.key} is waiting to run"
             + (f": {detail}" if detail else "") + hint)

    compiled_current = compiled and serving.artifact_key == inputs.key
    _serving_conditions(cond, serving, desired, serving_available, compiled_current, inputs.key,
                        note=(f"one replica's node is lent to compile Job {inputs.lent_to_compile}"
                              if inputs.lent_to_compile else ""))

    # --- Stalled / Reconciling --------------------------------------------------------------------------
    runtime_failure = serving.failure
    if failed:
        cond(T.STALLED, S.TRUE, Reason.COMPILE_FAILED,
             f"compile Job {compile_.job_name} failed after {compile_.attempts} attempt(s): {compile_.failure}. "
             f"{_compile_advice(compile_)}, or delete Job "
             f"{compile_.job_name} to retry" + ("; the previous artifact keeps serving" if serving_some else ""))
        cond(T.RECONCILING, S.FALSE, Reason.COMPILE_FAILED, "compilation failed; waiting for a change")
    elif runtime_failure is not None:
        reason, message = _runtime_failure_message(runtime_failure, inputs, serving)
        cond(T.STALLED, S.TRUE, reason, message)
        cond(T.RECONCILING, S.FALSE, reason, "a serving pod cannot start; waiting for a change")
    else:
        cond(T.STALLED, S.FALSE, Reason.VALID_SPEC, "")
        done = compiled_current and serving.rolled_out and serving_available
        if done:
            cond(T.RECONCILING, S.FALSE, Reason.RECONCILED, "")
        elif not compiled:
            cond(T.RECONCILING, S.TRUE, Reason.COMPILING, f"compiling artifact {inputs.key}")
        else:
            # Progress in the available count only, which moves with status.readyReplicas: counting updated pods
            # too would cost a status write each time one is created, before it can serve.
            cond(T.RECONCILING, S.TRUE, Reason.ROLLING_OUT,
                 f"rolling out artifact {inputs.key}: {serving.available}/{desired} available")

    # --- phase ------------------------------------------------------------------------------------------
    if failed or runtime_failure is not None:
        status["phase"] = Phase.DEGRADED if serving_some else Phase.FAILED
    elif not compiled and not serving_some:
        status["phase"] = Phase.COMPILING if compile_ is not None else Phase.PENDING
    elif compiled_current and serving.rolled_out and serving_available:
        status["phase"] = Phase.READY
    elif not compiled and serving_available:
        status["phase"] = Phase.COMPILING  # recompiling while the previous artifact serves
    elif serving_some and not serving_available and serving.rolled_out and serving.rollout_complete:
        status["phase"] = Phase.DEGRADED
    else:
        status["phase"] = Phase.DEPLOYING
    return _finish(status, conditions, inputs, serving, prev)


def _compile_advice(compile_: CompileObservation) -> str:
    """What to change after a failed compile: an OOM kill names the memory field to raise, with today's limit."""
    if "OOMKilled" in compile_.failure:
        now = f" (now {compile_.memory_limit})" if compile_.memory_limit else ""
        return (f"The compile ran out of memory: raise {runtime_compile_memory.COMPILE_MEMORY_FIELD}{now} and "
                "requests.memory, or use a larger instanceType")
    return "Fix the cause (e.g. a larger instanceType or a smaller maxModelLen/maxNumSeqs)"


def _runtime_failure_message(failure: RuntimeFailure, inputs: StatusInputs,
                             serving: ServingObservation) -> tuple[str, str]:
    """Stalled reason and message for a serving pod that ended with a permanent runtime exit code."""
    key = serving.artifact_key or inputs.key
    job = inputs.compile.job_name if inputs.compile else "the compile Job"
    said = f": {failure.message}" if failure.message else ""
    if failure.exit_code == runtime_constants.EXIT_CACHE_MISS:
        return Reason.ARTIFACT_CACHE_MISS, (
            f"serving pod {failure.pod} stopped on a compile-cache miss for artifact {key}{said}. Serving pods never "
            f"compile on Neuron nodes. The artifact does not hold every graph this image runs: make sure "
            f"spec.runtime.image provides the service's stack, then delete Job {job} and the artifact at "
            f"{inputs.artifact_location} to compile again")
    if failure.exit_code == runtime_constants.EXIT_FABRIC_UNAVAILABLE:
        return Reason.FABRIC_UNAVAILABLE, (
            f"serving pod {failure.pod} cannot use EFA{said}. The group restarts until every node has it")
    if failure.exit_code == runtime_constants.EXIT_ARTIFACT_INVALID:
        return Reason.ARTIFACT_INVALID, (
            f"serving pod {failure.pod} found no complete artifact {key}{said}. Delete Job {job} to compile it again")
    return Reason.RUNTIME_REJECTED_SPEC, (
        f"the runtime image rejected the service in pod {failure.pod}{said}. Check that spec.runtime.image provides "
        f"the service's stack")


def _serving_conditions(cond, serving: ServingObservation, desired: int, serving_available: bool,
                        compiled_current: bool, key: Optional[str], note: str = "") -> None:
    if desired == 0 and serving.exists:
        cond(T.AVAILABLE, S.TRUE, Reason.SCALED_TO_ZERO, "scaled to zero replicas")
        cond(T.READY, S.TRUE, Reason.SCALED_TO_ZERO, "scaled to zero replicas")
        return
    if not serving.exists:
        cond(T.AVAILABLE, S.FALSE, Reason.DEPLOYING, "no serving workload yet: it is created once artifacts exist")
        cond(T.READY, S.FALSE, Reason.DEPLOYING, "waiting for compiled artifacts")
        return
    detail = f"{serving.available}/{desired} replicas available"
    if note:
        detail += f" ({note})"
    if serving.unavailable_reason:
        detail += f"; {serving.unavailable_reason}"
    if serving_available:
        cond(T.AVAILABLE, S.TRUE, Reason.REPLICAS_READY, detail)
        if key is not None and serving.artifact_key != key:
            cond(T.READY, S.TRUE, Reason.SERVING_OLD_ARTIFACT,
                 f"serving artifact {serving.artifact_key} while artifact {key} is prepared")
        else:
            cond(T.READY, S.TRUE, Reason.REPLICAS_READY, detail)
    else:
        reason = Reason.DEPLOYING if serving.available == 0 else Reason.REPLICAS_UNAVAILABLE
        cond(T.AVAILABLE, S.FALSE, reason, detail)
        cond(T.READY, S.FALSE, reason, detail)


def _finish(status: dict[str, Any], conditions: list[dict[str, Any]], inputs: StatusInputs,
            serving: ServingObservation, previous: dict[str, Any]) -> dict[str, Any]:
    status["conditions"] = _ordered(conditions)
    if inputs.key:
        status["artifact"] = {"key": inputs.key, "location": inputs.artifact_location, "stack": inputs.stack}
    if serving.artifact_key:
        status["servingArtifact"] = {"key": serving.artifact_key}
    if inputs.compile:
        status["compileJob"] = inputs.compile.job_name
    # The current key's Job once it finished; until then (a newer compile runs, or the spec is invalid) the last
    # one reported, so the outcome and duration of the previous compile stay visible.
    if inputs.compile and inputs.compile.finished:
        status["lastCompile"] = inputs.compile.finished.as_status()
    elif previous.get("lastCompile"):
        status["lastCompile"] = previous["lastCompile"]
    if inputs.endpoint:
        status["endpoint"] = inputs.endpoint
    status["replicas"] = serving.desired if serving.exists else 0
    status["readyReplicas"] = serving.ready if serving.exists else 0
    if inputs.selector:
        status["selector"] = inputs.selector
    if inputs.warnings:
        status["warnings"] = list(inputs.warnings)
    return status


def status_changed(previous: Optional[dict[str, Any]], new: dict[str, Any]) -> bool:
    prev = previous or {}
    return any(prev.get(k) != v for k, v in new.items())
