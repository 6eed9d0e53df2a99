"""Operating the operator like a product: its Prometheus metrics follow a service to Ready, a GitOps re-apply of an
unchanged manifest (and the 60 s resync) writes nothing, and Argo CD's health script and kstatus read the live
status the way the README promises (Progressing/InProgress, Healthy/Current, Degraded/Failed).

The live statuses are also saved, sanitized, as Argo CD health fixtures in tests/unit/testdata/argocd/
(``*-captured-*.yaml``) so the unit test keeps covering real documents without a cluster.
"""

from __future__ import annotations

import importlib.util
import os
import time
import urllib.request
from typing import Any, Optional

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from . import kstatus, nis
from .conftest import ROOT, TESTENV_DIR
from .kube import kubectl, kubectl_json, wait_until

pytestmark = pytest.mark.usefixtures("operator")

WRITE_VERBS = ("apply", "patch", "create", "update", "delete")
RESYNC_SECONDS = 60  # neuron_operator.handlers.RESYNC_SECONDS
FIXTURES = ROOT / "tests" / "unit" / "testdata" / "argocd"
# Set to rewrite the *-captured-*.yaml fixtures from this run even when they exist already.
UPDATE_FIXTURES = os.environ.get("UPDATE_ARGOCD_FIXTURES") == "1"


# --- Prometheus text format ---------------------------------------------------------------------------------

class Metrics:
    """One scrape of the operator's /metrics, parsed with prometheus_client's own parser."""

    def __init__(self, text: str):
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
        return sum(v for n, ls, v in self.samples if n == name and all(ls.get(k) == w for k, w in labels.items()))

    def writes(self) -> float:
        return sum(self.value("neuron_operator_api_requests_total", verb=verb) for verb in WRITE_VERBS)

    def writes_by_verb(self) -> dict[str, float]:
        return {verb: self.value("neuron_operator_api_requests_total", verb=verb) for verb in WRITE_VERBS}


def scrape(port: int) -> Metrics:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return Metrics(response.read().decode())


def test_metrics_follow_a_service_to_ready(namespace, artifact_store, operator):
    port = operator["metrics_port"]
    before = scrape(port)
    # Served from start-up; labelled counters (api requests, compile jobs, errors) appear with their first sample.
    names = {n for n, _, _ in before.samples}
    assert {"neuron_operator_reconcile_duration_seconds_count", "neuron_operator_services"} <= names, names
    assert {ls["phase"] for n, ls, _ in before.samples if n == "neuron_operator_services"} >= {"Ready", "Compiling"}

    started = time.monotonic()
    nis.apply(namespace, nis.service("metered"))
    nis.wait_ready(namespace, "metered")
    ready_after = time.monotonic() - started
    ready = wait_until(lambda: (o := nis.get(namespace, "metered"))["status"].get("lastCompile") and o,
                       timeout=30, message="status.lastCompile")
    # The compile's outcome and duration, from the real Job controller's startTime/completionTime.
    last = ready["status"]["lastCompile"]
    assert (last["job"], last["key"], last["outcome"]) == (
        ready["status"]["compileJob"], ready["status"]["artifact"]["key"], "Succeeded"), last
    assert 0 <= last["durationSeconds"] <= ready_after + 1 and last["finishedAt"], last

    def counters_moved() -> Optional[Metrics]:
        m = scrape(port)
        moved = (m.value("neuron_operator_reconcile_duration_seconds_count")
                 > before.value("neuron_operator_reconcile_duration_seconds_count")
                 and m.value("neuron_operator_compile_jobs_total", outcome="created")
                 >= before.value("neuron_operator_compile_jobs_total", outcome="created") + 1
                 and m.value("neuron_operator_compile_jobs_total", outcome="succeeded")
                 >= before.value("neuron_operator_compile_jobs_total", outcome="succeeded") + 1
                 and m.value("neuron_operator_compile_duration_seconds_count", outcome="succeeded")
                 >= before.value("neuron_operator_compile_duration_seconds_count", outcome="succeeded") + 1
                 and m.value("neuron_operator_api_requests_total", verb="apply")
                 > before.value("neuron_operator_api_requests_total", verb="apply"))
        return m if moved else None

    after = wait_until(counters_moved, timeout=30, interval=1, message="reconcile/compile/apply counters to move")
    # The phase gauge is refreshed on watch events and on every resync (60 s): poll past one resync.
    ready_gauge = wait_until(lambda: scrape(port).value("neuron_operator_services", phase="Ready") >= 1 or None,
                             timeout=RESYNC_SECONDS + 45, interval=2, message='neuron_operator_services{phase="Ready"} >= 1')
    assert ready_gauge

    passes = (after.value("neuron_operator_reconcile_duration_seconds_count")
              - before.value("neuron_operator_reconcile_duration_seconds_count"))
    applies = (after.value("neuron_operator_api_requests_total", verb="apply")
               - before.value("neuron_operator_api_requests_total", verb="apply"))
    # Deployment, Service and PDB are each server-side applied at least once.
    assert applies >= 3
    assert after.value("neuron_operator_api_request_duration_seconds_count", verb="apply") >= applies
    print(f"\nmetrics: Ready after {ready_after:.1f}s; reconcile passes +{passes:.0f}, applies +{applies:.0f}, "
          f"writes +{after.writes() - before.writes():.0f} (global counters)")


