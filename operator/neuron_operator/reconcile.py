"""One level-based reconcile pass for a NeuronInferenceService.

Read the resource and its children, decide the desired children, apply them with server-side apply, and write
the status once if it changed. Safe to run any number of times for the same state (idempotent), and the only
place that writes. Order matters for the "compile before roll" guarantee: the serving workload is switched to a
new artifact key only after that key's compile Job has succeeded; until then it is re-applied with the artifact
it already serves, so non-compile changes (replicas, resources, labels) still take effect.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import constants as C
from . import events
from .api.spec import InvalidSpecError, parse_spec
from .api.status import ConditionType as T
from .api.status import Reason
from .builders import build_compile_job, build_pod_disruption_budget, build_service, build_serving_deployment
from .builders.common import owner_reference, serving_selector
from .builders.serving import endpoint_url
from .catalog import Catalog
from .conditions import JOB_SUCCEEDED, StatusInputs, compute_status
from .config import OperatorConfig
from .kube import ApiError, KubeClient
from .naming import compile_job_name, serving_name
from .observe import (compile_summary, observe_compile, observe_deployment, serving_compile_spec,
                      serving_instance_type)
from .plan import ServicePlan, plan_for
from .validation import Problem, validate
from .groups import groups_of, observe_groups, reconcile_groups

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """A transient condition (conflict, dependency not ready): reconcile again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 2.0):
        super().__init__(message)
        self.delay = delay


@dataclass
class PassResult:
    status_written: bool = False
    applied: list[str] = field(default_factory=list)
    phase: Optional[str] = None
    compile_started: bool = False
    rejected: list[str] = field(default_factory=list)  # children the API server refused (422)
    requeue_after: Optional[float] = None  # e.g. a group waiting out its restart backoff


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# A child applied with identical content is re-applied at the latest after this long, so drift someone else
# introduces in fields we own is corrected; in between, unchanged children cost no API request at all.
REAPPLY_AFTER_SECONDS = 600.0


