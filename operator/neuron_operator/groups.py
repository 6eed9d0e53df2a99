"""Multi-node replica groups: apply one StatefulSet per group, enforce gang semantics, roll group by group,
and summarise the groups as the ServingObservation status is computed from."""

from __future__ import annotations

import time
from typing import Any, Optional

from . import constants as C
from . import events
from .builders.multinode import build_group_statefulset, build_headless_service
from .conditions import RuntimeFailure, ServingObservation
from .gang import BACKOFF, BACKOFF_RESET_SECONDS, RECORD_MEMBERS, RECREATE, GroupState, PodInfo, decide
from .kube import KubeClient
from .observe import serving_pod_failure
from .plan import ServicePlan


def groups_of(client: KubeClient, namespace: str, service: str, uid: str) -> dict[int, dict]:
    """This service's group StatefulSets by group index (only ones it controls)."""
    out: dict[int, dict] = {}
    for sts in client.list("apps/v1", "StatefulSet", namespace,
                           label_selector=f"{C.LABEL_SERVICE}={service},{C.LABEL_COMPONENT}={C.COMPONENT_SERVING}"):
        refs = sts["metadata"].get("ownerReferences") or []
        if any(r.get("uid") == uid and r.get("controller") for r in refs):
            index = sts["metadata"].get("labels", {}).get(C.LABEL_GROUP_INDEX)
            if index is not None and index.isdigit():
                out[int(index)] = sts
    return out


def _pods_by_group(client: KubeClient, namespace: str,
                   service: str) -> tuple[dict[int, list[PodInfo]], Optional[RuntimeFailure]]:
    """Group members by group index, and the first permanent runtime failure among them."""
    selector = f"{C.LABEL_SERVICE}={service},{C.LABEL_COMPONENT}={C.COMPONENT_SERVING}"
    out: dict[int, list[PodInfo]] = {}
    failure: Optional[RuntimeFailure] = None
    for pod in client.list("v1", "Pod", namespace, label_selector=selector):
        index = (pod["metadata"].get("labels") or {}).get(C.LABEL_GROUP_INDEX)
        if index is not None and index.isdigit():
            out.setdefault(int(index), []).append(PodInfo.from_pod(pod))
            failure = failure or serving_pod_failure(pod)
    return out, failure


def _state(index: int, size: int, sts: Optional[dict], pods: list[PodInfo]) -> GroupState:
    annotations = (sts or {}).get("metadata", {}).get("annotations") or {}
    members = tuple(u for u in annotations.get(C.ANNOTATION_GROUP_MEMBERS, "").split(",") if u)
    restarted_at = annotations.get(C.ANNOTATION_GROUP_RESTARTED_AT)
    return GroupState(
        index=index, size=size, pods=tuple(sorted(pods, key=lambda p: p.name)), members=members,
        restarts=int(annotations.get(C.ANNOTATION_GROUP_RESTARTS, "0") or 0),
        restarted_at=float(restarted_at) if restarted_at else None,
        update_revision=((sts or {}).get("status") or {}).get("updateRevision", ""),
    )


def observe_groups(client: KubeClient, namespace: str, service: str, groups: dict[int, dict], size: int,
                   key: Optional[str], notes: Optional[list[str]] = None) -> ServingObservation:
    pods, failure = _pods_by_group(client, namespace, service)
    states = [_state(i, size, groups.get(i), pods.get(i, [])) for i in sorted(groups)]
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


def _annotate(client: KubeClient, sts: dict, annotations: dict[str, Optional[str]]) -> None:
    meta = sts["metadata"]
    client.patch("apps/v1", "StatefulSet", meta["namespace"], meta["name"], {"metadata": {"annotations": annotations}})


def _recreate(client: KubeClient, state: GroupState, namespace: str) -> None:
    for pod in state.live:
        client.delete("v1", "Pod", namespace, pod.name)


def reconcile_groups(reconciler: Any, plan: ServicePlan, groups: dict[int, dict], obj: dict,
                     result: Any) -> ServingObservation:
    client: KubeClient = reconciler.client
    ns = plan.namespace
    reconciler.apply_child(build_headless_service(plan), result)
    for index in range(plan.replicas):
        applied = reconciler.apply_child(build_group_statefulset(plan, index), result, live=groups.get(index))
        if applied is not None:
            groups[index] = applied
    for index in sorted(i for i in groups if i >= plan.replicas):  # scale down: whole groups go
        client.delete("apps/v1", "StatefulSet", ns, groups.pop(index)["metadata"]["name"])

    pods, failure = _pods_by_group(client, ns, plan.name)
    now = time.time()
    notes: list[str] = []
    states = []
    for index in range(plan.replicas):
        sts = groups.get(index)
        state = _state(index, plan.nodes_per_replica, sts, pods.get(index, []))
        decision = decide(state, now)
        if decision.action == RECREATE and sts is not None:
            _recreate(client, state, ns)
            _annotate(client, sts, {C.ANNOTATION_GROUP_MEMBERS: None,
                                    C.ANNOTATION_GROUP_RESTARTS: str(_recent_restarts(state, now) + 1),
                                    C.ANNOTATION_GROUP_RESTARTED_AT: f"{now:.3f}"})
            events.emit(client, obj, events.WARNING, "GroupRecreated",
                        f"recreating replica group {index} ({sts['metadata']['name']}): {decision.reason}")
            notes.append(f"group {index} recreated: {decision.reason}")
            state = GroupState(index=index, size=state.size, pods=(), update_revision=state.update_revision)
        elif decision.action == BACKOFF:
            notes.append(f"group {index} broken ({decision.reason}); recreating in {decision.delay:.0f}s (backoff)")
            result.requeue_after = min(result.requeue_after or decision.delay, decision.delay)
        elif decision.action == RECORD_MEMBERS and sts is not None:
            update = {C.ANNOTATION_GROUP_MEMBERS: ",".join(decision.members)}
            if state.restarted_at is not None and now - state.restarted_at > BACKOFF_RESET_SECONDS:
                update[C.ANNOTATION_GROUP_RESTARTS] = None
            _annotate(client, sts, update)
        states.append(state)

    # Roll to a new template one whole group at a time, only while every other group is complete.
    if states and all(s.complete for s in states):
        # An empty updateRevision means the StatefulSet controller has not reported yet: nothing to compare.
        stale = [s for s in states if s.update_revision and not s.updated]
        if stale:
            target = stale[0]
            _recreate(client, target, ns)
            _annotate(client, groups[target.index], {C.ANNOTATION_GROUP_MEMBERS: None})
            events.emit(client, obj, events.NORMAL, "GroupRolled",
                        f"replacing replica group {target.index} with the current template (artifact {plan.key})")
            result.requeue_after = min(result.requeue_after or 2.0, 2.0)
    return summarise(states, plan.replicas, plan.key, notes, failure)


def _recent_restarts(state: GroupState, now: float) -> int:
    if state.restarted_at is None or now - state.restarted_at > BACKOFF_RESET_SECONDS:
        return 0
    return state.restarts