# --- GitOps: an unchanged manifest costs nothing -------------------------------------------------------------

def _snapshot(namespace: str, names: list[str]) -> dict[str, tuple[str, tuple]]:
    """resourceVersion and managedFields managers of each service and every child it has."""
    objects = kubectl_json("get", "nis,deployments,services,pdb,jobs", "-n", namespace,
                           "--show-managed-fields")["items"]
    wanted = set(names)
    snap = {}
    for obj in objects:
        meta = obj["metadata"]
        owners = {r["name"] for r in meta.get("ownerReferences") or []}
        if obj["kind"] == "NeuronInferenceService" and meta["name"] not in wanted:
            continue
        if obj["kind"] != "NeuronInferenceService" and not owners & wanted:
            continue
        managers = tuple(sorted((f.get("manager", ""), f.get("operation", ""), f.get("subresource", ""),
                                 f.get("apiVersion", "")) for f in meta["managedFields"]))
        snap[f"{obj['kind']}/{meta['name']}"] = (meta["resourceVersion"], managers)
    return snap


def _diff(before: dict, after: dict) -> list[str]:
    changes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changes.append(f"{key}: {before.get(key)} -> {after.get(key)}")
    return changes


def _other_services(namespace: str) -> list[str]:
    """Services in other t-* namespaces: the session operator reconciles them too, and its counters are global."""
    items = kubectl_json("get", "nis", "--all-namespaces")["items"]
    return sorted(f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items
                  if i["metadata"]["namespace"].startswith("t-") and i["metadata"]["namespace"] != namespace)


def _ssa(namespace: str, obj: dict) -> str:
    """What Flux (and Argo CD with ServerSideApply=true) does: server-side apply under the tool's field manager."""
    return kubectl("apply", "--server-side", "--field-manager=gitops", "-n", namespace, "-f", "-",
                   input=yaml.safe_dump(obj)).stdout


