"""A recording fake of KubeClient (same interface) and helpers that play the controllers' and watches' parts.

The fake keeps objects in memory with uids, generations and resourceVersions, records every request as
(verb, kind, namespace, name), and can be told to fail the next request of a verb/kind. It is not an API server:
server-side apply is modelled as "merge our manifest over the object, keep status", which is what the loop's
decisions depend on. What the real API server does differently is covered by the e2e tier.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from typing import Any, Optional

from neuron_operator import constants as C
from neuron_operator.cache import KINDS, ObjectCache
from neuron_operator.kube import WRITE_VERBS, ApiError

READ_VERBS = frozenset({"get", "list"})


def _merge(base: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386): dicts merge, None deletes, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self.requests: list[tuple[str, str, str, str]] = []
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)
        self._failures: list[tuple[str, str, ApiError]] = []
        self.unserved: set[str] = set()  # apiVersions discovery reports as not served (e.g. KEDA not installed)
        # (apiVersion, kind, namespace, name, "labels"|"annotations") -> the keys our field manager last applied
        self._applied_keys: dict[tuple[str, ...], set[str]] = {}

    # --- test controls -----------------------------------------------------------------------------------------
    def fail_next(self, verb: str, kind: str, status: int, message: str = "injected",
                  causes: tuple[str, ...] = ()) -> None:
        reason = {403: "Forbidden", 404: "NotFound", 409: "Conflict", 422: "Invalid", 500: "InternalError"}.get(status, "")
        self._failures.append((verb, kind, ApiError(status, reason, message, causes)))

    def counts(self) -> Counter:
        return Counter(verb for verb, *_ in self.requests)

    def reads(self) -> int:
        return sum(1 for verb, *_ in self.requests if verb in READ_VERBS)

    def writes(self) -> int:
        return sum(1 for verb, *_ in self.requests if verb in WRITE_VERBS)

    def reset_requests(self) -> None:
        self.requests.clear()

    def put(self, obj: dict) -> dict:
        """Store an object as if someone else created it (no request recorded)."""
        return self._store(copy.deepcopy(obj), new=True)

    def replace(self, obj: dict) -> dict:
        """Store a changed object as someone else's write would (new resourceVersion, no request recorded)."""
        return self._store(copy.deepcopy(obj), new=False)

    def set_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict) -> dict:
        """A controller reporting status (e.g. the Job controller's Complete condition)."""
        obj = self.objects[(api_version, kind)][(namespace, name)]
        obj["status"] = copy.deepcopy(status)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def find(self, api_version: str, kind: str, namespace: str, name: str) -> Optional[dict]:
        obj = self.objects.get((api_version, kind), {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def of_kind(self, api_version: str, kind: str) -> list[dict]:
        return [copy.deepcopy(o) for o in self.objects.get((api_version, kind), {}).values()]

    def feed(self, cache: ObjectCache) -> None:
        """Every stored object into the cache, as the watches would deliver them."""
        for (api_version, kind), objects in self.objects.items():
            if (api_version, kind) in KINDS:
                for obj in objects.values():
                    cache.upsert((api_version, kind), obj)

    # --- internals ---------------------------------------------------------------------------------------------
    def _record(self, verb: str, kind: str, namespace: Optional[str], name: Optional[str]) -> None:
        self.requests.append((verb, kind, namespace or "", name or ""))
        for i, (f_verb, f_kind, error) in enumerate(self._failures):
            if f_verb == verb and f_kind == kind:
                del self._failures[i]
                raise error

    def _store(self, obj: dict, new: bool) -> dict:
        meta = obj.setdefault("metadata", {})
        if new:
            meta.setdefault("uid", f"uid-{next(self._uid)}")
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", "2026-12-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._rv))
        self.objects.setdefault((obj["apiVersion"], obj["kind"]), {})[(meta.get("namespace", ""), meta["name"])] = obj
        return copy.deepcopy(obj)

    # --- the KubeClient interface -----------------------------------------------------------------------------
    def served(self, api_version: str, plural: str) -> bool:
        self._record("discover", plural, None, None)
        return api_version not in self.unserved

    def get(self, api_version: str, kind: str, namespace: Optional[str], name: str) -> Optional[dict]:
        self._record("get", kind, namespace, name)
        return self.find(api_version, kind, namespace or "", name)

    def list(self, api_version: str, kind: str, namespace: Optional[str], label_selector: Optional[str] = None,
             field_selector: Optional[str] = None) -> list[dict]:
        self._record("list", kind, namespace, None)
        wanted = dict(part.split("=", 1) for part in label_selector.split(",")) if label_selector else {}
        out = []
        for (ns, _), obj in sorted(self.objects.get((api_version, kind), {}).items()):
            labels = obj["metadata"].get("labels") or {}
            if (namespace is None or ns == namespace) and all(labels.get(k) == v for k, v in wanted.items()):
                out.append(copy.deepcopy(obj))
        return out

    def apply(self, obj: dict, force: bool = True) -> dict:
        meta = obj["metadata"]
        self._record("apply", obj["kind"], meta.get("namespace"), meta["name"])
        existing = self.objects.get((obj["apiVersion"], obj["kind"]), {}).get((meta.get("namespace", ""), meta["name"]))
        ident = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        previously = {key: self._applied_keys.get((*ident, key), set()) for key in ("labels", "annotations")}
        for key in ("labels", "annotations"):
            self._applied_keys[(*ident, key)] = set(meta.get(key) or {})
        if existing is None:
            return self._store(copy.deepcopy(obj), new=True)
        merged = _merge(existing, {k: v for k, v in obj.items() if k != "status"})
        # As server-side apply does for one field manager: keys it applied before and omits now are removed, keys
        # others set stay, keys it sets take its value.
        for key in ("labels", "annotations"):
            ours = meta.get(key) or {}
            kept = {k: v for k, v in (existing["metadata"].get(key) or {}).items()
                    if k not in ours and k not in previously[key]}
            merged["metadata"][key] = {**kept, **ours}
        if merged.get("spec") != existing.get("spec"):
            merged["metadata"]["generation"] = int(existing["metadata"].get("generation", 1)) + 1
        return self._store(merged, new=False)

    def create(self, obj: dict) -> dict:
        meta = obj["metadata"]
        self._record("create", obj["kind"], meta.get("namespace"), meta["name"])
        if (meta.get("namespace", ""), meta["name"]) in self.objects.get((obj["apiVersion"], obj["kind"]), {}):
            raise ApiError(409, "AlreadyExists", f"{obj['kind']} {meta['name']} already exists")
        return self._store(copy.deepcopy(obj), new=True)

    def patch(self, api_version: str, kind: str, namespace: Optional[str], name: str, body: dict,
              patch_type: str = "merge", subresource: Optional[str] = None) -> dict:
        self._record("patch", kind, namespace, name)
        existing = self.objects.get((api_version, kind), {}).get((namespace or "", name))
        if existing is None:
            raise ApiError(404, "NotFound", f"{kind} {name} not found")
        if patch_type == "strategic" and "ownerReferences" in (body.get("metadata") or {}):
            refs = list(existing["metadata"].get("ownerReferences") or [])
            for ref in body["metadata"]["ownerReferences"]:  # merged by uid, as the strategic merge key says
                if all(r.get("uid") != ref.get("uid") for r in refs):
                    refs.append(copy.deepcopy(ref))
            merged = copy.deepcopy(existing)
            merged["metadata"]["ownerReferences"] = refs
        else:
            merged = _merge(existing, body)
        return self._store(merged, new=False)

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict,
                     resource_version: Optional[str] = None) -> dict:
        self._record("patch", kind, namespace, name)
        existing = self.objects.get((api_version, kind), {}).get((namespace, name))
        if existing is None:
            raise ApiError(404, "NotFound", f"{kind} {name} not found")
        if resource_version and existing["metadata"]["resourceVersion"] != resource_version:
            raise ApiError(409, "Conflict", "the object has been modified")
        merged = copy.deepcopy(existing)
        merged["status"] = _merge(existing.get("status") or {}, status)
        return self._store(merged, new=False)

    def delete(self, api_version: str, kind: str, namespace: Optional[str], name: str,
               propagation: str = "Background") -> None:
        self._record("delete", kind, namespace, name)
        self.objects.get((api_version, kind), {}).pop((namespace or "", name), None)


