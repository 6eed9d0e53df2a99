"""kopf wiring: watches feed the cache, the cache feeds the work queue. Run with `kopf run -m neuron_operator.handlers`.

Every watch event (the service itself, or any child labelled managed-by=neuron-operator) updates the in-memory cache
(cache.py) and enqueues one level-based reconcile of the owning NeuronInferenceService; the pass reads from the
cache only. At start-up one LIST per kind fills the cache before the first pass, so a pass never acts on a
half-filled cache; a periodic resync re-enqueues every cached service and costs no request. There are no kopf
change handlers, timers or daemons: those would write kopf's bookkeeping (annotations, a finalizer) to users'
objects, and deletion is left to ownerReference garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Mapping, Optional

import kopf

from . import constants as C
from . import metrics
from .api.status import CompileOutcome, ConditionStatus, ConditionType
from .cache import (DEPLOYMENT, HPA, JOB, JOB_NAME_LABEL, KINDS, PDB, POD, SCALED_OBJECT, SERVICE, SERVICE_OBJECT,
                    STATEFULSET, ObjectCache)
from .catalog import load_catalog
from .config import OperatorConfig, has_namespace_patterns, namespace_watched
from .kube import ApiError, KubeClient
from .observe import compile_finished, job_outcome
from .reconcile import Reconciler, RetryLater
from .workqueue import RetryableError, WorkQueue

log = logging.getLogger("neuron_operator")

RESYNC_SECONDS = 60.0
MANAGED = {C.LABEL_MANAGED_BY: C.MANAGED_BY}
_state: dict[str, Any] = {}


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
    quiet_per_event_logs()

    config = OperatorConfig.from_env()
    client = KubeClient(observer=metrics.observe_api_request)
    cache = ObjectCache()
    loop = asyncio.get_running_loop()
    config, kinds = await loop.run_in_executor(None, discover_autoscaling, client, config)
    reconciler = Reconciler(client, cache, load_catalog(), config)
    await loop.run_in_executor(None, prime_cache, client, cache, config, kinds)

    async def run_pass(key: tuple[str, str]) -> None:
        with metrics.RECONCILE_DURATION.time():
            try:
                result = await loop.run_in_executor(None, reconciler.reconcile, *key)
            except RetryLater as exc:
                metrics.RECONCILE_ERRORS.labels(reason="retry").inc()
                raise RetryableError(str(exc), exc.delay) from None
            except ApiError as exc:  # an answer from the API server, or none (restarting): retried with backoff
                metrics.RECONCILE_ERRORS.labels(reason="unreachable" if exc.unreachable else f"api_{exc.status}").inc()
                raise RetryableError(str(exc)) from None
            except Exception:
                metrics.RECONCILE_ERRORS.labels(reason="exception").inc()
                raise
        if result.compile_started:
            metrics.COMPILE_JOBS.labels(outcome="created").inc()
        log_transitions(key, result.phase, cache)
        if result.requeue_after:
            _state["queue"].enqueue(key, delay=result.requeue_after)

    queue = WorkQueue(run_pass, workers=int(os.environ.get("NEURON_OPERATOR_WORKERS", "4")))
    _state.update(queue=queue, client=client, cache=cache, config=config, reconciler=reconciler, phases={},
                  stalled={})
    queue.start()
    for namespace, name in cache.keys(SERVICE):
        if _watched(config, namespace):
            queue.enqueue((namespace, name))
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_address)
    _state["resync"] = loop.create_task(_resync_forever(cache, config, queue))


def quiet_per_event_logs() -> None:
    """Keep the log to transitions and errors: kopf's per-object logger writes one INFO line per watch event
    ("Handler 'service_event' succeeded"), aiohttp one per liveness probe. Their warnings and errors stay; with
    --verbose (root logger at DEBUG) everything stays, for tracing."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in ("kopf.objects", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)


