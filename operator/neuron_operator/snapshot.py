"""Build one pass's Snapshot of a service's children from the watch cache: no API request."""

from __future__ import annotations

from typing import Any, Mapping

from . import constants as C
from .cache import (DEPLOYMENT, HPA, JOB, JOB_NAME_LABEL, PDB, POD, SCALED_OBJECT, SERVICE_OBJECT, STATEFULSET,
                    ObjectCache)
from .decide import Intent, Snapshot, snapshot_names


def take_snapshot(cache: ObjectCache, intent: Intent) -> Snapshot:
    meta: Mapping[str, Any] = intent.service["metadata"]
    ns, name = meta["namespace"], meta["name"]
    names = snapshot_names(intent)
    labelled = cache.with_label(STATEFULSET, ns, C.LABEL_SERVICE, name)
    by_name = {s["metadata"]["name"] for s in labelled}
    # A StatefulSet someone else made under one of our group names is in the snapshot too, so it is never adopted.
    extra = [s for s in (cache.get(STATEFULSET, ns, n) for n in names["groups"] if n not in by_name) if s is not None]
    pods = [p for p in cache.with_label(POD, ns, C.LABEL_SERVICE, name)
            if (p["metadata"].get("labels") or {}).get(C.LABEL_COMPONENT) == C.COMPONENT_SERVING]
    job_name = names["job"]
    return Snapshot(
        deployment=cache.get(DEPLOYMENT, ns, names["deployment"]),
        statefulsets=tuple(labelled + extra),
        endpoint=cache.get(SERVICE_OBJECT, ns, names["endpoint"]),
        headless=cache.get(SERVICE_OBJECT, ns, names["headless"]),
        pdb=cache.get(PDB, ns, names["pdb"]),
        job=cache.get(JOB, ns, job_name) if job_name else None,
        compile_pods=tuple(cache.with_label(POD, ns, JOB_NAME_LABEL, job_name)) if job_name else (),
        pods=tuple(pods),
        hpa=cache.get(HPA, ns, names["autoscaler"]),
        scaled_object=cache.get(SCALED_OBJECT, ns, names["autoscaler"]),
    )
