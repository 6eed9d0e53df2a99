"""The kopf wiring without kopf running: watch events land in the cache and enqueue the owning service; the
priming LISTs fill the cache at a constant cost; the resync costs no request."""

from __future__ import annotations

import asyncio

import pytest

from neuron_operator import constants as C
from neuron_operator import handlers
from neuron_operator.cache import DEPLOYMENT, JOB, KINDS, POD, SERVICE, ObjectCache
from neuron_operator.config import OperatorConfig

from .fakes import FakeKube, service_body


class RecordingQueue:
    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []

    def enqueue(self, key, delay: float = 0.0) -> None:
        self.keys.append(key)


@pytest.fixture
def state(monkeypatch):
    fresh = {"cache": ObjectCache(), "queue": RecordingQueue(), "phases": {}}
    monkeypatch.setattr(handlers, "_state", fresh)
    return fresh


def owned(kind: str, name: str, owner: str = "llama", api_version: str = "apps/v1", **labels) -> dict:
    return {"apiVersion": api_version, "kind": kind, "metadata": {
        "name": name, "namespace": "ml", "uid": f"uid-{name}", "labels": {C.LABEL_MANAGED_BY: C.MANAGED_BY, **labels},
        "ownerReferences": [{"apiVersion": C.GROUP_VERSION, "kind": C.KIND, "name": owner, "uid": "svc-uid",
                             "controller": True}]}}


def test_a_service_event_caches_and_enqueues_it(state):
    body = service_body()
    handlers.service_event(type="ADDED", body=body, name="llama", namespace="ml")
    assert state["cache"].get(SERVICE, "ml", "llama")["spec"] == body["spec"]
    assert state["queue"].keys == [("ml", "llama")]
    handlers.service_event(type="DELETED", body=body, name="llama", namespace="ml")
    assert state["cache"].get(SERVICE, "ml", "llama") is None and state["queue"].keys == [("ml", "llama")]


def test_a_child_event_enqueues_its_owner_and_a_deletion_leaves_the_cache(state):
    dep = owned("Deployment", "llama")
    handlers.deployment_event(type=None, body=dep)  # kopf's initial listing has type None
    assert state["cache"].get(DEPLOYMENT, "ml", "llama") is not None and state["queue"].keys == [("ml", "llama")]
    handlers.deployment_event(type="DELETED", body=dep)
    assert state["cache"].get(DEPLOYMENT, "ml", "llama") is None


def test_serving_pods_enqueue_by_label_and_compile_pods_through_their_job(state):
    serving = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "llama-1", "namespace": "ml", "labels": {
        C.LABEL_COMPONENT: C.COMPONENT_SERVING, C.LABEL_SERVICE: "llama"}}}
    handlers.pod_event(type="MODIFIED", body=serving)
    job = owned("Job", "nis-compile-1", api_version="batch/v1", **{C.LABEL_COMPONENT: C.COMPONENT_COMPILE})
    job["metadata"]["ownerReferences"].append({"apiVersion": C.GROUP_VERSION, "kind": C.KIND, "name": "twin",
                                               "uid": "twin-uid"})
    handlers.job_event(type="ADDED", body=job)
    state["queue"].keys.clear()
    compile_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nis-compile-1-x", "namespace": "ml",
                   "labels": {C.LABEL_COMPONENT: C.COMPONENT_COMPILE, "batch.kubernetes.io/job-name": "nis-compile-1"}}}
    handlers.pod_event(type="MODIFIED", body=compile_pod)
    assert state["queue"].keys == [("ml", "llama"), ("ml", "twin")]
    assert state["cache"].with_label(POD, "ml", "batch.kubernetes.io/job-name", "nis-compile-1")


def test_job_outcomes_are_counted_once(state):
    from neuron_operator import metrics

    before = metrics.COMPILE_JOBS.labels(outcome="succeeded")._value.get()
    job = owned("Job", "nis-compile-2", api_version="batch/v1", **{C.LABEL_COMPONENT: C.COMPONENT_COMPILE})
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    for _ in range(3):
        handlers.job_event(type="MODIFIED", body=job)
    assert metrics.COMPILE_JOBS.labels(outcome="succeeded")._value.get() == before + 1
    assert state["cache"].get(JOB, "ml", "nis-compile-2") is not None


def test_priming_lists_each_kind_once_whatever_the_number_of_services():
    kube = FakeKube()
    for i in range(5):
        kube.put(service_body(name=f"s{i}", uid=f"u{i}"))
    cache = ObjectCache()
    handlers.prime_cache(kube, cache, OperatorConfig())
    assert kube.counts() == {"list": len(KINDS)} and cache.count(SERVICE) == 5


def test_priming_honours_the_watched_namespaces():
    kube = FakeKube()
    kube.put(service_body(namespace="team-a"))
    kube.put(service_body(namespace="other", uid="u2"))
    cache = ObjectCache()
    handlers.prime_cache(kube, cache, OperatorConfig(namespaces=("team-*",)))
    assert cache.keys(SERVICE) == [("team-a", "llama")] and kube.counts() == {"list": len(KINDS)}
    cache, kube.requests = ObjectCache(), []
    handlers.prime_cache(kube, cache, OperatorConfig(namespaces=("team-a", "other")))
    assert kube.counts() == {"list": 2 * len(KINDS)} and len(cache.keys(SERVICE)) == 2


def test_the_resync_enqueues_every_cached_service_without_a_request(state, monkeypatch):
    cache = state["cache"]
    for i in range(3):
        cache.upsert(SERVICE, service_body(name=f"s{i}"))
    monkeypatch.setattr(handlers, "RESYNC_SECONDS", 0.01)

    async def one_round():
        task = asyncio.get_running_loop().create_task(
            handlers._resync_forever(cache, OperatorConfig(), state["queue"]))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(one_round())
    assert {("ml", "s0"), ("ml", "s1"), ("ml", "s2")} <= set(state["queue"].keys)
