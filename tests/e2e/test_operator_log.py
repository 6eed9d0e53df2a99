"""The operator's log on a real run says what changed, once: a service's phases, its Stalled transitions and its
compile outcome, and no line per watch event (kopf's "Handler 'service_event' succeeded") or per probe."""

from __future__ import annotations

import re
import time

import pytest

from . import nis
from .kube import kubectl, wait_until

pytestmark = pytest.mark.usefixtures("operator")

PER_EVENT = re.compile(r"Handler '\w+' succeeded|aiohttp\.access")


def test_a_service_lifecycle_logs_transitions_not_events(namespace, artifact_store, operator):
    log_path = operator["log"]
    offset = log_path.stat().st_size
    # Two replicas: they become available one after the other, which is still Deploying, never Degraded.
    nis.apply(namespace, nis.service("chatty", replicas=2))
    nis.wait_ready(namespace, "chatty")
    # An invalid update (a derived NeuronConfig key: Stalled, the running revision stays), then its fix.
    nis.apply(namespace, nis.service("chatty", replicas=2, engine={"overrideNeuronConfig": {"seq_len": 1}}))
    nis.wait_condition(namespace, "chatty", "Stalled", reason="InvalidOverride")
    nis.apply(namespace, nis.service("chatty", replicas=2))
    nis.wait_condition(namespace, "chatty", "Stalled", status="False")
    nis.wait_ready(namespace, "chatty")
    time.sleep(5)  # trailing watch events (Deployment, PDB and pod status) arrive and are reconciled

    def written() -> str:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            return log.read()

    text = wait_until(lambda: (t := written()) and "no longer stalled" in t and t, timeout=30,
                      message="the operator to log the cleared Stalled condition")
    per_event = [line for line in text.splitlines() if PER_EVENT.search(line)]
    assert not per_event, "per-event lines in the operator log:\n" + "\n".join(per_event[:10])
    ours = [line for line in text.splitlines() if f"{namespace}/" in line]
    print(f"\noperator log for {namespace} ({len(ours)} lines):\n" + "\n".join(ours))
    messages = [line.split("] ", 1)[-1] for line in ours]
    assert sum("compile Job" in m and "succeeded in" in m for m in messages) == 1, messages
    assert sum("stalled (InvalidOverride)" in m for m in messages) == 1, messages
    assert sum("no longer stalled" in m for m in messages) == 1, messages
    phases = [m.rsplit(" ", 1)[-1] for m in messages if ": phase " in m]
    assert phases[0] == "Compiling" and phases[-1] == "Ready", phases
    first_rollout = phases[:phases.index("Ready") + 1]
    assert "Degraded" not in first_rollout, f"a first rollout reported as a lost replica: {phases}"
    assert all(a != b for a, b in zip(phases, phases[1:])), f"a phase logged twice in a row: {phases}"
    assert len(ours) <= 12, "more than one line per transition"


def test_deleting_a_namespace_is_not_fought(namespace, artifact_store, operator):
    # The namespace controller deletes a service's children before the service itself; the API server then
    # refuses to recreate them (403, NamespaceTerminating). The operator must let go, not retry with backoff.
    log_path = operator["log"]
    offset = log_path.stat().st_size
    nis.apply(namespace, nis.service("doomed", replicas=2))
    nis.wait_ready(namespace, "doomed")
    kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s", timeout=130)
    time.sleep(3)  # the last watch events of the deletion are reconciled
    with open(log_path, encoding="utf-8", errors="replace") as log:
        log.seek(offset)
        ours = [line for line in log.read().splitlines() if f"{namespace}/" in line]
    retries = [line for line in ours if "will retry" in line or "being terminated" in line]
    assert not retries, "the operator fought the namespace deletion:\n" + "\n".join(retries)
