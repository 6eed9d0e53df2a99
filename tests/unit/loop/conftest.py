"""A small world for loop tests: the recording fake API, the watch cache and the reconciler over both."""

from __future__ import annotations

import pytest

from neuron_operator import constants as C
from neuron_operator.cache import SERVICE, ObjectCache
from neuron_operator.catalog import load_catalog
from neuron_operator.config import OperatorConfig
from neuron_operator.reconcile import Reconciler

from .fakes import FakeKube, service_body


class World:
    """The fake API server, what the operator's watches have delivered (the cache), and a clock."""

    def __init__(self, config: OperatorConfig | None = None) -> None:
        self.kube = FakeKube()
        self.cache = ObjectCache()
        self.time = 1_000_000.0
        self.config = config or OperatorConfig()
        self.reconciler = self.new_reconciler()

    def new_reconciler(self) -> Reconciler:
        return Reconciler(self.kube, self.cache, load_catalog(), self.config,
                          now=lambda: "2026-12-01T00:00:00Z", clock=lambda: self.time)

    def restart(self) -> None:
        """A new operator process: empty cache, filled from the API as the priming LISTs would."""
        self.cache = ObjectCache()
        self.kube.feed(self.cache)
        self.reconciler = self.new_reconciler()

    def add_service(self, **spec) -> dict:
        name = spec.pop("name", "llama")
        obj = self.kube.put(service_body(name=name, **spec))
        self.cache.upsert(SERVICE, obj)
        return obj

    def update_spec(self, name: str = "llama", namespace: str = "ml", **changes) -> dict:
        obj = self.kube.find(C.GROUP_VERSION, C.KIND, namespace, name)
        obj["spec"].update(changes)
        obj["metadata"]["generation"] += 1
        obj = self.kube.replace(obj)  # a user's kubectl apply: a new resourceVersion
        self.cache.upsert(SERVICE, obj)
        return obj

    def watch(self) -> None:
        """Deliver every object's current state to the cache (the watch events catch up)."""
        self.kube.feed(self.cache)

    def reconcile(self, name: str = "llama", namespace: str = "ml"):
        self.kube.reset_requests()
        return self.reconciler.reconcile(namespace, name)

    def service(self, name: str = "llama", namespace: str = "ml") -> dict:
        return self.kube.find(C.GROUP_VERSION, C.KIND, namespace, name)

    def condition(self, type_: str, name: str = "llama") -> dict:
        return next(c for c in self.service(name)["status"]["conditions"] if c["type"] == type_)


@pytest.fixture
def world() -> World:
    return World()
