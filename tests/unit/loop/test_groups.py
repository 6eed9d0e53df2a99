"""Multi-node groups as pure decisions: applies, gang recreation with backoff, member recording, one group at a
time rolls, scale-down; and the same through the reconciler with the fake API."""

from __future__ import annotations

from neuron_operator import constants as C
from neuron_operator.actions import Annotate, Apply, Delete, PostEvent
from neuron_operator.api.spec import parse_spec
from neuron_operator.catalog import load_catalog
from neuron_operator.children import with_applied_hash
from neuron_operator.builders.multinode import build_group_statefulset, build_headless_service
from neuron_operator.config import OperatorConfig
from neuron_operator.gang import BACKOFF_BASE_SECONDS
from neuron_operator.groups import decide_groups, observe_groups
from neuron_operator.plan import plan_for

from .fakes import job_complete, service_body

NOW = 1_000_000.0


def plan(replicas: int = 2):
    spec = service_body(tensorParallelSize=64, nodesPerReplica=2, replicas=replicas)["spec"]
    return plan_for("big", "ml", "svc-uid", parse_spec(spec), load_catalog(), OperatorConfig())


def live_group(p, index: int, revision: str = "rev-1", annotations: dict | None = None) -> dict:
    sts = with_applied_hash(build_group_statefulset(p, index))
    sts["metadata"]["annotations"].update(annotations or {})
    sts["status"] = {"updateRevision": revision}
    return sts


def pod(p, group: int, rank: int, *, uid: str | None = None, ready: bool = True, restarts: int = 0,
        revision: str = "rev-1", phase: str = "Running") -> dict:
    return {"metadata": {"name": f"big-g{group}-{rank}", "uid": uid or f"u{group}{rank}", "labels": {
        C.LABEL_SERVICE: "big", C.LABEL_COMPONENT: C.COMPONENT_SERVING, C.LABEL_GROUP_INDEX: str(group),
        C.LABEL_ARTIFACT_KEY: p.key, "controller-revision-hash": revision}},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": "engine", "restartCount": restarts}]}}


def complete(p, groups=(0, 1)) -> list[dict]:
    return [pod(p, g, r) for g in groups for r in range(p.nodes_per_replica)]


def members(*uids) -> dict:
    return {C.ANNOTATION_GROUP_MEMBERS: ",".join(sorted(uids))}


def headless(p) -> dict:
    return with_applied_hash(build_headless_service(p))


def test_first_pass_applies_the_headless_service_and_every_group():
    p = plan()
    decision = decide_groups(p, {}, None, [], NOW)
    assert [a.target for a in decision.actions if isinstance(a, Apply)] == [
        "Service/big-peers", "StatefulSet/big-g0", "StatefulSet/big-g1"]
    assert not decision.serving.rolled_out


def test_complete_groups_record_their_members_once():
    p = plan()
    groups = {i: live_group(p, i) for i in range(2)}
    decision = decide_groups(p, groups, headless(p), complete(p), NOW)
    assert [a for a in decision.actions if isinstance(a, Annotate)] == [
        Annotate("apps/v1", "StatefulSet", "big-g0", members("u00", "u01")),
        Annotate("apps/v1", "StatefulSet", "big-g1", members("u10", "u11"))]
    assert decision.serving.ready == 2 and decision.serving.rolled_out
    recorded = {i: live_group(p, i, annotations=members(f"u{i}0", f"u{i}1")) for i in range(2)}
    assert decide_groups(p, recorded, headless(p), complete(p), NOW).actions == ()  # idle: nothing to write


def test_a_lost_member_recreates_its_whole_group():
    p = plan()
    groups = {i: live_group(p, i, annotations=members(f"u{i}0", f"u{i}1")) for i in range(2)}
    pods = [pod(p, 0, 0), pod(p, 0, 1, uid="replacement")] + complete(p, groups=(1,))
    decision = decide_groups(p, groups, headless(p), pods, NOW)
    deletes = [a.name for a in decision.actions if isinstance(a, Delete)]
    assert deletes == ["big-g0-0", "big-g0-1"]
    [annotate] = [a for a in decision.actions if isinstance(a, Annotate)]
    assert annotate.annotations[C.ANNOTATION_GROUP_RESTARTS] == "1"
    assert any(isinstance(a, PostEvent) and a.reason == "GroupRecreated" for a in decision.actions)
    assert decision.serving.ready == 1


def test_repeated_recreations_back_off():
    p = plan()
    just_now = {C.ANNOTATION_GROUP_RESTARTS: "1", C.ANNOTATION_GROUP_RESTARTED_AT: f"{NOW - 1:.3f}"}
    groups = {0: live_group(p, 0, annotations={**members("u00", "u01"), **just_now}),
              1: live_group(p, 1, annotations=members("u10", "u11"))}
    pods = [pod(p, 0, 0, restarts=1), pod(p, 0, 1)] + complete(p, groups=(1,))
    decision = decide_groups(p, groups, headless(p), pods, NOW)
    assert not any(isinstance(a, Delete) for a in decision.actions)
    assert 0 < decision.requeue_after <= BACKOFF_BASE_SECONDS
    assert "backoff" in decision.serving.unavailable_reason


def test_a_new_template_rolls_one_group_at_a_time_only_while_all_are_complete():
    p = plan()
    groups = {i: live_group(p, i, revision="rev-2", annotations=members(f"u{i}0", f"u{i}1")) for i in range(2)}
    decision = decide_groups(p, groups, headless(p), complete(p), NOW)  # pods still on rev-1
    deletes = [a.name for a in decision.actions if isinstance(a, Delete)]
    assert deletes == ["big-g0-0", "big-g0-1"] and decision.requeue_after == 2.0
    half = [pod(p, 0, 0, revision="rev-2", ready=False), pod(p, 0, 1, revision="rev-2", ready=False)]
    decision = decide_groups(p, groups, headless(p), half + complete(p, groups=(1,)), NOW)
    assert not any(isinstance(a, Delete) for a in decision.actions)  # group 0 not complete yet: group 1 waits


def test_scaling_down_removes_whole_groups():
    p = plan(replicas=1)
    groups = {i: live_group(p, i, annotations=members(f"u{i}0", f"u{i}1")) for i in range(2)}
    decision = decide_groups(p, groups, headless(p), complete(p), NOW)
    assert Delete("apps/v1", "StatefulSet", "big-g1") in decision.actions


def test_observing_groups_decides_nothing():
    p = plan()
    groups = {i: live_group(p, i) for i in range(2)}
    observation = observe_groups(groups, complete(p), p.nodes_per_replica, p.key)
    assert observation.ready == 2 and observation.artifact_key == p.key


def test_a_multinode_service_through_the_reconciler(world):
    world.add_service(name="big", tensorParallelSize=64, nodesPerReplica=2, replicas=2)
    world.reconcile(name="big")
    [job] = world.kube.of_kind("batch/v1", "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    job_complete(world.kube, job)
    world.watch()
    world.reconcile(name="big")
    names = sorted(o["metadata"]["name"] for o in world.kube.of_kind("apps/v1", "StatefulSet"))
    assert names == ["big-g0", "big-g1"] and world.kube.reads() == 0
    assert world.kube.find("v1", "Service", "ml", "big-peers") is not None
