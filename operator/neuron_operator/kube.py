"""A thin, typed-enough Kubernetes REST client for the handful of kinds the operator manages.

Why not the generated client's per-kind methods: server-side apply, status patches and generic get/list over a
fixed set of kinds are simpler and uniform on raw paths, and one choke point lets us count every request by
verb (metrics, and "how many writes does a service cost" in benchmarks).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from . import constants as C

# (apiVersion, kind) -> plural; every kind the operator reads or writes, and nothing else.
RESOURCES: dict[tuple[str, str], str] = {
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("v1", "Event"): "events",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("batch/v1", "Job"): "jobs",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    (C.GROUP_VERSION, C.KIND): C.PLURAL,
    (C.HPA_API_VERSION, C.HPA_KIND): "horizontalpodautoscalers",
    (C.KEDA_API_VERSION, C.SCALED_OBJECT_KIND): C.SCALED_OBJECT_PLURAL,
}

WRITE_VERBS = frozenset({"create", "apply", "patch", "update", "delete"})


# The cause the API server's namespace-lifecycle admission gives when it refuses a new object in a namespace being
# deleted (k8s.io/api core/v1 NamespaceTerminatingCause).
NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, causes: tuple[str, ...] = ()):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes  # details.causes[].reason of the Status body

    @property
    def namespace_terminating(self) -> bool:
        """A create or apply refused because the namespace is being deleted: nothing in it is worth retrying."""
        return self.status == 403 and NAMESPACE_TERMINATING_CAUSE in self.causes

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def unreachable(self) -> bool:
        """No HTTP answer at all (API server down or restarting): transient by nature."""
        return self.status == UNREACHABLE


UNREACHABLE = 0  # ApiError.status when the API server never answered

# Characters sent escaped in apply bodies. The API server decodes apply patches as YAML, which takes any printable
# character raw but refuses JSON's surrogate-pair escapes (json.dumps writes U+1F999 as \ud83e\udd99: 400
# "found invalid Unicode character escape code"); YAML does not allow C1 controls, BOM-like and lone surrogate
# code points raw, so those stay \u-escaped exactly as before.
_ESCAPED_IN_APPLY = re.compile("[\x7f-\x9f\ud800-\udfff\ufeff\ufffe\uffff]")


def apply_body(obj: Mapping[str, Any]) -> bytes:
    """A server-side apply body: JSON (valid YAML) in UTF-8 with non-ASCII characters raw. Pure."""
    text = json.dumps(obj, ensure_ascii=False)
    return _ESCAPED_IN_APPLY.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


@dataclass
class RequestStats:
    """Requests by verb since start; thread-safe."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, verb: str) -> None:
        with self._lock:
            self._counts[verb] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def writes(self) -> int:
        snap = self.snapshot()
        return sum(v for k, v in snap.items() if k in WRITE_VERBS)


RequestObserver = Callable[[str, str, int, float], None]  # (verb, kind, http status, seconds)


def _load_configuration() -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)
    return configuration


