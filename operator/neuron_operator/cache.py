"""The operator's in-memory copy of every object it watches, fed by the watch events it already receives.

A reconcile pass reads only from here (see snapshot.py), so a pass costs the API server nothing but the writes it
decides; a resync re-enqueues services from here too. The store is filled at start-up by one LIST per kind
(handlers.prime_cache), then kept current by kopf's watch events, and written through by the executor with the
objects the API server returns for our own writes, so the next pass does not act on what it already did.

Thread-safe: watch events arrive on kopf's event loop, passes run in worker threads.
"""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping, Optional

from . import constants as C

# Kinds the operator watches, as (apiVersion, kind); the cache keeps nothing else.
SERVICE = (C.GROUP_VERSION, C.KIND)
DEPLOYMENT = ("apps/v1", "Deployment")
STATEFULSET = ("apps/v1", "StatefulSet")
SERVICE_OBJECT = ("v1", "Service")
PDB = ("policy/v1", "PodDisruptionBudget")
JOB = ("batch/v1", "Job")
POD = ("v1", "Pod")
HPA = (C.HPA_API_VERSION, C.HPA_KIND)
SCALED_OBJECT = (C.KEDA_API_VERSION, C.SCALED_OBJECT_KIND)  # only listed and watched where KEDA is installed
KINDS = (SERVICE, DEPLOYMENT, STATEFULSET, SERVICE_OBJECT, PDB, JOB, POD, HPA, SCALED_OBJECT)

# Labels objects are also indexed by (namespace, label key, value): serving pods by their service, compile pods by
# their Job, group StatefulSets by their service.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEXED_LABELS = (C.LABEL_SERVICE, JOB_NAME_LABEL)

Key = tuple[str, str]  # (namespace, name)


def _resource_version(obj: Mapping[str, Any]) -> Optional[int]:
    text = (obj.get("metadata") or {}).get("resourceVersion") or ""
    return int(text) if text.isdigit() else None


def _stripped(obj: Mapping[str, Any]) -> dict:
    """A private copy without managedFields (a third of a typical object, and never read here)."""
    out = copy.deepcopy(dict(obj))
    (out.get("metadata") or {}).pop("managedFields", None)
    return out


class ObjectCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], dict[Key, dict]] = defaultdict(dict)
        self._by_label: dict[tuple[str, str], dict[tuple[str, str, str], set[str]]] = defaultdict(
            lambda: defaultdict(set))

    # --- writes (watch events, priming, write-through) -------------------------------------------------------
    def upsert(self, kind: tuple[str, str], obj: Mapping[str, Any]) -> None:
        """Store ``obj`` unless the cache already holds a newer version of it (a late watch event after our own
        write-through). resourceVersions are compared only as an optimisation; an equal or unknown one replaces."""
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        new = _stripped(obj)
        with self._lock:
            old = self._objects[kind].get(key)
            old_rv, new_rv = (_resource_version(old) if old else None), _resource_version(new)
            if old_rv is not None and new_rv is not None and new_rv < old_rv:
                return
            if old is not None:
                self._unindex(kind, key, old)
            self._objects[kind][key] = new
            self._index(kind, key, new)

    def remove(self, kind: tuple[str, str], namespace: str, name: str) -> None:
        with self._lock:
            old = self._objects[kind].pop((namespace, name), None)
            if old is not None:
                self._unindex(kind, (namespace, name), old)

    def mark_deleting(self, kind: tuple[str, str], namespace: str, name: str, when: str) -> None:
        """After our own delete call: the object is going, whether or not its watch event arrived yet."""
        with self._lock:
            obj = self._objects[kind].get((namespace, name))
            if obj is not None:
                obj.setdefault("metadata", {}).setdefault("deletionTimestamp", when)

    def replace_all(self, kind: tuple[str, str], objects: Iterable[Mapping[str, Any]],
                    namespaces: Optional[set[str]] = None) -> None:
        """A LIST result: upsert every object and drop those of the listed namespaces (all when None) that are gone."""
        listed = set()
        for obj in objects:
            self.upsert(kind, obj)
            meta = obj.get("metadata") or {}
            listed.add((meta.get("namespace") or "", meta.get("name") or ""))
        with self._lock:
            stale = [k for k in self._objects[kind] if k not in listed and (namespaces is None or k[0] in namespaces)]
        for namespace, name in stale:
            self.remove(kind, namespace, name)

    def _index(self, kind, key: Key, obj: dict) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for label in INDEXED_LABELS:
            if label in labels:
                self._by_label[kind][(key[0], label, labels[label])].add(key[1])

    def _unindex(self, kind, key: Key, obj: dict) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for label in INDEXED_LABELS:
            if label in labels:
                names = self._by_label[kind].get((key[0], label, labels[label]))
                if names is not None:
                    names.discard(key[1])
                    if not names:
                        del self._by_label[kind][(key[0], label, labels[label])]

    # --- reads (copies: a pass can never change the cache by accident) ---------------------------------------
    def get(self, kind: tuple[str, str], namespace: str, name: str) -> Optional[dict]:
        with self._lock:
            obj = self._objects[kind].get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def with_label(self, kind: tuple[str, str], namespace: str, label: str, value: str) -> list[dict]:
        """Objects of ``kind`` in ``namespace`` labelled ``label=value`` (``label`` must be one of INDEXED_LABELS)."""
        if label not in INDEXED_LABELS:
            raise ValueError(f"{label} is not an indexed label; index it in cache.INDEXED_LABELS")
        with self._lock:
            names = sorted(self._by_label[kind].get((namespace, label, value), ()))
            return [copy.deepcopy(self._objects[kind][(namespace, n)]) for n in names]

    def keys(self, kind: tuple[str, str]) -> list[Key]:
        with self._lock:
            return sorted(self._objects[kind])

    def count(self, kind: tuple[str, str]) -> int:
        with self._lock:
            return len(self._objects[kind])

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(KINDS)
