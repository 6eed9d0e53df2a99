"""Gang decisions for multi-node groups are pure: pods + bookkeeping in, one action out."""

from neuron_operator.gang import (BACKOFF, NONE, RECORD_MEMBERS, RECREATE, GroupState, PodInfo, backoff_seconds,
                                  decide)


def pod(name, uid, ready=True, phase="Running", restarts=0, deleting=False, revision="r1"):
    return PodInfo(name=name, uid=uid, phase=phase, ready=ready, restarts=restarts, deleting=deleting,
                   revision=revision, artifact_key="k")


def group(pods, members=(), restarts=0, restarted_at=None, size=2):
    return GroupState(index=0, size=size, pods=tuple(pods), members=tuple(members), restarts=restarts,
                      restarted_at=restarted_at, update_revision="r1")


def test_complete_group_records_its_members_once():
    g = group([pod("a", "u1"), pod("b", "u2")])
    assert g.complete and g.updated
    assert decide(g, 100.0) == decide(g, 100.0)
    decision = decide(g, 100.0)
    assert decision.action == RECORD_MEMBERS and decision.members == ("u1", "u2")
    assert decide(group([pod("a", "u1"), pod("b", "u2")], members=("u1", "u2")), 100.0).action == NONE


def test_forming_group_waits():
    assert decide(group([pod("a", "u1"), pod("b", "u2", ready=False)]), 0.0).action == NONE


def test_replaced_member_recreates_the_group():
    g = group([pod("a", "u1"), pod("b", "u3", ready=False)], members=("u1", "u2"))
    decision = decide(g, 50.0)
    assert decision.action == RECREATE and "lost" in decision.reason


def test_restart_or_failure_recreates_the_group():
    assert decide(group([pod("a", "u1", restarts=1), pod("b", "u2")]), 0.0).action == RECREATE
    assert decide(group([pod("a", "u1", phase="Failed", ready=False), pod("b", "u2")]), 0.0).action == RECREATE


def test_repeated_recreations_back_off():
    assert [backoff_seconds(n) for n in range(7)] == [0, 10, 20, 40, 80, 160, 300]
    broken = [pod("a", "u1", restarts=1), pod("b", "u2")]
    decision = decide(group(broken, restarts=2, restarted_at=100.0), now=105.0)
    assert decision.action == BACKOFF and decision.delay == 15.0
    assert decide(group(broken, restarts=2, restarted_at=100.0), now=121.0).action == RECREATE
    # long-stable groups start over: the first recreation after 10 minutes is immediate again
    assert decide(group(broken, restarts=5, restarted_at=100.0), now=800.0).action == RECREATE


def test_terminating_pods_do_not_count():
    g = group([pod("a", "u1"), pod("b", "u2", deleting=True)])
    assert not g.complete and decide(g, 0.0).action == NONE