class Reconciler:
    def __init__(self, client: KubeClient, catalog: Catalog, config: OperatorConfig,
                 now: Callable[[], str] = utc_now, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.catalog = catalog
        self.config = config
        self.now = now
        self.clock = clock
        # (kind, namespace, name) -> (hash of the manifest we applied, the object's generation, when, manifest)
        self._applied: dict[tuple[str, str, str], tuple[str, Optional[int], float, dict]] = {}
        self._applied_lock = threading.Lock()

    # --- entry point -------------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str) -> PassResult:
        obj = self.client.get(C.GROUP_VERSION, C.KIND, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)
            return PassResult()  # children go with the owner through garbage collection
        meta = obj["metadata"]
        deployment = self.client.get("apps/v1", "Deployment", namespace, serving_name(name))
        if deployment is not None and not _owned_by(deployment, meta["uid"]):
            deployment = None  # someone else's object with our name: never adopt it silently
        groups = groups_of(self.client, namespace, name, meta["uid"])

        try:
            spec = parse_spec(obj.get("spec"))
            problems = validate(spec, self.catalog, self.config)
        except InvalidSpecError as err:
            spec, problems = None, [Problem("spec", Reason.INVALID_SPEC, m) for m in err.messages]
        if problems:
            return self._stalled(obj, problems, deployment, groups, spec.replicas if spec else 0)

        plan = plan_for(name, namespace, meta["uid"], spec, self.catalog, self.config)
        result = PassResult()
        job_name = compile_job_name(plan.key, plan.store.location)
        job = self._ensure_compile_job(plan, job_name, result)
        compile_obs = observe_compile(self.client, namespace, job_name, job)
        if result.compile_started:
            events.emit(self.client, obj, events.NORMAL, "CompileStarted",
                        f"compile Job {job_name} started for artifact {plan.key} ({plan.store.artifact_location(plan.key)})")

        current = deployment if deployment is not None else groups.get(0)
        serving_plan = self._serving_plan(plan, compile_obs.state == JOB_SUCCEEDED, current)
        if serving_plan is None:
            serving_obs = (observe_groups(self.client, namespace, name, groups, plan.nodes_per_replica, plan.key)
                           if groups else observe_deployment(self.client, deployment))
        elif serving_plan.multi_node:
            if deployment is not None:  # switched from single- to multi-node: free the devices first
                self.client.delete("apps/v1", "Deployment", namespace, deployment["metadata"]["name"])
            serving_obs = reconcile_groups(self, serving_plan, groups, obj, result)
        else:
            for sts in groups.values():  # switched from multi- to single-node
                self.client.delete("apps/v1", "StatefulSet", namespace, sts["metadata"]["name"])
            deployment = self.apply_child(build_serving_deployment(serving_plan), result, live=deployment)
            serving_obs = observe_deployment(self.client, deployment)
        if serving_plan is not None:
            self.apply_child(build_service(serving_plan), result)
            self.apply_child(build_pod_disruption_budget(serving_plan), result)

        inputs = StatusInputs(
            generation=int(meta.get("generation") or 0),
            replicas=plan.replicas,
            problems=[Problem("metadata.name", Reason.CHILD_REJECTED, m) for m in result.rejected],
            key=plan.key,
            artifact_location=plan.store.artifact_location(plan.key),
            stack=plan.compile_spec.stack,
            compile=compile_obs,
            serving=serving_obs,
            endpoint=endpoint_url(plan),
            selector=_selector_string(serving_selector(plan)),
        )
        self._write_status(obj, inputs, result, compile_summary=lambda: compile_summary(self.client, namespace, job_name))
        return result

    # --- pieces --------------------------------------------------------------------------------------
    def _stalled(self, obj: dict, problems: list[Problem], deployment: Optional[dict], groups: dict[int, dict],
                 replicas: int) -> PassResult:
        """Invalid spec: create nothing new, leave whatever already serves untouched, say what to change."""
        result = PassResult()
        meta = obj["metadata"]
        if groups:
            size = int(groups[min(groups)]["spec"].get("replicas") or 1)
            serving = observe_groups(self.client, meta["namespace"], meta["name"], groups, size, None)
        else:
            serving = observe_deployment(self.client, deployment)
        inputs = StatusInputs(generation=int(meta.get("generation") or 0), replicas=replicas,
                              problems=problems, serving=serving)
        previous = obj.get("status") or {}
        if deployment is not None or groups:
            inputs.endpoint = previous.get("endpoint")
            inputs.selector = previous.get("selector")
        self._write_status(obj, inputs, result)
        return result

    def _ensure_compile_job(self, plan: ServicePlan, job_name: str, result: PassResult) -> Optional[dict]:
        """Create the Job for this (key, store) if none exists; otherwise make sure we are among its owners.

        Jobs are shared between services with identical compile inputs, so they are created (not applied: the
        spec is immutable and another owner's apply must not strip our owner reference) and owners are added with
        a strategic-merge patch, which merges ownerReferences by uid.
        """
        job = self.client.get("batch/v1", "Job", plan.namespace, job_name)
        if job is None:
            try:
                job = self.client.create(build_compile_job(plan))
                result.applied.append(f"Job/{job_name}")
                result.compile_started = True
                return job
            except ApiError as err:
                if not err.conflict:
                    raise
                job = self.client.get("batch/v1", "Job", plan.namespace, job_name)
                if job is None:
                    raise RetryLater(f"compile Job {job_name} is being replaced") from None
        if job["metadata"].get("deletionTimestamp"):
            raise RetryLater(f"compile Job {job_name} is being deleted; recreating it afterwards", delay=3)
        if not _owned_by(job, plan.uid, controller=None):
            job = self.client.patch("batch/v1", "Job", plan.namespace, job_name,
                                    {"metadata": {"ownerReferences": [owner_reference(plan, controller=False)]}}, patch_type="strategic")
            result.applied.append(f"Job/{job_name} (owner added)")
        return job

    def _serving_plan(self, plan: ServicePlan, compiled: bool, deployment: Optional[dict]) -> Optional[ServicePlan]:
        if compiled:
            return plan
        previous = serving_compile_spec(deployment)
        instance_name = serving_instance_type(deployment)
        if previous is None or instance_name is None:
            return None  # nothing serves yet: the workload appears once the artifact exists
        try:
            instance = self.catalog.get(instance_name)
        except KeyError:
            return None
        # Keep serving the artifact the pods already load while the new one compiles (or failed to).
        return plan.with_serving_artifact(previous, instance)

    def apply_child(self, manifest: dict, result: PassResult, live: Optional[dict] = None) -> Optional[dict]:
        """Server-side apply, skipped when we already applied this exact manifest recently and (where we have
        the live object) nobody changed its spec since: level-based without an API request per pass."""
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        with self._applied_lock:
            cached = self._applied.get(key)
        if cached is not None:
            cached_digest, cached_generation, applied_at, _ = cached
            live_generation = (live or {}).get("metadata", {}).get("generation")
            fresh = self.clock() - applied_at < REAPPLY_AFTER_SECONDS
            unchanged = live is None or live_generation == cached_generation
            if cached_digest == digest and fresh and unchanged and (live is not None or manifest["kind"] != "Deployment"):
                return live
        try:
            applied = self.client.apply(manifest)
        except ApiError as err:
            if err.status != 422:
                raise
            # The API server rejects our manifest merged with someone else's edit (e.g. a Service port added by
            # hand under our port's name): report it instead of retrying forever, and go on with the rest.
            result.rejected.append(f"{manifest['kind']} {meta['name']} was rejected by the API server: "
                                   f"{err.message}. Revert the manual edit or delete {manifest['kind']} "
                                   f"{meta['name']}; the operator recreates it")
            return live
        result.applied.append(f"{manifest['kind']}/{meta['name']}")
        with self._applied_lock:
            self._applied[key] = (digest, applied.get("metadata", {}).get("generation"), self.clock(), manifest)
        return applied

    def observe_child(self, kind: str, live: dict) -> None:
        """A watch event for one of our children: if it no longer contains what we applied (someone edited a
        field we own), forget the cache entry so the next pass applies it again. Costs no API request."""
        meta = live.get("metadata") or {}
        key = (kind, meta.get("namespace"), meta.get("name"))
        with self._applied_lock:
            cached = self._applied.get(key)
        if cached is not None and not contains(live, cached[3]):
            self.forget_child(kind, meta.get("namespace"), meta.get("name"))

    def forget_child(self, kind: str, namespace: str, name: str) -> None:
        """A child was deleted (by anyone): the next pass must apply it again."""
        with self._applied_lock:
            self._applied.pop((kind, namespace, name), None)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the apply cache of a deleted service's children (they are garbage collected)."""
        with self._applied_lock:
            for key in [k for k in self._applied if k[1] == namespace and k[2] == name]:
                del self._applied[key]

    def _write_status(self, obj: dict, inputs: StatusInputs, result: PassResult,
                      compile_summary: Callable[[], str] = lambda: "") -> None:
        previous = obj.get("status") or {}
        status = compute_status(inputs, previous, self.now())
        result.phase = status.get("phase")
        patch = dict(status)
        for key in previous:  # merge patch: fields we no longer report are removed explicitly
            if key not in status:
                patch[key] = None
        if all(previous.get(k) == v for k, v in patch.items()):
            return
        meta = obj["metadata"]
        try:
            self.client.patch_status(C.GROUP_VERSION, C.KIND, meta["namespace"], meta["name"], patch,
                                     resource_version=meta.get("resourceVersion"))
        except ApiError as err:
            if err.conflict:  # the object changed since we read it: recompute from the new state
                raise RetryLater("status conflict", delay=0.5) from None
            raise
        result.status_written = True
        self._emit_transitions(obj, previous, status, compile_summary)

    def _emit_transitions(self, obj: dict, previous: dict, status: dict,
                          compile_summary: Callable[[], str] = lambda: "") -> None:
        def cond(doc: dict, type_: str) -> tuple[Optional[str], Optional[str], str]:
            for c in doc.get("conditions") or []:
                if c["type"] == type_:
                    return c.get("status"), c.get("reason"), c.get("message", "")
            return None, None, ""

        stalled = cond(status, T.STALLED)
        if stalled[0] == "True" and cond(previous, T.STALLED)[:2] != stalled[:2]:
            events.emit(self.client, obj, events.WARNING, stalled[1] or "Stalled", stalled[2])
        compiled, prev_compiled = cond(status, T.COMPILED), cond(previous, T.COMPILED)
        if compiled[0] == "True" and prev_compiled[:2] != compiled[:2]:
            # The compile pod's own summary (graphs, time; the runtime's termination message) only on the
            # transition: one pod read per compile, and the condition message stays stable.
            summary = compile_summary()
            events.emit(self.client, obj, events.NORMAL, "Compiled", compiled[2] + (f" ({summary})" if summary else ""))
        ready, prev_ready = cond(status, T.READY), cond(previous, T.READY)
        if ready[0] != prev_ready[0] and ready[0] == "True":
            events.emit(self.client, obj, events.NORMAL, "Ready", ready[2])


def contains(live: Any, desired: Any) -> bool:
    """Whether the live object still holds every field of the manifest we applied. Extra live fields (defaults,
    status, other managers' fields) are fine; empty/false desired values match absent ones (the API server omits
    them); numbers and quantities compare by their string form."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return not desired
        return all(contains(live.get(k), v) if k in live else not v for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    if desired in (None, False, "", 0) and live in (None, False, "", 0):
        return True
    return live == desired or (live is not None and str(live) == str(desired))


def _owned_by(obj: dict, uid: str, controller: Optional[bool] = True) -> bool:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("uid") == uid and (controller is None or bool(ref.get("controller")) == controller):
            return True
    return False


def _selector_string(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))

