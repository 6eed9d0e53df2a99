"""One reconcile pass as a pure decision: (intent, snapshot, now) -> the writes to make and the status inputs.

The intent is the service's spec resolved against the catalog and the operator's configuration (validation problems,
or the plan); the snapshot is the service and its children as the watch cache holds them. Order matters for the
"compile before roll" guarantee: the serving workload is switched to a new artifact key only once that key's compile
Job has succeeded; until then it is re-applied with the artifact it already serves, so non-compile changes
(replicas, resources, labels) still take effect. Nothing here reads the cluster or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from . import constants as C
from .actions import Action, AddOwner, Apply, CreateJob, Delete, PostEvent
from .api.spec import InvalidSpecError, NeuronInferenceServiceSpec, parse_spec
from .api.status import Reason
from .builders import build_compile_job
from .builders.autoscaling import AUTOSCALER_API_VERSIONS, autoscaler_kind
from .builders.common import owner_reference
from .builders.serving import endpoint_url, leader_selector
from .catalog import Catalog
from .children import controlled_by, needs_apply, owned_by, serving_children
from .conditions import (JOB_MISSING, JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED, CompileObservation, ServingObservation,
                         StatusInputs)
from .config import OperatorConfig
from .events import NORMAL
from .groups import decide_groups, group_index, observe_groups
from .naming import compile_job_name, group_name, headless_service_name, serving_name
from .observe import (compile_summary, observe_compile, observe_deployment, serving_compile_spec,
                      serving_instance_type)
from .plan import ServicePlan, plan_for
from .validation import Problem, validate

Obj = Mapping[str, Any]

# A child still owned by a deleted service of the same name is garbage being collected: wait for it this long.
GARBAGE_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class Intent:
    """What the service asks for: its parsed spec and either the problems that stop it or its plan."""

    service: Obj
    spec: Optional[NeuronInferenceServiceSpec]
    problems: tuple[Problem, ...]
    plan: Optional[ServicePlan]

    @property
    def job_name(self) -> Optional[str]:
        return compile_job_name(self.plan.key, self.plan.store.location) if self.plan else None

    @property
    def group_count(self) -> int:
        return self.plan.replicas if self.plan and self.plan.multi_node else 0


def intent_for(service: Obj, catalog: Catalog, config: OperatorConfig) -> Intent:
    meta = service["metadata"]
    try:
        spec = parse_spec(service.get("spec"))
    except InvalidSpecError as err:
        return Intent(service, None, tuple(Problem("spec", Reason.INVALID_SPEC, m) for m in err.messages), None)
    problems = validate(spec, catalog, config)
    if problems:
        return Intent(service, spec, tuple(problems), None)
    return Intent(service, spec, (), plan_for(meta["name"], meta["namespace"], meta["uid"], spec, catalog, config))


@dataclass(frozen=True)
class Snapshot:
    """The service's children as the watch cache holds them (see snapshot.take_snapshot)."""

    deployment: Optional[Obj] = None  # named like the service, whoever owns it
    statefulsets: tuple[Obj, ...] = ()  # labelled as the service's groups, or named like them
    endpoint: Optional[Obj] = None  # the Service named like the service
    headless: Optional[Obj] = None
    pdb: Optional[Obj] = None
    job: Optional[Obj] = None  # the planned compile Job
    compile_pods: tuple[Obj, ...] = ()  # that Job's pods
    pods: tuple[Obj, ...] = ()  # the service's serving pods
    hpa: Optional[Obj] = None  # the HorizontalPodAutoscaler named like the service
    scaled_object: Optional[Obj] = None  # the KEDA ScaledObject named like the service


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: StatusInputs
    requeue_after: Optional[float] = None
    compile_summary: str = ""  # the compile pod's report, for the Compiled Event


@dataclass
class _Children:
    """The snapshot's children sorted into ours (controlled by this service) and the names others hold."""

    deployment: Optional[Obj] = None
    groups: dict[int, Obj] = field(default_factory=dict)
    endpoint: Optional[Obj] = None
    headless: Optional[Obj] = None
    pdb: Optional[Obj] = None
    autoscalers: list[Obj] = field(default_factory=list)  # our HPA and/or ScaledObject
    foreign: list[str] = field(default_factory=list)  # objects with our names that we do not control
    dying: bool = False  # some of those are a deleted same-named service's, being garbage-collected