def test_reapplying_an_unchanged_manifest_writes_nothing(namespace, artifact_store, operator):
    port = operator["metrics_port"]
    # One service managed like Argo CD by default (client-side apply), one like Flux (server-side apply).
    csa, ssa = nis.service("gitops-csa"), nis.service("gitops-ssa", runtime={"podLabels": {"delivery": "flux"}})
    nis.apply(namespace, csa)
    _ssa(namespace, ssa)
    names = ["gitops-csa", "gitops-ssa"]
    for name in names:
        nis.wait_ready(namespace, name)

    # Converged: Ready is written; let trailing watch events (Deployment/PDB status) drain until 10 s are quiet.
    state = {"snap": _snapshot(namespace, names), "since": time.monotonic()}

    def quiet() -> bool:
        snap = _snapshot(namespace, names)
        if snap != state["snap"]:
            state.update(snap=snap, since=time.monotonic())
        return time.monotonic() - state["since"] >= 10

    wait_until(quiet, timeout=90, interval=2, message="objects to stop changing after Ready")
    # The write counter is process-wide: measure while no other t-* service is reconciled by this operator.
    try:
        wait_until(lambda: not _other_services(namespace), timeout=180, interval=3,
                   message="no other t-* NeuronInferenceService (concurrent e2e runs)")
        others_before: list[str] = []
    except AssertionError:
        others_before = _other_services(namespace)

    before = _snapshot(namespace, names)
    assert {k.split("/")[0] for k in before} >= {"NeuronInferenceService", "Deployment", "Service",
                                                  "PodDisruptionBudget", "Job"}, before
    for name in names:
        meta = kubectl_json("get", "nis", name, "-n", namespace, "--show-managed-fields")["metadata"]
        # The operator owns only the status: a GitOps tool never has to fight it over spec or metadata fields.
        operator_entries = [f for f in meta["managedFields"] if f.get("manager") == "neuron-operator"]
        assert operator_entries and all(f.get("subresource") == "status" for f in operator_entries), meta["managedFields"]
        # And no kopf bookkeeping (finalizer, progress/diff-base annotations) that would show as a diff.
        assert not meta.get("finalizers"), meta.get("finalizers")
        assert not [k for k in meta.get("annotations") or {} if "kopf" in k], meta.get("annotations")
    metrics_before = scrape(port)

    # The GitOps tool syncs again with the same manifests.
    assert "unchanged" in nis.apply(namespace, csa).stdout
    _ssa(namespace, ssa)

    # Idle for a little more than one resync period, so at least one full resync pass lands inside the window.
    deadline = time.monotonic() + RESYNC_SECONDS + 5
    while time.monotonic() < deadline:
        time.sleep(5)
        changes = _diff(before, _snapshot(namespace, names))
        assert not changes, "objects changed while idle:\n" + "\n".join(changes)
    metrics_after = scrape(port)
    others = sorted(set(others_before) | set(_other_services(namespace)))

    after = _snapshot(namespace, names)
    assert after == before  # no resourceVersion moved and no managedFields entry appeared
    passes = (metrics_after.value("neuron_operator_reconcile_duration_seconds_count")
              - metrics_before.value("neuron_operator_reconcile_duration_seconds_count"))
    writes = {verb: metrics_after.writes_by_verb()[verb] - metrics_before.writes_by_verb()[verb]
              for verb in WRITE_VERBS}
    print(f"\nidle {RESYNC_SECONDS + 5}s: reconcile passes +{passes:.0f}, writes by verb {writes}, "
          f"other t-* services: {others or 'none'}")
    # Otherwise "no writes" would be vacuous: the resync did look at both services.
    assert passes >= len(names), f"expected a resync pass for each service inside the idle window, got {passes}"
    if others and sum(writes.values()) > 0:
        # Zero total writes proves zero for ours; a positive total is not attributable to our services.
        pytest.skip(f"{writes} writes while other services were reconciled too ({others}): not attributable")
    assert sum(writes.values()) == 0, (
        f"the operator sent {writes} write requests for {len(names)} converged, unchanged services in "
        f"{passes:.0f} reconcile passes (resync every {RESYNC_SECONDS}s); a converged service must cost no writes")


# --- Argo CD health and kstatus on live status documents ------------------------------------------------------

