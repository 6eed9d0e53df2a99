"""Kubernetes Events on meaningful transitions (compile started/succeeded/failed, stalled, ready, group recreated):
the manifests, built purely; the executor posts them, best effort."""

from __future__ import annotations

import uuid
from typing import Any, Mapping, Optional

from . import constants as C
from .api.status import ConditionType as T

NORMAL = "Normal"
WARNING = "Warning"
EXPERIMENTAL_FEATURE = "ExperimentalFeature"  # the Event reason for a new status.warnings entry


def event_manifest(obj: Mapping[str, Any], type_: str, reason: str, message: str, now: str,
                   suffix: Optional[str] = None) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{suffix or uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": C.GROUP_VERSION, "kind": C.KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"],
                           "resourceVersion": meta.get("resourceVersion", "")},
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": C.MANAGED_BY},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": C.MANAGED_BY,
    }


def _condition(doc: Mapping[str, Any], type_: str) -> tuple[Optional[str], Optional[str], str]:
    for c in doc.get("conditions") or []:
        if c["type"] == type_:
            return c.get("status"), c.get("reason"), c.get("message", "")
    return None, None, ""


def transition_events(previous: Mapping[str, Any], status: Mapping[str, Any],
                      compile_summary: str = "") -> list[tuple[str, str, str]]:
    """(type, reason, message) for each transition worth an Event between two status documents. Pure."""
    out = []
    stalled = _condition(status, T.STALLED)
    if stalled[0] == "True" and _condition(previous, T.STALLED)[:2] != stalled[:2]:
        out.append((WARNING, stalled[1] or "Stalled", stalled[2]))
    compiled = _condition(status, T.COMPILED)
    if compiled[0] == "True" and _condition(previous, T.COMPILED)[:2] != compiled[:2]:
        # The compile pod's own summary (graphs, time: the runtime's termination message) on the transition only,
        # so the condition message itself stays stable.
        out.append((NORMAL, "Compiled", compiled[2] + (f" ({compile_summary})" if compile_summary else "")))
    seen = set(previous.get("warnings") or [])
    out += [(WARNING, EXPERIMENTAL_FEATURE, w) for w in status.get("warnings") or [] if w not in seen]
    ready = _condition(status, T.READY)
    if ready[0] == "True" and ready[0] != _condition(previous, T.READY)[0]:
        out.append((NORMAL, "Ready", ready[2]))
    return out
