"""The operator's log says what changed, once: phase changes, Stalled transitions, compile outcomes, errors; never
one INFO line per watch event or per pass. A whole service lifecycle is driven through the watch handlers and the
reconciler (what run_pass does), and every log record is checked."""

from __future__ import annotations

import logging

import pytest

from neuron_operator import constants as C
from neuron_operator import handlers
from neuron_operator.cache import SERVICE

from .fakes import deployment_available
from .test_compile_report import finish

KEY = ("ml", "llama")
EVENT_HANDLERS = {
    (C.GROUP_VERSION, C.KIND): handlers.service_event,
    ("apps/v1", "Deployment"): handlers.deployment_event,
    ("v1", "Service"): handlers.service_child_event,
    ("policy/v1", "PodDisruptionBudget"): handlers.pdb_event,
    ("batch/v1", "Job"): handlers.job_event,
}


class Driver:
    """The watches and the work queue of a running operator, over the World's fake API."""

    def __init__(self, world, monkeypatch) -> None:
        self.world = world
        self.events = 0
        monkeypatch.setattr(handlers, "_state", {"cache": world.cache, "phases": {}, "stalled": {}})

    def deliver(self) -> None:
        """One watch event per object (what the API server sends after a change, and on every re-list)."""
        for (api_version, kind), handler in EVENT_HANDLERS.items():
            for obj in self.world.kube.of_kind(api_version, kind):
                meta = obj["metadata"]
                handler(type="MODIFIED", body=obj, name=meta["name"], namespace=meta["namespace"])
                self.events += 1

    def run_pass(self) -> None:
        result = self.world.reconciler.reconcile(*KEY)
        handlers.log_transitions(KEY, result.phase, self.world.cache)

    def settle(self, passes: int = 3) -> None:
        for _ in range(passes):
            self.deliver()
            self.run_pass()


@pytest.fixture
def quiet_loggers():
    names = ("kopf.objects", "aiohttp.access")
    levels = {n: logging.getLogger(n).level for n in names}
    yield names
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_a_service_lifecycle_logs_each_transition_once(world, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    run = Driver(world, monkeypatch)
    world.add_service()
    run.settle()
    [job] = world.kube.of_kind("batch/v1", "Job")
    finish(world, job)
    run.settle()
    deployment_available(world.kube, world.kube.find("apps/v1", "Deployment", "ml", "llama"))
    run.settle()
    world.update_spec(tensorParallelSize=3)  # invalid: Stalled
    run.settle()
    world.update_spec(tensorParallelSize=8)  # fixed
    run.settle()
    run.settle(passes=5)  # idle: resyncs and re-lists say nothing

    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    job_name = job["metadata"]["name"]
    key = job["metadata"]["labels"][C.LABEL_ARTIFACT_KEY]
    stalled = [m for _, level, m in lines if level == "WARNING"]
    assert len(stalled) == 1 and stalled[0].startswith("ml/llama: stalled (InvalidTensorParallelSize): ")
    assert [(n, level, m) for n, level, m in lines if level != "WARNING"] == [
        ("neuron_operator", "INFO", "ml/llama: phase Compiling"),
        ("neuron_operator", "INFO", f"compile Job ml/{job_name} succeeded in 500s (artifact {key})"),
        ("neuron_operator", "INFO", "ml/llama: phase Deploying"),
        ("neuron_operator", "INFO", "ml/llama: phase Ready"),
        ("neuron_operator", "INFO", "ml/llama: phase Degraded"),
        ("neuron_operator", "INFO", "ml/llama: phase Ready"),
        ("neuron_operator", "INFO", "ml/llama: no longer stalled"),
    ]
    assert run.events > 10 * len(lines)  # the log does not grow with the events


def test_a_restarted_operator_logs_each_service_once_then_nothing(world, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    world.add_service()
    Driver(world, monkeypatch).settle()
    world.update_spec(tensorParallelSize=3)
    Driver(world, monkeypatch).settle()
    world.restart()
    caplog.clear()
    run = Driver(world, monkeypatch)  # a new process: no memory of what it logged
    run.settle(passes=4)
    assert [(r.levelname, r.getMessage().split(":")[1].strip()) for r in caplog.records] == [
        ("INFO", "phase Failed"), ("WARNING", "stalled (InvalidTensorParallelSize)")]


def test_a_deleted_service_is_forgotten(world, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    run = Driver(world, monkeypatch)
    world.add_service(tensorParallelSize=3)
    run.settle()
    body = world.service()
    handlers.service_event(type="DELETED", body=body, name="llama", namespace="ml")
    assert KEY not in handlers._state["phases"] and KEY not in handlers._state["stalled"]
    assert world.cache.get(SERVICE, *KEY) is None


def test_kopf_per_event_lines_are_dropped_unless_verbose(quiet_loggers, caplog):
    caplog.set_level(logging.INFO)
    handlers.quiet_per_event_logs()
    logging.getLogger("kopf.objects").info("Handler 'service_event' succeeded.")
    logging.getLogger("aiohttp.access").info('127.0.0.1 "GET /healthz HTTP/1.1" 200')
    logging.getLogger("kopf.objects").error("Handler 'service_event' failed with an exception.")
    assert [r.getMessage() for r in caplog.records] == ["Handler 'service_event' failed with an exception."]

    for name in quiet_loggers:
        logging.getLogger(name).setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)  # --verbose: kopf sets the root logger to DEBUG, tracing keeps every line
    handlers.quiet_per_event_logs()
    assert logging.getLogger("kopf.objects").isEnabledFor(logging.INFO)
