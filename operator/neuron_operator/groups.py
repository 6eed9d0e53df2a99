"""Multi-node replica groups as pure decisions: which group StatefulSets to apply or delete, which groups to
recreate whole (gang semantics, gang.py) or roll one at a time, and the ServingObservation the status is computed
from. Inputs are the cached group StatefulSets and serving pods; the output is actions (actions.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from . import constants as C
from .actions import Action, Annotate, Apply, Delete, PostEvent
from .children import needs_apply, with_applied_hash
from .builders.multinode import build_group_statefulset, build_headless_service
from .conditions import RuntimeFailure, ServingObservation
from .events import NORMAL, WARNING
from .gang import BACKOFF, BACKOFF_RESET_SECONDS, RECORD_MEMBERS, RECREATE, GroupState, PodInfo, decide
from .observe import serving_pod_failure
from .plan import ServicePlan

Obj = Mapping[str, Any]


def group_index(sts: Obj) -> Optional[int]:
    index = ((sts.get("metadata") or {}).get("labels") or {}).get(C.LABEL_GROUP_INDEX)
    return int(index) if index is not None and index.isdigit() else None


def pods_by_group(pods: list[Obj]) -> tuple[dict[int, list[PodInfo]], Optional[RuntimeFailure]]:
    """Group members by group index, and the first permanent runtime failure among them."""
    out: dict[int, list[PodInfo]] = {}
    failure: Optional[RuntimeFailure] = None
    for pod in pods:
        index = ((pod.get("metadata") or {}).get("labels") or {}).get(C.LABEL_GROUP_INDEX)
        if index is not None and index.isdigit():
            out.setdefault(int(index), []).append(PodInfo.from_pod(pod))
            failure = failure or serving_pod_failure(pod)
    return out, failure


def group_state(index: int, size: int, sts: Optional[Obj], pods: list[PodInfo]) -> GroupState:
    annotations = ((sts or {}).get("metadata") or {}).get("annotations") or {}
    members = tuple(u for u in annotations.get(C.ANNOTATION_GROUP_MEMBERS, "").split(",") if u)
    restarted_at = annotations.get(C.ANNOTATION_GROUP_RESTARTED_AT)
    return GroupState(
        index=index, size=size, pods=tuple(sorted(pods, key=lambda p: p.name)), members=members,
        restarts=int(annotations.get(C.ANNOTATION_GROUP_RESTARTS, "0") or 0),
        restarted_at=float(restarted_at) if restarted_at else None,
        update_revision=((sts or {}).get("status") or {}).get("updateRevision", ""),
    )


def observe_groups(groups: Mapping[int, Obj], pods: list[Obj], size: int, key: Optional[str],
                   notes: Optional[list[str]] = None) -> ServingObservation:
    """The groups as they are, without deciding anything (e.g. while the spec is invalid)."""
    members, failure = pods_by_group(pods)
    states = [group_state(i, size, groups.get(i), members.get(i, [])) for i in sorted(groups)]
    return summarise(states, len(groups), key, notes or [], failure)


def summarise(states: list[GroupState], desired: int, key: Optional[str], notes: list[str],
              failure: Optional[RuntimeFailure] = None) -> ServingObservation:
    complete = [s for s in states if s.complete]
    keys = {s.serving_key for s in complete if s.serving_key}
    if not keys:
        keys = {p.artifact_key for s in states for p in s.live if p.artifact_key}
    serving_key = key if keys == {key} else next(iter(sorted(k for k in keys if k != key)), None)
    detail = list(notes)
    for s in states:
        missing = s.size - len(s.live)
        pending = [p for p in s.live if p.unschedulable]
        if pending:
            detail.append(f"group {s.index}: {len(pending)} of {s.size} pods unschedulable: {pending[0].unschedulable}")
        elif missing > 0:
            detail.append(f"group {s.index}: {missing} of {s.size} pods missing")
    rolled_out = all(s.updated and s.serving_key == key for s in states) and len(states) == desired
    return ServingObservation(
        exists=bool(states),
        artifact_key=serving_key,
        desired=desired,
        ready=len(complete),
        available=len(complete),
        updated=sum(1 for s in states if s.updated and s.serving_key == key),
        rolled_out=rolled_out,
        unavailable_reason="; ".join(detail),
        failure=failure,
    )


@dataclass(frozen=True)
class GroupDecision:
    actions: tuple[Action, ...]
    serving: ServingObservation
    requeue_after: Optional[float] = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _sts(name: str) -> tuple[str, str, str]:
    return "apps/v1", "StatefulSet", name


def decide_groups(plan: ServicePlan, groups: Mapping[int, Obj], headless: Optional[Obj], pods: list[Obj],
                  now: float) -> GroupDecision:
    """Apply the headless Service and one StatefulSet per group, drop surplus groups, keep every group whole, and
    roll to a new template one whole group at a time while every other group is complete."""
    actions: list[Action] = []
    requeue: Optional[float] = None
    notes: list[str] = []
    template_changed = False

    headless_manifest = with_applied_hash(build_headless_service(plan))
    if needs_apply(headless, headless_manifest):
        actions.append(Apply(headless_manifest))
    for index in range(plan.replicas):
        manifest = with_applied_hash(build_group_statefulset(plan, index))
        if needs_apply(groups.get(index), manifest):
            actions.append(Apply(manifest))
            template_changed = True
    for index in sorted(i for i in groups if i >= plan.replicas):  # scale down: whole groups go
        actions.append(Delete(*_sts(groups[index]["metadata"]["name"])))

    members, failure = pods_by_group(pods)
    states = []
    for index in range(plan.replicas):
        sts = groups.get(index)
        state = group_state(index, plan.nodes_per_replica, sts, members.get(index, []))
        decision = decide(state, now)
        name = sts["metadata"]["name"] if sts is not None else ""
        if decision.action == RECREATE and sts is not None:
            actions += [Delete("v1", "Pod", p.name) for p in state.live]
            actions.append(Annotate(*_sts(name), {
                C.ANNOTATION_GROUP_MEMBERS: None,
                C.ANNOTATION_GROUP_RESTARTS: str(_recent_restarts(state, now) + 1),
                C.ANNOTATION_GROUP_RESTARTED_AT: f"{now:.3f}"}))
            actions.append(PostEvent(WARNING, "GroupRecreated",
                                     f"recreating replica group {index} ({name}): {decision.reason}"))
            notes.append(f"group {index} recreated: {decision.reason}")
            state = GroupState(index=index, size=state.size, pods=(), update_revision=state.update_revision)
        elif decision.action == BACKOFF:
            notes.append(f"group {index} broken ({decision.reason}); recreating in {decision.delay:.0f}s (backoff)")
            requeue = min(requeue or decision.delay, decision.delay)
        elif decision.action == RECORD_MEMBERS and sts is not None:
            update: dict[str, Optional[str]] = {C.ANNOTATION_GROUP_MEMBERS: ",".join(decision.members)}
            if state.restarted_at is not None and now - state.restarted_at > BACKOFF_RESET_SECONDS:
                update[C.ANNOTATION_GROUP_RESTARTS] = None
            actions.append(Annotate(*_sts(name), update))
        states.append(state)

    # Roll to a new template one whole group at a time, only while every other group is complete. An empty
    # updateRevision means the StatefulSet controller has not reported yet: nothing to compare.
    if states and all(s.complete for s in states) and not template_changed:
        stale = [s for s in states if s.update_revision and not s.updated]
        if stale:
            target = stale[0]
            name = groups[target.index]["metadata"]["name"]
            actions += [Delete("v1", "Pod", p.name) for p in target.live]
            actions.append(Annotate(*_sts(name), {C.ANNOTATION_GROUP_MEMBERS: None}))
            actions.append(PostEvent(NORMAL, "GroupRolled",
                                     f"replacing replica group {target.index} with the current template "
                                     f"(artifact {plan.key})"))
            requeue = min(requeue or 2.0, 2.0)
    serving = summarise(states, plan.replicas, plan.key, notes, failure)
    if template_changed:  # the controller has not seen the new template yet: not rolled out, whatever it says
        serving = ServingObservation(**{**serving.__dict__, "rolled_out": False})
    return GroupDecision(actions=tuple(actions), serving=serving, requeue_after=requeue, notes=tuple(notes))


def _recent_restarts(state: GroupState, now: float) -> int:
    if state.restarted_at is None or now - state.restarted_at > BACKOFF_RESET_SECONDS:
        return 0
    return state.restarts