def _sort_children(intent: Intent, snap: Snapshot) -> _Children:
    meta = intent.service["metadata"]
    uid, name = meta["uid"], meta["name"]
    out = _Children()

    def mine(obj: Optional[Obj], kind: str) -> Optional[Obj]:
        if obj is None:
            return None
        if controlled_by(obj, uid):
            return obj
        refs = obj["metadata"].get("ownerReferences") or []
        if obj["metadata"].get("deletionTimestamp") or any(
                r.get("kind") == C.KIND and r.get("name") == name and r.get("controller") for r in refs):
            out.dying = True  # a previous service of this name: garbage collection is removing it
        else:
            out.foreign.append(f"{kind} {meta['namespace']}/{obj['metadata']['name']}")
        return None

    out.deployment = mine(snap.deployment, "Deployment")
    out.endpoint = mine(snap.endpoint, "Service")
    out.headless = mine(snap.headless, "Service")
    out.pdb = mine(snap.pdb, "PodDisruptionBudget")
    scaling = intent.plan.autoscaling if intent.plan else None
    wanted_kind = autoscaler_kind(scaling.provider)[1] if scaling else None
    for live in (snap.hpa, snap.scaled_object):
        if live is not None and controlled_by(live, uid):
            out.autoscalers.append(live)
        elif live is not None and live["kind"] == wanted_kind:  # not ours: a clash only for the kind we would apply
            mine(live, live["kind"])
    group_names = set(snapshot_names(intent)["groups"])
    for sts in snap.statefulsets:
        index = group_index(sts)
        if controlled_by(sts, uid):
            if index is not None:
                out.groups[index] = sts
        elif sts["metadata"]["name"] in group_names:  # only a name we would apply can clash
            mine(sts, "StatefulSet")
    return out


