"""A few hundred generated specs (tests/chaos/specs.py: within the API models and beyond them) applied to the real
API server in one `kubectl apply`. Each must be rejected there with a message naming a field, or be accepted and
then reach Stalled=True with a message, or a normal Compiling/Deploying/Ready state — with the operator up the
whole time, no traceback in its log, and no child for a Stalled service.

The manifest is a stream of JSON documents, not YAML and not a v1 List: YAML cannot carry every control
character, and kubectl validates a List on the client (its own messages) instead of letting the API server judge
each item. Client-side apply, not --server-side: the API server decodes a server-side apply patch as YAML, so a
string with U+007F..U+009F is refused as "yaml: control characters are not allowed" before any field is looked
at (a Kubernetes limit, not the operator's). Client-side apply copies the object into kubectl's
last-applied-configuration annotation, so a spec over 256 KiB is refused naming metadata.annotations.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import sys
import time

from tests.bench.harness import GROUP_VERSION, ROOT

from .conftest import SEED, record
from .invariants import stalled, summary, wait_for_invariants
from .scenario import list_services

COUNT = int(os.environ.get("CHAOS_SPECS", "300"))
NORMAL_PHASES = ("Compiling", "Deploying", "Ready")
# kubectl's per-object errors name the object as "(<namespace>/<name>; ..." or '... "<name>" is invalid'.
OBJECT_IN_ERROR = re.compile(r'\([^/;()\s]+/(fz-\d+);|"(fz-\d+)"')
# A message names a field: "spec.engine.maxModelLen: ...", ".spec.fooBar: field not declared", "spec: Required".
FIELD_IN_MESSAGE = re.compile(r'(?:^|[\s\[(,"])\.?(?:spec|metadata)(?:\.|:|\[| in body|")')
# A compiled service must get its serving workload soon after its Job succeeded, or say why (Stalled).
WORKLOAD_GRACE = 20.0


# Operator bugs with a failing reproduction of their own: a problem they explain is reported, not failed on here
# (the reproduction fails until the bug is fixed). (reproduction test, what, matches(spec, problem)). None today:
# the astral-plane apply bug (test_regressions.py) is fixed.
KNOWN_BUGS: list = []


def _manifest(namespace: str, names_specs: list[tuple[str, object]]) -> str:
    return "\n".join(json.dumps({"apiVersion": GROUP_VERSION, "kind": "NeuronInferenceService",
                                 "metadata": {"name": name, "namespace": namespace}, "spec": spec})
                     for name, spec in names_specs)


def _apply(namespace: str, names_specs: list[tuple[str, object]]) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "apply", "-n", namespace, "-f", "-"],
                          input=_manifest(namespace, names_specs), capture_output=True, text=True, timeout=600)


def _errors_by_object(stderr: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in re.split(r"\n(?=Error from server|error: )", stderr.strip()):
        match = OBJECT_IN_ERROR.search(line)
        if match:
            out.setdefault(match.group(1) or match.group(2), line.strip())
    return out


def _outcome(svc: dict) -> str | None:
    status = svc.get("status") or {}
    if status.get("observedGeneration") != svc["metadata"].get("generation"):
        return None
    if stalled(svc):
        cond = next(c for c in status["conditions"] if c["type"] == "Stalled")
        return f"Stalled/{cond.get('reason')}" if (cond.get("message") or "").strip() else None
    if status.get("phase") in NORMAL_PHASES:
        return status["phase"]
    return None


def _wait_for_workloads(api, namespace: str, names: set[str]) -> dict[str, str]:
    """Services whose compile Job succeeded more than WORKLOAD_GRACE s ago and still have no serving workload
    (and no Stalled message saying why). Waits, up to two minutes, while a Job succeeded more recently."""
    deadline = time.monotonic() + 120
    while True:
        jobs = {j["metadata"]["name"]: j for j in api.list("batch/v1", "jobs", namespace)[0]}
        workloads = {r["name"] for plural in ("deployments", "statefulsets")
                     for o in api.list("apps/v1", plural, namespace)[0]
                     for r in o["metadata"].get("ownerReferences") or [] if r.get("controller")}
        stuck, waiting = {}, 0
        now = time.time()
        for svc in list_services(api, namespace):
            name, status = svc["metadata"]["name"], svc.get("status") or {}
            job = jobs.get(status.get("compileJob") or "")
            done = (job or {}).get("status", {}).get("completionTime")
            if name not in names or stalled(svc) or name in workloads or not done:
                continue
            age = now - calendar.timegm(time.strptime(done, "%Y-%m-%dT%H:%M:%SZ"))
            if age <= WORKLOAD_GRACE:
                waiting += 1
                continue
            ready = [c.get("message") for c in status.get("conditions") or [] if c["type"] == "Ready"]
            stuck[name] = (f"compile Job {job['metadata']['name']} succeeded {age:.0f}s ago but no serving "
                           f"workload, and not Stalled (phase {status.get('phase')}: {ready})")
        if not waiting or time.monotonic() > deadline:
            return stuck
        time.sleep(3)


def test_generated_specs_are_rejected_or_reported(api, namespace, operator):
    specs = json.loads(subprocess.run([sys.executable, "-m", "tests.chaos.specs", "--count", str(COUNT), "--seed",
                                       str(SEED)], cwd=ROOT, capture_output=True, text=True, check=True,
                                      timeout=300).stdout)
    named = [(f"fz-{i:03d}", spec) for i, spec in enumerate(specs)]
    spec_of = dict(named)
    started = time.monotonic()
    proc = _apply(namespace, named)
    applied = set(re.findall(r"/(fz-\d+) (?:created|configured|unchanged)", proc.stdout))
    errors = _errors_by_object(proc.stderr)
    # A message that names no object (none seen so far) is attributed by applying that spec on its own.
    for name, _ in named:
        if name not in applied and name not in errors:
            single = _apply(namespace, [(name, spec_of[name])])
            if single.returncode == 0:
                applied.add(name)
            else:
                errors[name] = single.stderr.strip() or single.stdout.strip() or f"exit {single.returncode}"
    applied_in = time.monotonic() - started

    problems = [f"{n}: rejected without naming a field: {msg[:300]!r}; spec {json.dumps(spec_of[n])[:300]}"
                for n, msg in sorted(errors.items()) if not FIELD_IN_MESSAGE.search(msg)]

    outcomes: dict[str, str] = {}
    deadline = time.monotonic() + 180
    while len(outcomes) < len(applied) and time.monotonic() < deadline:
        for svc in list_services(api, namespace):
            name = svc["metadata"]["name"]
            if name in applied and name not in outcomes:
                result = _outcome(svc)
                if result:
                    outcomes[name] = result
        time.sleep(2)
    settled_in = time.monotonic() - started
    live = {s["metadata"]["name"]: s for s in list_services(api, namespace)}
    for name in sorted(applied - set(outcomes)):
        svc = live.get(name, {})
        problems.append(f"{name}: accepted but neither Stalled with a message nor Compiling/Deploying/Ready after "
                        f"180s: status {json.dumps(svc.get('status'))[:400]}; spec {json.dumps(spec_of[name])[:300]}")
    stuck = _wait_for_workloads(api, namespace, {n for n, o in outcomes.items() if not o.startswith("Stalled")})
    problems += [f"{n}: {what}; spec {json.dumps(spec_of[n])[:300]}" for n, what in sorted(stuck.items())]
    known: list[str] = []
    for test, what, matches in KNOWN_BUGS:
        hits = [p for p in problems if matches(spec_of.get(p.split(":", 1)[0]), p)]
        if hits:
            known.append(f"{len(hits)} x {what} (see {test})")
            problems = [p for p in problems if p not in hits]

    held = None
    try:
        held = wait_for_invariants(api, namespace, operator, timeout=60)
    except AssertionError as exc:
        problems.append(str(exc))

    by_outcome: dict[str, int] = {}
    for result in outcomes.values():
        by_outcome[result] = by_outcome.get(result, 0) + 1
    scenario = "generated specs"
    record(scenario, "tried / rejected at apply / accepted",
           f"{len(named)} / {len(errors)} / {len(applied)} (one kubectl apply: {applied_in:.1f} s)")
    record(scenario, "accepted, by outcome", f"{dict(sorted(by_outcome.items()))} (all settled {settled_in:.1f} s "
                                             "after the apply began)")
    record(scenario, "rejections naming a field", f"{len(errors) - sum('rejected without' in p for p in problems)}"
                                                  f" of {len(errors)}")
    metrics = operator.scrape()
    record(scenario, "operator", f"alive {operator.alive}, starts {operator.starts}, failed passes {metrics.errors}, "
                                 f"tracebacks {len(operator.tracebacks())}")
    if held:
        record(scenario, "invariants", summary(held))
    record(scenario, "known operator bugs hit", "; ".join(known) or "none")
    assert operator.alive and operator.healthy() and operator.starts == 1
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
