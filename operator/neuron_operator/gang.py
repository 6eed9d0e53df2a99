"""Gang semantics for multi-node replica groups, as pure decisions.

A group is either complete (every rank Running and Ready, from one incarnation) or it does not count. When a
member is lost (pod replaced after deletion or node loss), restarts, or fails, the operator recreates the whole
group, like LeaderWorkerSet's RecreateGroupOnPodRestart: surviving ranks cannot rejoin a collective whose peer
restarted. Repeated recreations back off exponentially so a crashing group does not thrash the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import constants as C

BACKOFF_BASE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
# A group that stayed complete this long after its last recreation starts its backoff from zero again.
BACKOFF_RESET_SECONDS = 600.0

NONE = "none"
RECORD_MEMBERS = "record-members"
RECREATE = "recreate"
BACKOFF = "backoff"


@dataclass(frozen=True)
class PodInfo:
    name: str
    uid: str
    phase: str
    ready: bool
    restarts: int
    deleting: bool
    revision: str = ""  # controller-revision-hash label
    artifact_key: str = ""
    unschedulable: str = ""

    @classmethod
    def from_pod(cls, pod: dict) -> "PodInfo":
        meta, status = pod["metadata"], pod.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        ready = conditions.get("Ready", {}).get("status") == "True"
        scheduled = conditions.get("PodScheduled", {})
        unschedulable = scheduled.get("message", "") if scheduled.get("status") == "False" else ""
        restarts = sum(int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or [])
        labels = meta.get("labels") or {}
        return cls(name=meta["name"], uid=meta["uid"], phase=status.get("phase", "Pending"), ready=ready,
                   restarts=restarts, deleting=bool(meta.get("deletionTimestamp")),
                   revision=labels.get("controller-revision-hash", ""),
                   artifact_key=labels.get(C.LABEL_ARTIFACT_KEY, ""), unschedulable=unschedulable)


@dataclass(frozen=True)
class GroupState:
    index: int
    size: int
    pods: tuple[PodInfo, ...]
    members: tuple[str, ...] = ()  # uids recorded when the group last became complete
    restarts: int = 0
    restarted_at: Optional[float] = None
    update_revision: str = ""

    @property
    def live(self) -> tuple[PodInfo, ...]:
        return tuple(p for p in self.pods if not p.deleting)

    @property
    def complete(self) -> bool:
        live = self.live
        return len(live) == self.size and all(p.ready and p.phase == "Running" for p in live)

    @property
    def updated(self) -> bool:
        live = self.live
        return (len(live) == self.size and bool(self.update_revision)
                and all(p.revision == self.update_revision for p in live))

    @property
    def serving_key(self) -> Optional[str]:
        keys = {p.artifact_key for p in self.live}
        return keys.pop() if len(keys) == 1 else None


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str = ""
    delay: float = 0.0
    members: tuple[str, ...] = field(default_factory=tuple)


def backoff_seconds(restarts: int) -> float:
    """Delay before the next recreation after `restarts` recent ones: 0 for the first, then 10s, 20s, ... 300s."""
    if restarts <= 0:
        return 0.0
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (restarts - 1))


def broken_reason(group: GroupState) -> str:
    live = {p.uid: p for p in group.live}
    if group.members:
        lost = [uid for uid in group.members if uid not in live]
        if lost:
            return f"{len(lost)} member(s) of the group were lost (pod deleted, evicted or its node gone)"
    for pod in group.live:
        if pod.phase == "Failed":
            return f"pod {pod.name} failed"
        if pod.restarts > 0:
            return f"pod {pod.name} restarted"
    return ""


def decide(group: GroupState, now: float) -> Decision:
    reason = broken_reason(group)
    if reason:
        recent = group.restarted_at is not None and now - group.restarted_at < BACKOFF_RESET_SECONDS
        wait = backoff_seconds(group.restarts if recent else 0)
        elapsed = now - group.restarted_at if group.restarted_at is not None else wait
        if wait and elapsed < wait:
            return Decision(BACKOFF, reason, delay=wait - elapsed)
        return Decision(RECREATE, reason)
    if group.complete:
        uids = tuple(sorted(p.uid for p in group.live))
        if uids != tuple(sorted(group.members)):
            return Decision(RECORD_MEMBERS, members=uids)
    return Decision(NONE)