def service_body(name: str = "llama", namespace: str = "ml", uid: str = "svc-uid", generation: int = 1,
                 **spec_overrides: Any) -> dict:
    spec: dict[str, Any] = {
        "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "instanceType": "trn1.32xlarge",
        "tensorParallelSize": 8,
        "replicas": 1,
        "artifacts": {"pvc": {"claimName": "artifacts"}},
    }
    spec.update(spec_overrides)
    return {"apiVersion": C.GROUP_VERSION, "kind": C.KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation}, "spec": spec}


def job_complete(kube: FakeKube, job: dict) -> dict:
    meta = job["metadata"]
    return kube.set_status("batch/v1", "Job", meta["namespace"], meta["name"], {
        "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})


# The Job controller's two steps of a success (Kubernetes >= 1.31): the interim condition, then Complete.
SUCCESS_AT, COMPLETE_AT = "2026-12-01T00:05:00Z", "2026-12-01T00:05:02Z"


def job_success_criteria_met(kube: FakeKube, job: dict) -> dict:
    meta = job["metadata"]
    return kube.set_status("batch/v1", "Job", meta["namespace"], meta["name"], {
        "startTime": "2026-12-01T00:00:00Z", "succeeded": 1,
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": SUCCESS_AT}]})


def job_complete_after_success_criteria(kube: FakeKube, job: dict) -> dict:
    meta = job["metadata"]
    return kube.set_status("batch/v1", "Job", meta["namespace"], meta["name"], {
        "startTime": "2026-12-01T00:00:00Z", "succeeded": 1, "completionTime": COMPLETE_AT,
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": SUCCESS_AT},
                       {"type": "Complete", "status": "True", "lastTransitionTime": COMPLETE_AT}]})


def deployment_available(kube: FakeKube, deployment: dict) -> dict:
    meta = deployment["metadata"]
    replicas = deployment["spec"]["replicas"]
    return kube.set_status("apps/v1", "Deployment", meta["namespace"], meta["name"], {
        "observedGeneration": meta["generation"], "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas})
