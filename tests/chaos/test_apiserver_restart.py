"""kube-apiserver SIGKILLed and restarted (same flags, `hack/cluster.sh restart-apiserver`) under a running operator:
once while a batch of services converges, once while everything is idle. The operator must stay up and healthy,
finish converging, and see changes made after each restart (its watches came back)."""

from __future__ import annotations

import time

from tests.bench.harness import GROUP_VERSION, Tracker, restart_apiserver

from .conftest import record
from .invariants import summary, wait_for_invariants
from .scenario import ReadyWatch, apply, service, wait_ready, wait_until

DOWNTIME = 3.0  # seconds the API server stays dead


def test_apiserver_restart_under_a_running_operator(api, namespace, operator, rng):
    scenario = "kube-apiserver SIGKILL + restart"
    names = [f"api-{i}" for i in range(6)]
    watch = ReadyWatch(names)
    services = Tracker(api, GROUP_VERSION, "neuroninferenceservices", namespace, watch).start()
    try:
        apply(namespace, [service(n, revision=f"r{i}") for i, n in enumerate(names)])
        time.sleep(rng.uniform(0.5, 3.0))  # mid-convergence: Jobs created, some compiling
        killed = time.monotonic()
        restart_apiserver(DOWNTIME)
        back = time.monotonic()
        wait_ready(api, namespace, names, timeout=240)
        assert watch.all_ready_at is not None
        record(scenario, "while 6 services converge",
               f"API down {DOWNTIME:.0f} s, back after {back - killed:.1f} s; all Ready "
               f"{max(0.0, watch.all_ready_at - back):.1f} s after it was back")

        # Idle, converged: restart again, then change things; the operator has to notice through new watches.
        restart_apiserver(DOWNTIME)
        back = time.monotonic()
        apply(namespace, [service("api-late", revision="late"),
                          service("api-0", revision="r0", replicas=0)])  # a new service, and a scale to zero

        def scaled_to_zero() -> bool:
            dep = api.get("apps/v1", "deployments", namespace, "api-0")
            return dep is not None and dep["spec"].get("replicas") == 0

        wait_until(scaled_to_zero, 120, "api-0 scaled to zero after the restart")
        scaled = time.monotonic() - back
        wait_until(lambda: len(api.list("batch/v1", "jobs", namespace)[0]) == len(names) + 1, 120,
                   "the new service's compile Job")
        job_created = time.monotonic() - back
        wait_ready(api, namespace, names + ["api-late"], timeout=240)
        # Ready takes longer than the operator's part: the controller-manager's and kwok's watches back off after
        # the API server's death, so the compile pod starts and finishes late.
        record(scenario, "idle, then changes after the restart",
               f"after the API was back: scale to zero applied {scaled:.1f} s, new service's compile Job "
               f"{job_created:.1f} s, new service Ready {time.monotonic() - back:.1f} s")
        held = wait_for_invariants(api, namespace, operator)
    finally:
        services.stop()
    record(scenario, "operator", f"alive {operator.alive}, healthy {operator.healthy()}, starts {operator.starts}")
    record(scenario, "invariants", summary(held))
    assert operator.alive and operator.healthy()
    assert operator.starts == 1  # never restarted by this test: it survived on its own