def decide(intent: Intent, snap: Snapshot, catalog: Catalog, now: float) -> Decision:
    meta = intent.service["metadata"]
    generation = int(meta.get("generation") or 0)
    children = _sort_children(intent, snap)
    if intent.plan is None:
        return _stalled(intent, snap, children, list(intent.problems))
    if children.foreign:
        return _stalled(intent, snap, children, [Problem(
            "metadata.name", Reason.CHILD_CONFLICT,
            f"{', '.join(children.foreign)} already exist(s) and is not controlled by this NeuronInferenceService; "
            "the operator never takes over an object it did not create: rename the service, or delete the "
            "object(s) and the operator creates its own")])
    plan = intent.plan
    actions: list[Action] = []
    requeue: Optional[float] = GARBAGE_WAIT_SECONDS if children.dying else None

    # --- compile: one shared Job per (key, store); created here, adopted when another service made it --------------
    job_name = intent.job_name
    job = snap.job
    if job is None:
        actions.append(CreateJob(build_compile_job(plan), owner_reference(plan, controller=False)))
        actions.append(PostEvent(NORMAL, "CompileStarted",
                                 f"compile Job {job_name} started for artifact {plan.key} "
                                 f"({plan.store.artifact_location(plan.key)})", after=f"Job/{job_name}"))
        compile_obs = CompileObservation(job_name=job_name, state=JOB_PENDING)  # created by this pass
    elif job["metadata"].get("deletionTimestamp"):
        compile_obs = CompileObservation(job_name=job_name, state=JOB_MISSING)
        requeue = 3.0  # recreated once the old one is gone
    else:
        if not owned_by(job, plan.uid):
            actions.append(AddOwner("batch/v1", "Job", job_name, owner_reference(plan, controller=False)))
        compile_obs = observe_compile(job_name, job, snap.compile_pods)
    compiled = compile_obs.state == JOB_SUCCEEDED

    # --- serving: the new artifact once compiled, else the one the pods already load -----------------------------
    current = children.deployment if children.deployment is not None else children.groups.get(0)
    serving_plan = plan if compiled else _previous_plan(plan, current, catalog)
    lending = _lending(plan, serving_plan, compile_obs, children.deployment)
    lent_to = lending[0] if lending else None
    lend_event: tuple[Action, ...] = ()  # posted once the Deployment with one replica fewer is applied
    if lending is not None and serving_plan is not None:
        serving_plan = serving_plan.lending_to(*lending)
        if _lent_to(children.deployment) != lent_to:
            lend_event = (PostEvent(NORMAL, "ReplicaLent", (
                f"compile Job {lent_to} cannot be scheduled while serving pods hold the {plan.instance.name} nodes: "
                f"serving {serving_plan.replicas} of {plan.replicas} replicas on artifact {serving_plan.key} so the "
                f"compile gets one replica's node; the service rolls onto artifact {plan.key} at {plan.replicas} "
                "replicas once it is compiled"), after=f"Deployment/{serving_name(plan.name)}"),)
    pods = list(snap.pods)
    wanted: Optional[list[dict]] = None  # the serving children, once there is something to serve
    if children.dying:
        serving_plan = None  # wait for the old children to go before creating ours
    if serving_plan is None:
        serving_obs = (observe_groups(children.groups, pods, plan.nodes_per_replica, plan.key) if children.groups
                       else observe_deployment(children.deployment, pods))
    else:
        wanted = serving_children(serving_plan)
        if serving_plan.multi_node:
            if children.deployment is not None:  # switched from single- to multi-node: free the devices first
                actions.append(Delete("apps/v1", "Deployment", children.deployment["metadata"]["name"]))
            groups = decide_groups(serving_plan, children.groups, children.headless, pods, now)
            actions += groups.actions
            serving_obs = groups.serving
            if groups.requeue_after is not None:
                requeue = min(requeue or groups.requeue_after, groups.requeue_after)
        else:
            for sts in children.groups.values():  # switched from multi- to single-node
                actions.append(Delete("apps/v1", "StatefulSet", sts["metadata"]["name"]))
            deployment = next(m for m in wanted if m["kind"] == "Deployment")
            serving_obs = observe_deployment(children.deployment, pods)
            if needs_apply(children.deployment, deployment):
                actions.append(Apply(deployment))
                # The controller has not seen this template yet: whatever the cached status says, it is not rolled out.
                serving_obs = replace(serving_obs, rolled_out=False)
        if serving_plan.multi_node and serving_plan.replicas == 0:
            # Scaled to zero: no group exists, the headless Service and the artifacts stay for the way back up.
            serving_obs = ServingObservation(exists=True, artifact_key=serving_plan.key, desired=0,
                                             rolled_out=not children.groups)
        for manifest, live in ((_kind(wanted, "Service", serving_name(plan.name)), children.endpoint),
                               (_kind(wanted, "PodDisruptionBudget", serving_name(plan.name)), children.pdb)):
            if needs_apply(live, manifest):
                actions.append(Apply(manifest))
    actions += lend_event
    actions += _autoscaler_actions(plan, wanted, children)

    status = StatusInputs(
        generation=generation,
        replicas=plan.replicas,
        key=plan.key,
        artifact_location=plan.store.artifact_location(plan.key),
        stack=plan.compile_spec.stack,
        compile=compile_obs,
        serving=serving_obs,
        endpoint=endpoint_url(plan),
        selector=_selector_string(leader_selector(plan)),
        warnings=plan.warnings,
        lent_to_compile=lent_to,
        lending_would_help=_lending_would_help(plan, serving_plan, compile_obs),
    )
    summary = compile_summary(snap.compile_pods) if compiled else ""
    return Decision(actions=tuple(actions), status=status, requeue_after=requeue, compile_summary=summary)


def _autoscaler_actions(plan: ServicePlan, wanted: Optional[list[dict]], children: _Children) -> list[Action]:
    """Apply the autoscaler spec.autoscaling asks for once something serves (``wanted``: the serving children; it
    scales the service, not a workload still missing); delete ours of the other kind (the operator's provider
    changed) or all of ours (spec.autoscaling removed). No write here touches spec.replicas: it is the autoscaler's."""
    actions: list[Action] = []
    wanted_kind = autoscaler_kind(plan.autoscaling.provider) if plan.autoscaling else None
    for live in children.autoscalers:
        if (wanted_kind is None or live["kind"] != wanted_kind[1]) and not live["metadata"].get("deletionTimestamp"):
            actions.append(Delete(AUTOSCALER_API_VERSIONS[live["kind"]], live["kind"], live["metadata"]["name"]))
    if wanted is None or wanted_kind is None:
        return actions
    manifest = next(m for m in wanted if (m["apiVersion"], m["kind"]) == wanted_kind)
    live = next((o for o in children.autoscalers if o["kind"] == wanted_kind[1]), None)
    if needs_apply(live, manifest):
        actions.append(Apply(manifest))
    return actions


