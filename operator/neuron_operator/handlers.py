"""kopf wiring: watches, settings and the work queue. Run with `kopf run -m neuron_operator.handlers`.

Every watch event (the service itself, or any child labelled managed-by=neuron-operator) enqueues one
level-based reconcile of the owning NeuronInferenceService; a periodic resync catches anything missed. There are
no kopf change handlers, timers or daemons: those would write kopf's bookkeeping (annotations, a finalizer) to
users' objects, and deletion is left to ownerReference garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Optional

import kopf

from . import constants as C
from . import metrics
from .catalog import load_catalog
from .config import OperatorConfig, has_namespace_patterns, namespace_watched
from .kube import ApiError, KubeClient
from .reconcile import Reconciler, RetryLater
from .workqueue import RetryableError, WorkQueue

log = logging.getLogger("neuron_operator")

RESYNC_SECONDS = 60.0
_state: dict[str, Any] = {}


def _managed_children(**_: Any) -> dict:
    return {C.LABEL_MANAGED_BY: C.MANAGED_BY}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping stays under our prefix and out of the public status (we have no change handlers,
    # so none is written today; this guards future ones).
    settings.persistence.finalizer = f"{C.API_GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=C.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=C.KOPF_PREFIX)
    # Watches are re-established every 5 minutes even if the connection silently died (no TCP reset through
    # some load balancers); the client-side timeout is a little longer than the server-side one.
    settings.watching.server_timeout = int(os.environ.get("NEURON_OPERATOR_WATCH_TIMEOUT", "300"))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.watching.connect_timeout = 30
    # We post our own Events on meaningful transitions; kopf's per-handler log events would be noise.
    settings.posting.enabled = False
    settings.execution.max_workers = 8

    config = OperatorConfig.from_env()
    client = KubeClient(observer=metrics.observe_api_request)
    reconciler = Reconciler(client, load_catalog(), config)
    loop = asyncio.get_running_loop()

    async def run_pass(key: tuple[str, str]) -> None:
        with metrics.RECONCILE_DURATION.time():
            try:
                result = await loop.run_in_executor(None, reconciler.reconcile, *key)
            except RetryLater as exc:
                metrics.RECONCILE_ERRORS.labels(reason="retry").inc()
                raise RetryableError(str(exc), exc.delay) from None
            except ApiError as exc:
                metrics.RECONCILE_ERRORS.labels(reason=f"api_{exc.status}").inc()
                raise RetryableError(str(exc)) from None
            except Exception:
                metrics.RECONCILE_ERRORS.labels(reason="exception").inc()
                raise
        if result.compile_started:
            metrics.COMPILE_JOBS.labels(outcome="created").inc()
        _state["phases"][key] = result.phase
        if result.requeue_after:
            _state["queue"].enqueue(key, delay=result.requeue_after)

    _state["reconciler"] = reconciler
    queue = WorkQueue(run_pass, workers=int(os.environ.get("NEURON_OPERATOR_WORKERS", "4")))
    queue.start()
    _state.update(queue=queue, client=client, config=config, phases={})
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    _state["resync"] = loop.create_task(_resync_forever(client, config, queue))


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    task = _state.get("resync")
    if task:
        task.cancel()
    queue: Optional[WorkQueue] = _state.get("queue")
    if queue:
        await queue.stop()


async def _resync_forever(client: KubeClient, config: OperatorConfig, queue: WorkQueue) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        # Patterns need a cluster-wide list filtered here; plain names are listed one namespace at a time.
        patterns = has_namespace_patterns(config.namespaces)
        namespaces = (None,) if patterns or not config.namespaces else config.namespaces
        try:
            for ns in namespaces:
                items = await loop.run_in_executor(None, client.list, C.GROUP_VERSION, C.KIND, ns)
                for item in items:
                    item_ns = item["metadata"]["namespace"]
                    if not patterns or namespace_watched(item_ns, config.namespaces):
                        queue.enqueue((item_ns, item["metadata"]["name"]))
        except ApiError as exc:
            log.warning("resync list failed: %s", exc)
        _publish_phase_counts()


def _publish_phase_counts() -> None:
    counts: dict[str, int] = {}
    for phase in _state.get("phases", {}).values():
        if phase:
            counts[phase] = counts.get(phase, 0) + 1
    metrics.set_phase_counts(counts)


def _enqueue(namespace: Optional[str], name: Optional[str]) -> None:
    queue: Optional[WorkQueue] = _state.get("queue")
    if queue is not None and namespace and name:
        queue.enqueue((namespace, name))


@kopf.on.event(C.API_GROUP, C.API_VERSION, C.PLURAL)
def service_event(type: str, name: str, namespace: str, **_: Any) -> None:  # noqa: A002 - kopf's kwarg name
    if type == "DELETED":
        _state.get("phases", {}).pop((namespace, name), None)
        _publish_phase_counts()
        return
    _enqueue(namespace, name)
    _publish_phase_counts()


def _enqueue_owners(body: kopf.Body) -> None:
    namespace = body.get("metadata", {}).get("namespace")
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == C.KIND and ref.get("apiVersion", "").startswith(C.API_GROUP + "/"):
            _enqueue(namespace, ref.get("name"))


@kopf.on.event("apps", "v1", "deployments", labels={C.LABEL_MANAGED_BY: C.MANAGED_BY})
def deployment_event(type: str, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    _child_event("Deployment", type, body)


def _child_event(kind: str, type_: str, body: kopf.Body) -> None:
    reconciler = _state.get("reconciler")
    if reconciler is not None:
        if type_ == "DELETED":
            reconciler.forget_child(kind, body["metadata"].get("namespace"), body["metadata"]["name"])
        else:
            reconciler.observe_child(kind, dict(body))
    _enqueue_owners(body)


@kopf.on.event("", "v1", "services", labels={C.LABEL_MANAGED_BY: C.MANAGED_BY})
def service_child_event(type: str, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    _child_event("Service", type, body)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels={C.LABEL_MANAGED_BY: C.MANAGED_BY})
def pdb_event(type: str, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    _child_event("PodDisruptionBudget", type, body)


@kopf.on.event("", "v1", "pods", labels={C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_COMPONENT: C.COMPONENT_SERVING})
def serving_pod_event(body: kopf.Body, **_: Any) -> None:
    # Serving pods are owned by ReplicaSets/StatefulSets, so the service is found by label. Pod events drive the
    # multi-node gang checks (a member restarted, failed or was replaced) without waiting for a resync.
    labels = body.get("metadata", {}).get("labels") or {}
    _enqueue(body.get("metadata", {}).get("namespace"), labels.get(C.LABEL_SERVICE))


@kopf.on.event("apps", "v1", "statefulsets", labels={C.LABEL_MANAGED_BY: C.MANAGED_BY})
def statefulset_event(type: str, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    _child_event("StatefulSet", type, body)


_JOB_OUTCOMES = {"Complete": "succeeded", "Failed": "failed"}


@kopf.on.event("batch", "v1", "jobs", labels={C.LABEL_MANAGED_BY: C.MANAGED_BY,
                                              C.LABEL_COMPONENT: C.COMPONENT_COMPILE})
def job_event(body: kopf.Body, **_: Any) -> None:
    # Count each Job's terminal outcome once per operator process (a restart recounts finished Jobs once).
    seen: set = _state.setdefault("job_outcomes", set())
    for cond in (body.get("status") or {}).get("conditions") or []:
        outcome = _JOB_OUTCOMES.get(cond.get("type"))
        if outcome and cond.get("status") == "True" and (body["metadata"]["uid"], outcome) not in seen:
            seen.add((body["metadata"]["uid"], outcome))
            metrics.COMPILE_JOBS.labels(outcome=outcome).inc()
    _enqueue_owners(body)