def _argocd_health_module():
    """tests/unit/test_argocd_health.py's `health(obj)` (the unit tests' Lua harness), loaded by path."""
    path = ROOT / "tests" / "unit" / "test_argocd_health.py"
    spec = importlib.util.spec_from_file_location("_argocd_health_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIXED_TIME = "2025-01-01T00:00:00Z"


def sanitized(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A live object without what churns between runs (uid, resourceVersion, managedFields, timestamps,
    kubectl's last-applied annotation, the random test namespace); spec and status kept as they were."""
    meta = obj["metadata"]
    clean_meta = {"name": meta["name"], "namespace": "ml", "generation": meta["generation"]}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    if annotations:
        clean_meta["annotations"] = annotations
    status = yaml.safe_load(yaml.safe_dump(obj.get("status") or {}))
    for condition in status.get("conditions") or []:
        if "lastTransitionTime" in condition:
            condition["lastTransitionTime"] = FIXED_TIME
    clean = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": clean_meta, "spec": obj["spec"],
             "status": status}
    # The namespace also appears inside status (endpoint) and messages.
    return yaml.safe_load(yaml.safe_dump(clean, sort_keys=False).replace(namespace, "ml"))


def save_fixture(obj: dict[str, Any], namespace: str, file_name: str, scenario: str) -> None:
    text = (f"# {scenario}\n# Captured from a live run by tests/e2e/test_metrics_and_gitops.py (sanitized: no uid, "
            f"resourceVersion, managedFields or creationTimestamp; fixed lastTransitionTime; namespace ml).\n"
            + yaml.safe_dump(sanitized(obj, namespace), sort_keys=False))
    capture_dir = TESTENV_DIR / "argocd-captured"
    capture_dir.mkdir(parents=True, exist_ok=True)
    (capture_dir / file_name).write_text(text, encoding="utf-8")
    target = FIXTURES / file_name
    if UPDATE_FIXTURES or not target.exists():
        target.write_text(text, encoding="utf-8")


def _capture_compiling(namespace: str, name: str) -> dict[str, Any]:
    """The status while the compile runs: current generation, Reconciling=True, phase Compiling; prefer the
    Job-running state (reason Compiling) over the brief pending one."""
    seen: dict[str, Any] = {}

    def compiling() -> Optional[dict[str, Any]]:
        obj = nis.get(namespace, name)
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"]["generation"] or status.get("phase") != "Compiling":
            return None
        seen["any"] = obj
        return obj if (nis.cond(obj, "Compiled") or {}).get("reason") == "Compiling" else None

    try:
        return wait_until(compiling, timeout=60, interval=0.3, message=f"nis/{name} Compiling (Job running)")
    except AssertionError:
        if "any" in seen:
            return seen["any"]
        raise


def test_argocd_health_and_kstatus_on_live_status(namespace, artifact_store, operator):
    harness = _argocd_health_module()
    nis.apply(namespace, nis.service("slow", runtime={"podAnnotations": nis.SLOW_COMPILE}))
    # Distinct compile inputs (maxNumSeqs) so it gets its own compile Job, which fails every attempt.
    nis.apply(namespace, nis.service("oom", engine={"maxNumSeqs": 16, "maxModelLen": 4096},
                                     runtime={"podAnnotations": nis.failing_compile("OOMKilled", 137,
                                                                                    "neuronx-cc was killed")}))
    nis.apply(namespace, nis.service("override", engine={"maxNumSeqs": 8, "maxModelLen": 4096,
                                                         "overrideNeuronConfig": {"tp_degree": 8}}))

    compiling = _capture_compiling(namespace, "slow")
    ready = nis.wait_ready(namespace, "slow", timeout=240)
    compile_failed = nis.wait_condition(namespace, "oom", "Stalled", "True", reason="CompileFailed", timeout=300)
    invalid = nis.wait_condition(namespace, "override", "Stalled", "True", reason="InvalidOverride", timeout=120)

    cases = [
        # (live object, expected Argo CD health, expected kstatus, fixture name, scenario)
        (compiling, "Progressing", kstatus.IN_PROGRESS, "progressing-captured-compiling.yaml",
         "Compile Job running (SLOW_COMPILE), nothing serves yet."),
        (ready, "Healthy", kstatus.CURRENT, "healthy-captured-ready.yaml",
         "Compiled and serving, one replica ready."),
        (compile_failed, "Degraded", kstatus.FAILED, "degraded-captured-compile-failed.yaml",
         "Every compile attempt OOMKilled (backoffLimit 2): Stalled, nothing serves."),
        (invalid, "Degraded", kstatus.FAILED, "degraded-captured-invalid-override.yaml",
         "overrideNeuronConfig sets tp_degree, which the operator derives: Stalled before any child exists."),
    ]
    failures = []
    for obj, expected_health, expected_kstatus, file_name, scenario in cases:
        name = obj["metadata"]["name"]
        health, message = harness.health(obj)
        result = kstatus.compute(obj)
        print(f"\n{name}: phase={obj['status'].get('phase')} argocd={health} ({message!r}) "
              f"kstatus={result.status} ({result.message!r})")
        if (health, result.status) != (expected_health, expected_kstatus):
            failures.append(f"{name}: argocd {health} (want {expected_health}), "
                            f"kstatus {result.status} (want {expected_kstatus}); status={obj['status']}")
        assert message, f"{name}: Argo CD shows the health message; it must not be empty"
        # The sanitized copy must mean the same as the live object.
        assert harness.health(sanitized(obj, namespace))[0] == health
        save_fixture(obj, namespace, file_name, scenario)
    assert not failures, "\n".join(failures)

    # The messages point at what to do.
    assert "OOMKilled (exit 137)" in harness.health(compile_failed)[1]
    assert "spec.tensorParallelSize" in harness.health(invalid)[1]
    # Nothing was created for the invalid spec.
    owned = [o for o in kubectl_json("get", "deployments,jobs", "-n", namespace)["items"]
             if any(r["name"] == "override" for r in o["metadata"].get("ownerReferences") or [])]
    assert owned == []