def log_transitions(key: tuple[str, str], phase: Optional[str], cache: ObjectCache) -> None:
    """Log a service's phase when it changes and its Stalled condition when it turns True, changes reason or
    clears: once per transition (and once per service after a restart), never once per pass.

    The status is read from the cache: the executor puts the written status there, and an unwritten one equals
    what the cache holds."""
    namespace, name = key
    phases: dict = _state.setdefault("phases", {})
    if phase and phase != phases.get(key):
        log.info("%s/%s: phase %s", namespace, name, phase)
    phases[key] = phase
    service = cache.get(SERVICE, namespace, name)
    stalled = next((c for c in ((service or {}).get("status") or {}).get("conditions") or []
                    if c.get("type") == ConditionType.STALLED), None)
    reason = stalled.get("reason") if stalled and stalled.get("status") == ConditionStatus.TRUE else None
    seen: dict = _state.setdefault("stalled", {})
    if reason and reason != seen.get(key):
        log.warning("%s/%s: stalled (%s): %s", namespace, name, reason, stalled.get("message", ""))
    elif reason is None and seen.get(key):
        log.info("%s/%s: no longer stalled", namespace, name)
    if service is not None:
        seen[key] = reason


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    task = _state.get("resync")
    if task:
        task.cancel()
    queue: Optional[WorkQueue] = _state.get("queue")
    if queue:
        await queue.stop()


# Label selectors of the watches (and of the priming LISTs, which must see the same objects).
SELECTORS = {
    SERVICE: None,
    DEPLOYMENT: MANAGED,
    STATEFULSET: MANAGED,
    SERVICE_OBJECT: MANAGED,
    PDB: MANAGED,
    JOB: {**MANAGED, C.LABEL_COMPONENT: C.COMPONENT_COMPILE},
    POD: MANAGED,  # serving pods (gang checks, runtime failures) and compile pods (failure detail)
    HPA: MANAGED,
    SCALED_OBJECT: MANAGED,
}


def _scopes(config: OperatorConfig) -> tuple[Optional[str], ...]:
    """Namespaces to list: all (one cluster-wide LIST, filtered by patterns) or each named namespace."""
    return (None,) if has_namespace_patterns(config.namespaces) or not config.namespaces else config.namespaces


def _watched(config: OperatorConfig, namespace: str) -> bool:
    return not config.namespaces or namespace_watched(namespace, config.namespaces)


def discover_autoscaling(client: KubeClient, config: OperatorConfig) -> tuple[OperatorConfig, tuple]:
    """Once, at start-up: is KEDA's ScaledObject API served? It decides the auto provider of spec.autoscaling, and
    whether ScaledObjects can be listed at all. Returns the resolved config and the kinds to prime."""
    keda = client.served(C.KEDA_API_VERSION, C.SCALED_OBJECT_PLURAL)
    config, why = config.resolve_autoscaling_provider(keda)
    log.info("autoscaler for spec.autoscaling: %s", why)
    return config, KINDS if keda else tuple(k for k in KINDS if k != SCALED_OBJECT)


def prime_cache(client: KubeClient, cache: ObjectCache, config: OperatorConfig, kinds: tuple = KINDS) -> None:
    """One LIST per kind (per named namespace) before the first pass: afterwards only watch events change the
    cache. A constant start-up cost, whatever the number of services."""
    for kind in kinds:
        selector = SELECTORS[kind]
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) if selector else None
        for scope in _scopes(config):
            items = client.list(kind[0], kind[1], scope, label_selector=label_selector)
            items = [i for i in items if _watched(config, i["metadata"].get("namespace", ""))]
            cache.replace_all(kind, items, namespaces=None if scope is None else {scope})
    log.info("cache primed: %s", ", ".join(f"{cache.count(k)} {k[1]}" for k in kinds))


async def _resync_forever(cache: ObjectCache, config: OperatorConfig, queue: WorkQueue) -> None:
    """Level-based safety net: every service is reconciled at least once a minute, from the cache (no request)."""
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        for namespace, name in cache.keys(SERVICE):
            if _watched(config, namespace):
                queue.enqueue((namespace, name))
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


def _remember(kind: tuple[str, str], type_: Optional[str], body: kopf.Body) -> Optional[ObjectCache]:
    cache: Optional[ObjectCache] = _state.get("cache")
    if cache is None:
        return None
    meta = body.get("metadata") or {}
    if type_ == "DELETED":
        cache.remove(kind, meta.get("namespace") or "", meta.get("name") or "")
    else:
        cache.upsert(kind, dict(body))
    return cache


def _enqueue_owners(body: kopf.Body) -> None:
    namespace = body.get("metadata", {}).get("namespace")
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == C.KIND and ref.get("apiVersion", "").startswith(C.API_GROUP + "/"):
            _enqueue(namespace, ref.get("name"))