def _lent_to(deployment: Optional[Obj]) -> Optional[str]:
    return ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(C.ANNOTATION_LENT_TO_COMPILE)


def _lending(plan: ServicePlan, serving_plan: Optional[ServicePlan], compile_obs: CompileObservation,
             deployment: Optional[Obj]) -> Optional[tuple[str, int]]:
    """(compile Job, replicas to serve meanwhile) when one serving replica's node goes to the compile
    (spec.runtime.lendReplicaToCompile), else None.

    Lending starts when the compile of a new artifact cannot be scheduled while the previous artifact serves on a
    Deployment with at least two available replicas: one fewer than are available (so a node really frees, even
    when some replicas are Pending). It holds at the Deployment's count (its annotation names the Job, so a
    restarted operator sees it too) until that compile ends: succeeded, the service rolls onto the new artifact at
    the full count; failed, the node comes back to serving."""
    if not plan.lend_replica_to_compile or serving_plan is None or serving_plan.multi_node or deployment is None:
        return None
    if plan.compile_placement.on_cpu or compile_obs.state not in (JOB_PENDING, JOB_RUNNING):
        return None  # nothing to lend for a CPU compile; nothing to wait for once the Job ended
    if serving_plan.key == plan.key:
        return None
    job = compile_obs.job_name
    if _lent_to(deployment) == job:
        held = int((deployment.get("spec") or {}).get("replicas") or 0)
        return (job, max(1, min(held, serving_plan.replicas - 1))) if serving_plan.replicas >= 2 else None
    available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
    serving = min(serving_plan.replicas, available) - 1
    return (job, serving) if compile_obs.unschedulable and serving >= 1 else None


def _lending_would_help(plan: ServicePlan, serving_plan: Optional[ServicePlan],
                        compile_obs: CompileObservation) -> bool:
    """A blocked compile that lending could unblock, with lending off: the CompilePending message says so."""
    return (not plan.lend_replica_to_compile and bool(compile_obs.unschedulable) and serving_plan is not None
            and not serving_plan.multi_node and not plan.compile_placement.on_cpu and serving_plan.replicas >= 2
            and serving_plan.key != plan.key)


def _kind(manifests: list[dict], kind: str, name: str) -> dict:
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def _previous_plan(plan: ServicePlan, current: Optional[Obj], catalog: Catalog) -> Optional[ServicePlan]:
    """The plan for the artifact the workload already serves, so it keeps serving while a new one compiles."""
    previous = serving_compile_spec(current)
    instance_name = serving_instance_type(current)
    if previous is None or instance_name is None:
        return None  # nothing serves yet: the workload appears once the artifact exists
    try:
        instance = catalog.get(instance_name)
    except KeyError:
        return None
    return plan.with_serving_artifact(previous, instance)


def _stalled(intent: Intent, snap: Snapshot, children: _Children, problems: list[Problem]) -> Decision:
    """The spec cannot be acted on: create nothing, touch nothing that serves, say what to change."""
    meta = intent.service["metadata"]
    pods = list(snap.pods)
    if children.groups:
        size = int(children.groups[min(children.groups)]["spec"].get("replicas") or 1)
        serving = observe_groups(children.groups, pods, size, None)
    else:
        serving = observe_deployment(children.deployment, pods)
    previous = intent.service.get("status") or {}
    keep = children.deployment is not None or bool(children.groups)
    status = StatusInputs(
        generation=int(meta.get("generation") or 0),
        replicas=intent.spec.replicas if intent.spec is not None else 0,
        problems=problems,
        serving=serving,
        endpoint=previous.get("endpoint") if keep else None,
        selector=previous.get("selector") if keep else None,
    )
    return Decision(actions=(), status=status)


def _selector_string(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def snapshot_names(intent: Intent) -> dict[str, Any]:
    """The names a pass looks up by (beyond the labelled pods and groups): for take_snapshot."""
    name = intent.service["metadata"]["name"]
    return {
        "deployment": serving_name(name),
        "endpoint": serving_name(name),
        "headless": headless_service_name(name),
        "pdb": serving_name(name),
        "autoscaler": serving_name(name),
        "job": intent.job_name,
        "groups": [group_name(name, i) for i in range(intent.group_count)],
    }
