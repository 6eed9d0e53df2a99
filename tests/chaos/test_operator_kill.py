"""The operator SIGKILLed at random moments and restarted, while a batch of services converges and while a compile
input of running services changes. Afterwards every invariant holds (tests/chaos/invariants.py) and no Deployment
ever took an artifact whose compile Job had not succeeded (compile before roll), checked at every change seen."""

from __future__ import annotations

import time

from tests.bench.harness import GROUP_VERSION, Tracker

from .conftest import record
from .invariants import summary, wait_for_invariants
from .scenario import CompileBeforeRoll, ReadyWatch, apply, kill_while, list_services, service, wait_ready

KILLS = (4, 12)  # at least 4; more while the services still converge
# Compiles of 6-16 s (kwok): convergence lasts long enough for several kills to land in it.
SLOWER_COMPILE = {"pod-complete.stage.kwok.x-k8s.io/delay": "6s", "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "10s"}


def _reconverge(watch: ReadyWatch, started: float, last_up: float) -> str:
    assert watch.all_ready_at is not None
    after = watch.all_ready_at - last_up
    how = f"{after:.1f} s after the last restart" if after >= 0 else f"{-after:.1f} s before the last restart"
    flips = f" ({'; '.join(watch.flip_details)})" if watch.flip_details else ""
    return (f"all Ready {watch.all_ready_at - started:.1f} s after apply, {how}; Ready->not-Ready flips "
            f"{watch.flips}{flips}")


def test_operator_sigkill_while_services_converge(api, namespace, operator, rng):
    # Six services with a compile key of their own and two pairs that share one: a shared Job must be created
    # once and gain its second owner even if the operator dies between the two.
    revisions = ["r0", "r1", "r2", "r3", "r4", "r5", "shared-a", "shared-a", "shared-b", "shared-b"]
    names = [f"svc-{i}" for i in range(len(revisions))]
    rolls = CompileBeforeRoll(api, namespace)
    watch = ReadyWatch(names)
    trackers = [Tracker(api, "apps/v1", "deployments", namespace, rolls).start(),
                Tracker(api, GROUP_VERSION, "neuroninferenceservices", namespace, watch).start()]
    try:
        started = time.monotonic()
        apply(namespace, [service(n, revision=r, runtime={"podAnnotations": SLOWER_COMPILE})
                          for n, r in zip(names, revisions)])
        moments, last_up = kill_while(operator, rng, watch.busy, KILLS)
        wait_ready(api, namespace, names, timeout=240)
        held = wait_for_invariants(api, namespace, operator)
    finally:
        for t in trackers:
            t.stop()
    scenario = "SIGKILL while 10 services converge"
    record(scenario, "kills (s after apply)", f"{len(moments)} at {moments}")
    record(scenario, "reconverged", _reconverge(watch, started, last_up))
    record(scenario, "invariants", summary(held))
    assert not rolls.violations, rolls.violations
    assert operator.alive
    keys = {j["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"] for j in held.snapshot.jobs}
    assert len(keys) == len(held.snapshot.jobs) == len(set(revisions))


def test_operator_sigkill_while_a_compile_input_changes(api, namespace, operator, rng):
    names = [f"roll-{i}" for i in range(6)]
    apply(namespace, [service(n, revision=f"v{i}") for i, n in enumerate(names)])
    wait_ready(api, namespace, names, timeout=180)
    old_keys = {s["metadata"]["name"]: s["status"]["artifact"]["key"] for s in list_services(api, namespace)}

    rolls = CompileBeforeRoll(api, namespace)

    def rolled(svc: dict) -> bool:
        key = ((svc.get("status") or {}).get("artifact") or {}).get("key")
        return key is not None and key != old_keys[svc["metadata"]["name"]] \
            and rolls.keys.get(svc["metadata"]["name"]) == key

    watch = ReadyWatch(names, rolled)
    trackers = [Tracker(api, "apps/v1", "deployments", namespace, rolls).start(),
                Tracker(api, GROUP_VERSION, "neuroninferenceservices", namespace, watch).start()]
    try:
        started = time.monotonic()
        # maxModelLen is a compile input: a new key per service, to be compiled before the pods roll.
        apply(namespace, [service(n, revision=f"v{i}", max_model_len=2048, runtime={"podAnnotations": SLOWER_COMPILE})
                          for i, n in enumerate(names)])
        moments, last_up = kill_while(operator, rng, watch.busy, KILLS)
        wait_ready(api, namespace, names, timeout=240, extra=rolled)
        held = wait_for_invariants(api, namespace, operator)
    finally:
        for t in trackers:
            t.stop()
    scenario = "SIGKILL while maxModelLen changes on 6 Ready services"
    record(scenario, "kills (s after apply)", f"{len(moments)} at {moments}")
    record(scenario, "reconverged (rolled to the new key)", _reconverge(watch, started, last_up))
    record(scenario, "rolls seen / compile-before-roll violations", f"{len(rolls.rolls)} / {len(rolls.violations)}")
    record(scenario, "invariants", summary(held))
    assert not rolls.violations, rolls.violations
    assert len(rolls.rolls) >= len(names)
    assert operator.alive