class KubeClient:
    def __init__(self, configuration: Optional[k8s_client.Configuration] = None,
                 observer: Optional[RequestObserver] = None, timeout: float = 30.0):
        self._api = k8s_client.ApiClient(configuration or _load_configuration())
        self._observer = observer
        self._timeout = timeout
        self.stats = RequestStats()

    # --- paths ---------------------------------------------------------------------------------------
    @staticmethod
    def path(api_version: str, kind: str, namespace: Optional[str], name: Optional[str] = None,
             subresource: Optional[str] = None) -> str:
        plural = RESOURCES[(api_version, kind)]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        parts = [base]
        if namespace:
            parts.append(f"namespaces/{quote(namespace)}")
        parts.append(plural)
        if name:
            parts.append(quote(name))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    # --- transport -----------------------------------------------------------------------------------
    def _request(self, verb: str, kind: str, method: str, path: str, query: Optional[dict] = None,
                 body: Any = None, content_type: str = "application/json") -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, _, _ = self._api.param_serialize(method, path, header_params=headers, auth_settings=["BearerToken"])
        if query:
            url = f"{url}?{urlencode(query)}"
        started = time.monotonic()
        status = 0
        try:
            response = self._api.call_api(method, url, header_params=headers, body=body, _request_timeout=self._timeout)
            status = response.status
            data = response.read()
            # The generated client's call_api returns 4xx/5xx responses instead of raising them.
            if status >= 400:
                raise _error_from_body(status, data)
        except ApiException as exc:
            status = exc.status or 0
            raise _api_error(exc) from None
        except urllib3.exceptions.HTTPError as exc:  # connection refused/reset, timeouts: no answer at all
            raise ApiError(UNREACHABLE, "Unreachable", f"{method} {path}: {exc.__class__.__name__}") from None
        finally:
            self.stats.add(verb)
            if self._observer:
                self._observer(verb, kind, status, time.monotonic() - started)
        return json.loads(data) if data else None

    # --- verbs ---------------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, namespace: Optional[str], name: str) -> Optional[dict]:
        try:
            return self._request("get", kind, "GET", self.path(api_version, kind, namespace, name))
        except ApiError as err:
            if err.not_found:
                return None
            raise

    def served(self, api_version: str, plural: str) -> bool:
        """Discovery: whether the API server serves ``plural`` in ``api_version`` (e.g. an add-on's CRD is installed)."""
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            document = self._request("discover", plural, "GET", path)
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return any(r.get("name") == plural for r in (document or {}).get("resources") or [])

    def list(self, api_version: str, kind: str, namespace: Optional[str], label_selector: Optional[str] = None,
             field_selector: Optional[str] = None) -> list[dict]:
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        result = self._request("list", kind, "GET", self.path(api_version, kind, namespace), query)
        # A LIST's items carry no apiVersion/kind (only the list does); put them back, as informers do, so a listed
        # object compares like a watched one (children.contains checks every field of our manifest, kind included).
        return [{"apiVersion": api_version, "kind": kind, **item} for item in result.get("items") or []]

    def apply(self, obj: dict, force: bool = True) -> dict:
        """Server-side apply with our single field manager. `force` takes fields from managers that fought us
        over fields we own by design (e.g. a user's kubectl edit of our Deployment)."""
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query = {"fieldManager": C.FIELD_MANAGER, "force": "true" if force else "false"}
        # A JSON document is valid YAML; passing bytes keeps the client from re-encoding it.
        return self._request("apply", obj["kind"], "PATCH", path, query, apply_body(obj),
                             content_type="application/apply-patch+yaml")

    def create(self, obj: dict) -> dict:
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return self._request("create", obj["kind"], "POST", path, {"fieldManager": C.FIELD_MANAGER}, obj)

    def patch(self, api_version: str, kind: str, namespace: Optional[str], name: str, body: dict,
              patch_type: str = "merge", subresource: Optional[str] = None) -> dict:
        content_type = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }[patch_type]
        path = self.path(api_version, kind, namespace, name, subresource)
        return self._request("patch", kind, "PATCH", path, {"fieldManager": C.FIELD_MANAGER}, body, content_type)

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict,
                     resource_version: Optional[str] = None) -> dict:
        body: dict[str, Any] = {"status": status}
        if resource_version:
            # Optimistic concurrency: a status computed from a stale read is rejected (409) and recomputed.
            body["metadata"] = {"resourceVersion": resource_version}
        return self.patch(api_version, kind, namespace, name, body, "merge", subresource="status")

    def delete(self, api_version: str, kind: str, namespace: Optional[str], name: str,
               propagation: str = "Background") -> None:
        path = self.path(api_version, kind, namespace, name)
        try:
            self._request("delete", kind, "DELETE", path, None,
                          {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation})
        except ApiError as err:
            if not err.not_found:
                raise


def _causes(body: Any) -> tuple[str, ...]:
    details = body.get("details") if isinstance(body, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    return tuple(str(c.get("reason", "")) for c in causes or [] if isinstance(c, dict))


def _error_from_body(status: int, data: bytes) -> ApiError:
    reason, message, causes = "", "", ()
    try:
        body = json.loads(data or b"{}")
        reason, message, causes = body.get("reason", ""), body.get("message", ""), _causes(body)
    except (ValueError, TypeError, AttributeError):
        message = (data or b"").decode(errors="replace")[:500]
    return ApiError(status, reason, message, causes)


def _api_error(exc: ApiException) -> ApiError:
    message = exc.reason or ""
    reason, causes = "", ()
    try:
        body = json.loads(exc.body or "{}")
        message = body.get("message", message)
        reason = body.get("reason", "")
        causes = _causes(body)
    except (ValueError, TypeError, AttributeError):
        pass
    return ApiError(exc.status or 0, reason, message, causes)
