"""decide() is a pure function of (intent, snapshot, catalog, now): same inputs, same decision, inputs untouched."""

from __future__ import annotations

import copy

from neuron_operator.actions import CreateJob, PostEvent
from neuron_operator.catalog import load_catalog
from neuron_operator.config import OperatorConfig
from neuron_operator.decide import Snapshot, decide, intent_for

from .fakes import service_body

CATALOG = load_catalog()


def test_decide_is_pure_and_deterministic():
    intent = intent_for(service_body(), CATALOG, OperatorConfig())
    snap = Snapshot()
    frozen = (copy.deepcopy(intent.service), copy.deepcopy(snap))
    first = decide(intent, snap, CATALOG, 10.0)
    second = decide(intent, snap, CATALOG, 10.0)
    assert first.actions[0] == second.actions[0] and first.status == second.status
    assert (intent.service, snap) == frozen
    assert isinstance(first.actions[0], CreateJob) and isinstance(first.actions[1], PostEvent)
    assert first.actions[1].after == f"Job/{intent.job_name}"  # the Event only if the create succeeds


def test_an_invalid_spec_decides_no_writes():
    intent = intent_for(service_body(tensorParallelSize=3), CATALOG, OperatorConfig())
    assert intent.plan is None and intent.problems
    decision = decide(intent, Snapshot(), CATALOG, 10.0)
    assert decision.actions == () and decision.status.problems


def test_a_missing_default_store_is_a_problem_not_a_crash():
    body = service_body()
    del body["spec"]["artifacts"]
    intent = intent_for(body, CATALOG, OperatorConfig())
    assert [p.field for p in intent.problems] == ["spec.artifacts"]
