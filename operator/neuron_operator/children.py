"""Which children a service has, and whether a live child still holds what we would apply. One place for both:
`neuron-operator render` and the reconcile loop ask the same functions.

Skipping applies: every child we apply carries an annotation with a hash of its own manifest. A live child is left
alone when it carries the hash of the manifest we would apply now (so a field we stopped setting, which SSA would
prune, still triggers an apply) and still contains every field of that manifest (so someone's edit of a field we
own is put back). Otherwise the manifest is applied. No per-process memory is involved, so a restarted operator
applies nothing that is already in place.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping, Optional

from . import constants as C
from .builders import build_compile_job, build_pod_disruption_budget, build_service, build_serving_deployment
from .builders.autoscaling import build_autoscaler
from .builders.multinode import build_group_statefulset, build_headless_service
from .plan import ServicePlan


def serving_children(plan: ServicePlan) -> list[dict[str, Any]]:
    """Everything a service serves with, in apply order (workloads before the Service that selects them, the
    autoscaler of spec.autoscaling last)."""
    if plan.multi_node:
        workloads = [build_headless_service(plan)] + [build_group_statefulset(plan, g) for g in range(plan.replicas)]
    else:
        workloads = [build_serving_deployment(plan)]
    autoscaler = build_autoscaler(plan)
    manifests = [*workloads, build_service(plan), build_pod_disruption_budget(plan)]
    return [with_applied_hash(m) for m in manifests + ([autoscaler] if autoscaler else [])]


def all_children(plan: ServicePlan) -> list[dict[str, Any]]:
    """The compile Job and every serving child, as they look once the artifact is compiled (what render prints)."""
    return [build_compile_job(plan), *serving_children(plan)]


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    doc = copy.deepcopy(dict(manifest))
    (doc.get("metadata") or {}).get("annotations", {}).pop(C.ANNOTATION_APPLIED_HASH, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def with_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    out["metadata"].setdefault("annotations", {})[C.ANNOTATION_APPLIED_HASH] = manifest_hash(manifest)
    return out


def needs_apply(live: Optional[Mapping[str, Any]], manifest: Mapping[str, Any]) -> bool:
    """Whether applying ``manifest`` (carrying its applied hash) would change ``live``."""
    if live is None or live["metadata"].get("deletionTimestamp"):
        return live is None
    wanted = (manifest["metadata"].get("annotations") or {}).get(C.ANNOTATION_APPLIED_HASH)
    have = (live["metadata"].get("annotations") or {}).get(C.ANNOTATION_APPLIED_HASH)
    return wanted != have or not contains(live, manifest)


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


def controlled_by(obj: Optional[Mapping[str, Any]], uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or [])


def owned_by(obj: Optional[Mapping[str, Any]], uid: str) -> bool:
    """Any owner reference to ``uid`` (shared compile Jobs carry one per service, none of them the controller)."""
    return any(ref.get("uid") == uid for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or [])