@kopf.on.event(C.API_GROUP, C.VERSION, C.PLURAL)
def service_event(type: Optional[str], body: kopf.Body, name: str, namespace: str, **_: Any) -> None:  # noqa: A002
    _remember(SERVICE, type, body)
    if type == "DELETED":
        _state.get("phases", {}).pop((namespace, name), None)
        _state.get("stalled", {}).pop((namespace, name), None)
        _publish_phase_counts()
        return
    _enqueue(namespace, name)


def _child_event(kind: tuple[str, str], type_: Optional[str], body: kopf.Body) -> None:
    _remember(kind, type_, body)
    _enqueue_owners(body)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_event(type: Optional[str], body: kopf.Body, **_: Any) -> None:  # noqa: A002 - kopf's kwarg name
    _child_event(DEPLOYMENT, type, body)


@kopf.on.event("apps", "v1", "statefulsets", labels=MANAGED)
def statefulset_event(type: Optional[str], body: kopf.Body, **_: Any) -> None:  # noqa: A002
    _child_event(STATEFULSET, type, body)


@kopf.on.event("", "v1", "services", labels=MANAGED)
def service_child_event(type: Optional[str], body: kopf.Body, **_: Any) -> None:  # noqa: A002
    _child_event(SERVICE_OBJECT, type, body)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
def pdb_event(type: Optional[str], body: kopf.Body, **_: Any) -> None:  # noqa: A002
    _child_event(PDB, type, body)


def _child_watch(kind: tuple[str, str], plural: str) -> Any:
    """The watch of a child kind that needs nothing beyond the cache and its owner's reconcile."""
    group, _, version = kind[0].rpartition("/")

    def on_event(type: Optional[str], body: kopf.Body, **_: Any) -> None:  # noqa: A002
        _child_event(kind, type, body)

    on_event.__name__ = on_event.__qualname__ = f"{plural}_event"
    return kopf.on.event(group, version, plural, labels=MANAGED, id=on_event.__name__)(on_event)


# The autoscaler of spec.autoscaling, either kind. Where KEDA is not installed kopf finds no scaledobjects resource
# and watches nothing (it starts watching once the CRD appears).
hpa_event = _child_watch(HPA, "horizontalpodautoscalers")
scaled_object_event = _child_watch(SCALED_OBJECT, C.SCALED_OBJECT_PLURAL)


@kopf.on.event("", "v1", "pods", labels=MANAGED)
def pod_event(type: Optional[str], body: kopf.Body, **_: Any) -> None:  # noqa: A002
    # Serving pods belong to ReplicaSets/StatefulSets, compile pods to their Job: the service is found by label
    # (serving) or through the Job's owners (compile). Pod events drive the gang checks and failure reports.
    cache = _remember(POD, type, body)
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(C.LABEL_COMPONENT) == C.COMPONENT_SERVING:
        _enqueue(meta.get("namespace"), labels.get(C.LABEL_SERVICE))
    elif cache is not None and labels.get(JOB_NAME_LABEL):
        job = cache.get(JOB, meta.get("namespace") or "", labels[JOB_NAME_LABEL])
        if job is not None:
            _enqueue_owners(job)


@kopf.on.event("batch", "v1", "jobs", labels={**MANAGED, C.LABEL_COMPONENT: C.COMPONENT_COMPILE})
def job_event(type: Optional[str], body: kopf.Body, **_: Any) -> None:  # noqa: A002
    report_compile_outcome(type, body)
    _child_event(JOB, type, body)


def report_compile_outcome(type_: Optional[str], job: Mapping[str, Any]) -> None:
    """Count, time and log each compile Job's outcome once per operator process (a restart reports the finished
    Jobs it lists once more), from the same reading of the Job that status.lastCompile shows."""
    seen: set = _state.setdefault("job_outcomes", set())
    uid = job["metadata"].get("uid")
    if type_ == "DELETED":
        seen.discard(uid)  # a deleted Job never comes back under its uid
        return
    result = compile_finished(job)
    if result is None or uid in seen:
        return
    seen.add(uid)
    metrics.observe_compile_finished(result.outcome.lower(), result.duration_seconds)
    took = f" in {result.duration_seconds}s" if result.duration_seconds is not None else ""
    where = f"{job['metadata'].get('namespace')}/{result.job_name}"
    if result.outcome == CompileOutcome.SUCCEEDED:
        log.info("compile Job %s succeeded%s (artifact %s)", where, took, result.key)
    else:
        failed = job_outcome(job)[1] or {}
        log.warning("compile Job %s failed%s (artifact %s): %s: %s", where, took, result.key,
                    failed.get("reason", ""), failed.get("message", ""))
