"""Kubernetes Events on meaningful transitions (compile started/succeeded/failed, stalled, ready)."""

from __future__ import annotations

import datetime
import logging
import uuid

from . import constants as C
from .kube import ApiError, KubeClient

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


def emit(client: KubeClient, obj: dict, type_: str, reason: str, message: str) -> None:
    meta = obj["metadata"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
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
    try:
        client.create(event)
    except ApiError as err:  # an event is best effort: never fail a reconcile over it
        log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], err)
